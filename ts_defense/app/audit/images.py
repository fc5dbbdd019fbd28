"""The images of the commands: ``--images`` resolved once (:func:`resolve_images`: the bundled
pictures, a named set, bundled picture names, folders and image files), then cut up for the
audit (:func:`plan`) or stacked for ``attack``/``transfer`` (:func:`image_batches`).

The audit's protocol for large images: at most ``tiles`` (default 4) ``tile`` x ``tile`` tiles
per image, drawn at random (seeded by the seed and the image's name) from the image's grid of
tiles (the border that does not fill a tile is left out); ``tiles="all"`` scores every tile.
An image that holds no more tiles than that is scored on all of them, one that fits in a tile is
scored whole (a side shorter than ``tile`` makes tiles of that side's length). Tiles of one
image are scored as one image again (:func:`per_image`), on the part of the image they cover.
Pixels stay in their file's type until a batch of tiles is converted, so that the memory of an
audit does not grow with the size of its images.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..._checks import check_images, check_positive
from ...data import (
    BUNDLED,
    LUMA,
    bundled_images,
    centre_crop,
    image_files,
    pixels_to_image,
    read_pixels,
    shared_data_dir,
)
from ...seeding import stream_seed

NAMED_SETS = {"set12": 12, "bsd68": 68}  # name -> how many images it holds
TILES = 4  # tiles per image by default (random when an image holds more)


@dataclass(frozen=True)
class Picture:
    """One image by name: ``pixels`` ``(H, W)`` grey or ``(H, W, 3)`` colour, in the file's type
    (integers are scaled by their range) or floats in [0, 1]."""

    name: str
    pixels: np.ndarray

    @classmethod
    def from_tensor(cls, name: str, image: Tensor) -> Picture:
        """A ``(1, C, H, W)`` float image in [0, 1] (C = 1 or 3)."""
        check_images(image, f"image {name!r}")
        if image.shape[0] != 1 or image.shape[1] not in (1, 3):
            raise ValueError(f"image {name!r} must be (1, 1 or 3, H, W), got {tuple(image.shape)}")
        pixels = image[0].detach().cpu().float().permute(1, 2, 0).numpy()
        return cls(name, pixels[..., 0] if pixels.shape[-1] == 1 else pixels)

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else 3

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.pixels.shape[0], self.pixels.shape[1]

    def crop(self, top: int, left: int, height: int, width: int) -> Tensor:
        """The window at ``(top, left)`` as a (1, C, height, width) float image in [0, 1]."""
        return pixels_to_image(self.pixels[top : top + height, left : left + width])

    def image(self, grey: bool = False) -> Tensor:
        """The whole image, (1, C, H, W) float in [0, 1]; ``grey`` makes colour grey."""
        return pixels_to_image(self.pixels, grey)


def _named_set(name: str, data_dir: Path | None) -> list[Path]:
    folder = (data_dir if data_dir is not None else shared_data_dir(must_exist=False)) / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--images {name}: {folder} not found; set $TS_DEFENSE_DATA or --data to the folder "
            f"that holds {name}/"
        )
    return image_files(folder, NAMED_SETS[name])  # a set with files missing fails loudly


def resolve_images(
    spec: str | Sequence[str] | None = None, data_dir: Path | None = None, size: int | None = 64
) -> list[Picture]:
    """The images ``spec`` names, in order: None or ``bundled`` (the bundled pictures, resized
    to ``size``; None: 256), a bundled picture's name (``camera``...), ``set12``/``bsd68``
    (from ``data_dir`` or the shared data folder), a folder (its PNG, JPEG and TIFF files) or
    an image file; a sequence combines them."""
    if size is not None:
        check_positive("size", size, integer=True)
    items = [spec] if spec is None or isinstance(spec, str) else list(spec)
    out: list[Picture] = []
    for item in items or [None]:
        if item in (None, "bundled") or item in BUNDLED:
            names = BUNDLED if item in (None, "bundled") else (item,)
            batch = bundled_images(names, size=size)
            out += [Picture.from_tensor(n, x[None]) for n, x in zip(names, batch, strict=True)]
            continue
        path = Path(item)
        if item in NAMED_SETS:
            files = _named_set(item, data_dir)
        elif path.is_dir():
            files = image_files(path)
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(
                f"--images {item!r} is neither a folder, an image file nor one of bundled, "
                f"{', '.join(NAMED_SETS)} or a bundled picture ({', '.join(BUNDLED)})"
            )
        out += [Picture(f.name, read_pixels(f)) for f in files]
    return out


def as_channels(image: Tensor, channels: int) -> Tensor:
    """A (B, C, H, W) image with ``channels`` channels: colour to grey (luminance), grey
    repeated to colour."""
    if image.shape[1] == channels:
        return image
    if channels == 1:
        weights = image.new_tensor(LUMA).view(1, 3, 1, 1)
        return (image * weights).sum(1, keepdim=True)
    return image.expand(-1, channels, -1, -1).contiguous()


def image_batches(
    spec: str | Sequence[str] | None, size: int | None, data_dir: Path | None = None
) -> list[Tensor]:
    """The grey images of ``attack``/``transfer``: :func:`resolve_images` (the bundled pictures
    resized to ``size``), centre-cropped to ``size`` (None: kept whole); consecutive images of
    one size make one batch."""
    batches: list[Tensor] = []
    for pic in resolve_images(spec, data_dir, size):
        x = pic.image(grey=True)
        x = centre_crop(x, size) if size else x
        if batches and batches[-1].shape[1:] == x.shape[1:]:
            batches[-1] = torch.cat([batches[-1], x])
        else:
            batches.append(x)
    return batches


def item_seed(seed: int, purpose: str, *keys: object) -> int:
    """The seed of one item (an image by name, a tile by index) in ``purpose``'s stream: what
    an item draws depends neither on the other items nor on how they are batched."""
    words = [stream_seed(seed, purpose), *(zlib.crc32(str(k).encode()) for k in keys)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class Tiles:
    """The parts of one picture the audit scores: ``corners`` (top, left) of ``size`` windows."""

    picture: Picture
    corners: tuple[tuple[int, int], ...]
    size: tuple[int, int]

    @property
    def name(self) -> str:
        return self.picture.name

    @property
    def count(self) -> int:
        return len(self.corners)

    @property
    def pixels(self) -> int:
        """Pixels scored (per channel)."""
        return self.count * self.size[0] * self.size[1]

    def batches(self, batch: int, channels: int) -> Iterator[tuple[int, Tensor]]:
        """``(index of the first tile, (n, channels, h, w))`` for at most ``batch`` tiles each."""
        for start in range(0, self.count, batch):
            part = self.corners[start : start + batch]
            yield (
                start,
                torch.cat([as_channels(self.picture.crop(*c, *self.size), channels) for c in part]),
            )


def choose_tiles(picture: Picture, tile: int, tiles: int | str, seed: int) -> Tiles:
    """The tiles of ``picture`` the audit scores (see the module's docstring); the random
    choice is seeded by ``seed`` and the picture's name, so it is the same in every run and
    for every model."""
    h, w = picture.size
    th, tw = min(h, tile or h), min(w, tile or w)
    if (th, tw) == (h, w):
        return Tiles(picture, ((0, 0),), (h, w))
    grid = [(i * th, j * tw) for i in range(h // th) for j in range(w // tw)]
    if tiles != "all" and len(grid) > tiles:
        rng = np.random.default_rng(item_seed(seed, "patches", picture.name))
        grid = [grid[k] for k in sorted(rng.choice(len(grid), size=tiles, replace=False))]
    return Tiles(picture, tuple(grid), (th, tw))


def plan(pictures: Sequence[Picture], tile: int, tiles: int | str, seed: int) -> list[Tiles]:
    """:func:`choose_tiles` of every picture."""
    return [choose_tiles(p, tile, tiles, seed) for p in pictures]


def per_image(values: list[float], images: Sequence[Tiles], kind: str = "mean") -> list[float]:
    """Per-tile values (in order) folded into one per image: ``psnr`` averages the tiles' MSE
    (exact: tiles have equal sizes), ``max`` takes the largest, ``mean`` averages."""
    out, start = [], 0
    for im in images:
        part = np.asarray(values[start : start + im.count], dtype=np.float64)
        start += im.count
        if kind == "psnr":
            out.append(float(-10 * np.log10(np.mean(10 ** (-part / 10)))))
        elif kind == "max":
            out.append(float(part.max()))
        else:
            out.append(float(part.mean()))
    if start != len(values):
        raise ValueError(f"{len(values)} values for {start} tiles")
    return out
