"""Images and weights: the bundled test images (scikit-image) and ``../shared/data``.

The shared data folder is found through one setting: ``$TS_DEFENSE_DATA``, else the
``shared/data`` folder beside the repository checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DATA_ENV = "TS_DEFENSE_DATA"
BUNDLED = ("camera", "moon", "coins", "page", "text", "astronaut", "coffee", "chelsea")


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


def _to_gray(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey float64 in [0, 1] from grey, grey + alpha, RGB or RGBA pixels, scaled by the bit
    depth of their type (8-bit by 255, 16-bit by 65535); floats are kept as they are."""
    if np.issubdtype(img.dtype, np.signedinteger) or not (
        np.issubdtype(img.dtype, np.number) or img.dtype == bool
    ):
        raise ValueError(f"{name}: unsupported pixel type {img.dtype}")
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        from skimage.color import rgb2gray

        return rgb2gray(img[..., :3])  # scales integer types by their range
    if img.ndim == 3 and img.shape[-1] in (1, 2):  # grey, grey + alpha
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(
            f"{name}: expected one grey or colour image, got pixels of shape {img.shape}"
        )
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    from skimage.util import img_as_float64

    return img_as_float64(img)


def bundled_images(names: tuple[str, ...] = BUNDLED, size: int | None = 128) -> Tensor:
    """Grey images that scikit-image ships (no download), (B, 1, size, size) in [0, 1].

    Each is centre-cropped to a square and resized to ``size`` (None keeps 256 x 256 crops).
    """
    import skimage.data
    from skimage.transform import resize

    out = []
    for name in names:
        if name not in BUNDLED:
            raise ValueError(f"unknown bundled image {name!r}; choose from {', '.join(BUNDLED)}")
        img = _to_gray(getattr(skimage.data, name)())
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


def load_image(path: str | Path) -> Tensor:
    """One image file as a grey (1, 1, H, W) float tensor in [0, 1]."""
    from skimage.io import imread

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        pixels = imread(path)
    except Exception as err:  # corrupt, foreign or decompression-bomb files: never a traceback
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"cannot read image file {path}: {type(err).__name__}: {reason}") from err
    return torch.from_numpy(_to_gray(pixels, f"image file {path}")).float()[None, None]


def image_folder(folder: str | Path, count: int | None = None) -> list[Tensor]:
    """The PNG images of ``folder`` in name order, each (1, 1, H, W) grey in [0, 1].

    count: how many there must be (a data set with files missing fails loudly).
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.png"))
    if not files or (count is not None and len(files) != count):
        want = count if count is not None else "some"
        raise FileNotFoundError(f"expected {want} PNG images in {folder}, found {len(files)}")
    return [load_image(f) for f in files]


def set12(root: str | Path | None = None) -> list[Tensor]:
    """The twelve Set12 images (sizes differ: 256 x 256 and 512 x 512), each (1, 1, H, W)."""
    return image_folder(Path(root) if root is not None else shared_data_dir() / "set12", 12)


def bsd400(root: str | Path | None = None) -> list[Tensor]:
    """The 400 BSD training images of the DnCNN recipe (180 x 180), each (1, 1, H, W)."""
    return image_folder(Path(root) if root is not None else shared_data_dir() / "bsd400", 400)


def bsd68(root: str | Path | None = None) -> list[Tensor]:
    """The 68 BSD test images of the field's benchmark (481 x 321 or 321 x 481)."""
    return image_folder(Path(root) if root is not None else shared_data_dir() / "bsd68", 68)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_pixels(path: str | Path) -> np.ndarray:
    """One image file's pixels as decoded, ``(H, W)`` grey or ``(H, W, 3)`` colour (alpha
    dropped), in the file's own type: a large image costs its file's pixels, not the four or
    eight times more of floats, until :func:`pixels_to_image` converts the part needed."""
    from skimage.io import imread

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        pixels = np.asarray(imread(path))
    except Exception as err:  # corrupt or foreign files: one line, never a traceback
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"cannot read image file {path}: {type(err).__name__}: {reason}") from err
    if pixels.ndim == 3 and pixels.shape[-1] in (2, 4):  # grey or colour with alpha
        pixels = pixels[..., :-1]
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] != 3):
        raise ValueError(
            f"image file {path}: expected one grey or colour image, got {pixels.shape}"
        )
    return pixels


def pixels_to_image(pixels: np.ndarray) -> Tensor:
    """``(H, W)`` or ``(H, W, 3)`` pixels as (1, C, H, W) float in [0, 1]; integer pixels are
    scaled by the range of their type (8 or 16 bits)."""
    from skimage.util import img_as_float64

    img = torch.from_numpy(img_as_float64(pixels)).float().clamp(0, 1)
    return img[None, None] if img.dim() == 2 else img.permute(2, 0, 1)[None]


def read_image(path: str | Path) -> Tensor:
    """One image file as (1, C, H, W) float in [0, 1]: C = 1 for grey, 3 for colour (alpha
    dropped); integer pixels are scaled by the range of their type (8 or 16 bits)."""
    return pixels_to_image(read_pixels(path))


def image_files(folder: str | Path) -> list[Path]:
    """The PNG, JPEG and TIFF files of ``folder`` in name order (at least one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no PNG, JPEG or TIFF images in {folder}")
    return files
