"""The images to audit: a folder (PNG, JPEG, TIFF; grey or colour; any size), a named set of the
shared data folder (set12, bsd68) or the bundled pictures; images larger than a tile are cut
into tiles (the border that does not fill one is left out) and scored as one image again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from ...data import BUNDLED, bundled_images, image_files, read_image, shared_data_dir, tiles

NAMED_SETS = ("set12", "bsd68")


@dataclass
class AuditImage:
    """One image as the batch the models see: its tiles (or itself), ``(n, C, h, w)``."""

    name: str
    batch: Tensor
    shape: tuple[int, int]  # (H, W) of the part evaluated

    @property
    def tiles(self) -> int:
        return self.batch.shape[0]


def resolve_images(spec: str | None, data_dir: Path | None = None) -> list[tuple[str, Tensor]]:
    """``(name, (1, C, H, W))`` pairs: None or ``bundled`` (the bundled pictures, 64 x 64),
    ``set12``/``bsd68`` (from ``data_dir`` or the shared data folder), or a folder."""
    if spec in (None, "bundled"):
        return [(n, x[None]) for n, x in zip(BUNDLED, bundled_images(size=64), strict=True)]
    if spec in NAMED_SETS:
        folder = (data_dir if data_dir is not None else shared_data_dir(must_exist=False)) / spec
        if not folder.is_dir():
            raise FileNotFoundError(
                f"--images {spec}: {folder} not found; set $TS_DEFENSE_DATA or --data to the "
                f"folder that holds {spec}/"
            )
    else:
        folder = Path(spec)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"--images {spec!r} is neither a folder nor one of bundled, {', '.join(NAMED_SETS)}"
            )
    return [(f.name, read_image(f)) for f in image_files(folder)]


def as_channels(image: Tensor, channels: int) -> Tensor:
    """A (1, C, H, W) image with ``channels`` channels: colour to grey (luminance), grey
    repeated to colour."""
    if image.shape[1] == channels:
        return image
    if channels == 1:
        weights = image.new_tensor([0.2125, 0.7154, 0.0721]).view(1, 3, 1, 1)  # as rgb2gray
        return (image * weights).sum(1, keepdim=True)
    return image.expand(-1, channels, -1, -1).contiguous()


def prepare(images: list[tuple[str, Tensor]], channels: int, tile: int) -> list[AuditImage]:
    """Each image in ``channels`` channels, cut into ``tile`` x ``tile`` tiles when a side is
    longer than ``tile`` (0: never)."""
    out = []
    for name, img in images:
        img = as_channels(img, channels)
        h, w = img.shape[-2:]
        if tile and max(h, w) > tile and min(h, w) >= tile:
            out.append(AuditImage(name, tiles(img, tile), (h - h % tile, w - w % tile)))
        else:
            out.append(AuditImage(name, img, (h, w)))
    return out


def per_image(values: list[float], images: list[AuditImage], kind: str = "mean") -> list[float]:
    """Per-tile values (in order) folded into one per image: ``psnr`` averages the tiles' MSE
    (exact: tiles have equal sizes), ``max`` takes the largest, ``mean`` averages."""
    out, start = [], 0
    for im in images:
        part = np.asarray(values[start : start + im.tiles], dtype=np.float64)
        start += im.tiles
        if kind == "psnr":
            out.append(float(-10 * np.log10(np.mean(10 ** (-part / 10)))))
        elif kind == "max":
            out.append(float(part.max()))
        else:
            out.append(float(part.mean()))
    if start != len(values):
        raise ValueError(f"{len(values)} values for {start} tiles")
    return out
