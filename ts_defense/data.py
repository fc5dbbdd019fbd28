"""Images and weights: the bundled test images (scikit-image), image files and folders, and
``../shared/data``.

Image files are read by Pillow through the mode the file declares (CMYK, palette, grey + alpha,
16-bit...), as ``Image.convert`` reads them; an animation gives its first frame (with a
warning), and float pixels outside [0, 1] are refused naming the file.

The shared data folder is found through one setting: ``$TS_DEFENSE_DATA``, else the
``shared/data`` folder beside the repository checkout.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from PIL.Image import Image

DATA_ENV = "TS_DEFENSE_DATA"
BUNDLED = ("camera", "moon", "coins", "page", "text", "astronaut", "coffee", "chelsea")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
LUMA = (0.2125, 0.7154, 0.0721)  # ITU-R 709 luminance weights, as skimage's rgb2gray

# Pillow modes -> what they are read as: grey ("L"), colour ("RGB"), or the raw integer
# or float pixels of one channel ("int", "float"); alpha and padding channels are dropped.
_GREY = ("1", "L", "LA", "La")
_COLOUR = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA")
_SIXTEEN = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def shared_data_dir(must_exist: bool = True) -> Path:
    """The shared data folder (Set12, pretrained DnCNNs); raises if missing and ``must_exist``."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(os.environ.get(DATA_ENV, default))
    if must_exist and not (path / "set12").is_dir():
        raise FileNotFoundError(
            f"shared data not found at {path} (needs set12/ and weights/): set ${DATA_ENV} "
            f"to the folder that holds them"
        )
    return path


def _pixels(image: Image, name: str) -> np.ndarray:
    """The pixels of one Pillow image in their own type, (H, W) grey or (H, W, 3) colour: 8-bit
    for the grey and colour modes, the integers or floats of the one-channel modes (checked)."""
    mode = image.mode
    if mode in _GREY:
        return np.asarray(image if mode == "L" else image.convert("L"))
    if mode in _COLOUR:
        return np.asarray(image if mode == "RGB" else image.convert("RGB"))
    if mode in _SIXTEEN:
        pixels = np.asarray(image)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ValueError(
                f"{name}: 32-bit integer pixels outside 0..65535 (found {pixels.min():.0f}.."
                f"{pixels.max():.0f}); save it as 8- or 16-bit"
            )
        return pixels
    if mode == "F":
        pixels = np.asarray(image)
        if not np.isfinite(pixels).all():
            raise ValueError(f"{name}: float pixels hold NaN or Inf")
        if pixels.size and (pixels.min() < 0 or pixels.max() > 1):
            raise ValueError(
                f"{name}: float pixels must lie in [0, 1], found {pixels.min():.4g}.."
                f"{pixels.max():.4g} (scale it to [0, 1], or save it as 8- or 16-bit)"
            )
        return pixels
    raise ValueError(f"{name}: unsupported image mode {mode!r} (grey, colour or 16-bit read)")


def _unit(pixels: np.ndarray) -> np.ndarray:
    """Float64 in [0, 1] from :func:`_pixels`'s pixels: 8-bit over 255, other integers (16-bit
    files) over 65535, floats as they are."""
    if pixels.dtype == np.uint8:
        return pixels / 255.0
    if np.issubdtype(pixels.dtype, np.integer):
        return pixels.astype(np.float64) / 65535.0
    return pixels.astype(np.float64)


def _grey(pixels: np.ndarray) -> np.ndarray:
    """(H, W) luminance of (H, W, 3) colour pixels; grey pixels as they are."""
    return pixels @ np.asarray(LUMA) if pixels.ndim == 3 else pixels


def _as_tensor(pixels: np.ndarray) -> Tensor:
    """(1, C, H, W) float32 from (H, W) or (H, W, 3) pixels."""
    img = torch.from_numpy(np.ascontiguousarray(pixels)).float()
    return img[None, None] if img.dim() == 2 else img.permute(2, 0, 1)[None]


def read_pixels(path: str | Path) -> np.ndarray:
    """One image file's pixels in their own type, (H, W) grey or (H, W, 3) colour (alpha
    dropped; every other mode converted as Pillow converts it), checked: a large image costs
    its file's bytes, not the eight times more of float64, until :func:`pixels_to_image`
    converts the part needed. An animation gives its first frame and a warning. Unreadable
    files are one-line ValueErrors."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    name = f"image file {path}"
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                warnings.warn(
                    f"{path} is an animation of {frames} frames: reading its first frame only",
                    stacklevel=2,
                )
                image.seek(0)
            image.load()
            return _pixels(image, name)
    except ValueError as err:
        if str(err).startswith(name):
            raise
        raise ValueError(f"cannot read {name}: {type(err).__name__}: {_first_line(err)}") from err
    except UnidentifiedImageError as err:
        raise ValueError(f"cannot read {name}: not an image Pillow recognises") from err
    except Exception as err:  # torn, foreign or decompression-bomb files: never a traceback
        raise ValueError(f"cannot read {name}: {type(err).__name__}: {_first_line(err)}") from err


def pixels_to_image(pixels: np.ndarray, grey: bool = False) -> Tensor:
    """(1, C, H, W) float in [0, 1] from :func:`read_pixels`' pixels (or a window of them):
    16-bit pixels are scaled by 65535, floats kept; ``grey`` makes colour grey."""
    unit = _unit(pixels)
    return _as_tensor(_grey(unit) if grey else unit)


def read_image(path: str | Path, grey: bool = False) -> Tensor:
    """One image file as (1, C, H, W) float in [0, 1]: C = 1 for grey, 3 for colour (see
    :func:`read_pixels`); ``grey`` makes colour grey."""
    return pixels_to_image(read_pixels(path), grey)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def image_files(folder: str | Path, count: int | None = None) -> list[Path]:
    """The PNG, JPEG and TIFF files of ``folder`` in name order: at least one, or exactly
    ``count`` when given (a data set with files missing fails loudly)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files or (count is not None and len(files) != count):
        want = count if count is not None else "some"
        raise FileNotFoundError(
            f"expected {want} PNG, JPEG or TIFF images in {folder}, found {len(files)}"
        )
    return files


def bundled_images(names: tuple[str, ...] = BUNDLED, size: int | None = 128) -> Tensor:
    """Grey images that scikit-image ships (no download), (B, 1, size, size) in [0, 1].

    Each is centre-cropped to a square and resized to ``size`` (None keeps 256 x 256 crops).
    """
    import skimage.data
    from PIL import Image
    from skimage.transform import resize

    out = []
    for name in names:
        if name not in BUNDLED:
            raise ValueError(f"unknown bundled image {name!r}; choose from {', '.join(BUNDLED)}")
        img = _grey(
            _unit(_pixels(Image.fromarray(getattr(skimage.data, name)()), f"bundled {name}"))
        )
        h, w = img.shape
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        side = size or 256
        img = resize(img, (side, side), anti_aliasing=True)
        out.append(torch.from_numpy(img).float().clamp(0, 1))
    return torch.stack(out)[:, None]


def tiles(images: Tensor, size: int) -> Tensor:
    """Non-overlapping ``size x size`` tiles of a (B, C, H, W) batch, (B * tiles, C, size, size);
    the far border that does not fill a tile is dropped."""
    from einops import rearrange

    h, w = images.shape[-2:]
    images = images[..., : h - h % size, : w - w % size]
    return rearrange(images, "b c (i p) (j q) -> (b i j) c p q", p=size, q=size)


def centre_crop(x: Tensor, size: int) -> Tensor:
    """The central ``size x size`` window (images smaller than that are kept whole)."""
    h, w = x.shape[-2:]
    s_h, s_w = min(size, h), min(size, w)
    return x[..., (h - s_h) // 2 : (h - s_h) // 2 + s_h, (w - s_w) // 2 : (w - s_w) // 2 + s_w]


def set12(root: str | Path | None = None) -> list[Tensor]:
    """The twelve Set12 images (sizes differ: 256 x 256 and 512 x 512), each (1, 1, H, W)."""
    return _grey_set("set12", 12, root)


def bsd400(root: str | Path | None = None) -> list[Tensor]:
    """The 400 BSD training images of the DnCNN recipe (180 x 180), each (1, 1, H, W)."""
    return _grey_set("bsd400", 400, root)


def bsd68(root: str | Path | None = None) -> list[Tensor]:
    """The 68 BSD test images of the field's benchmark (481 x 321 or 321 x 481)."""
    return _grey_set("bsd68", 68, root)


def _grey_set(name: str, count: int, root: str | Path | None) -> list[Tensor]:
    """The ``count`` images of a named set, grey, from ``root`` or the shared data folder."""
    folder = Path(root) if root is not None else shared_data_dir() / name
    return [read_image(f, grey=True) for f in image_files(folder, count)]
