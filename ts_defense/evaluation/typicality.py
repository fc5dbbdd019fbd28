"""Typicality of adversarial samples: how far ``y - x`` leaves the sigma typical
set, globally and per window, for Gaussian-noisy and for attacked inputs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import Tensor

from .._checks import check_images, check_positive
from ..noise import typical


def typicality(
    clean: Tensor, inputs: Tensor, sigma: float, window: int = 8, eps: float = 0.05
) -> dict:
    """Deviation statistics of the noise ``inputs - clean`` of each image.

    Returns per-image lists: ``d`` (global deviation), ``outside`` (|d| > eps), ``window_max``
    (largest |d_k| over the windows) and ``atypical_windows``: the share of windows with
    |d_k| beyond three Gaussian standard deviations of a window's deviation (a window holds few
    dimensions, so a fixed eps would call most natural windows atypical).
    """
    check_positive("eps", eps)
    check_positive("window", window, integer=True)
    check_images(clean, "clean")
    check_images(inputs, "inputs")
    window_eps = 3 * typical.deviation_std(clean.shape[1] * window * window)
    if clean.shape != inputs.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and inputs {tuple(inputs.shape)} differ")
    noise = inputs - clean
    d = typical.deviation(noise, sigma)
    dk = typical.window_deviation(noise, sigma, window).flatten(1)
    return {
        "d": d.tolist(),
        "outside": (d.abs() > eps).tolist(),
        "window_max": dk.abs().max(1).values.tolist(),
        "atypical_windows": (dk.abs() > window_eps).float().mean(1).tolist(),
    }


def typicality_table(
    stats: Mapping[str, dict], sigma: float, window: int, eps: float, shape: tuple[int, ...]
) -> str:
    """Markdown table of the mean statistics per input kind (e.g. ``noisy``, ``pgd``)."""
    c, h, w = shape[-3:]
    rows = [
        f"Typicality of y - x (sigma = {sigma * 255:.1f}/255, window {window}, eps = {eps}; "
        f"Gaussian std of d: {typical.deviation_std(c * h * w):.4f}, per window "
        f"{typical.deviation_std(c * window * window):.4f}; a window is atypical beyond three of "
        f"those):\n",
        "| input | mean d | share abs(d) > eps | mean max window abs(d_k) | atypical windows |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in stats.items():
        rows.append(
            f"| {name} | {np.mean(s['d']):+.4f} | {np.mean(s['outside']):.2f} | "
            f"{np.mean(s['window_max']):.3f} | {np.mean(s['atypical_windows']):.3f} |"
        )
    return "\n".join(rows)
