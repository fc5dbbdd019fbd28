"""Typical-set statistics of Gaussian noise: pure tensor math, no models.

For noise ``n`` in R^N and ``p = N(0, sigma^2 I)``:

- entropy rate ``h = 1/2 log(2 pi e sigma^2)`` nats per dimension;
- deviation ``d(n) = l(n) - h = (|n|^2 / (N sigma^2) - 1) / 2`` where ``l`` is the normalised
  negative log-likelihood;
- the eps-typical set ``{n : |d(n)| <= eps}``, a shell of radii ``sigma sqrt(N (1 -+ 2 eps))``.

``sigma`` may be a number, a per-sample vector ``(B,)`` or a map broadcastable to the noise
``(B|1, C|1, H, W)`` (a per-pixel noise level); with a map, ``d`` is the mean of
``(n_i / sigma_i)^2`` minus one, halved.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_dense, check_images, check_positive

SigmaLike = float | Tensor


def _real(name: str, x: Tensor) -> Tensor:
    """Require a dense real tensor (a complex sigma would lose its imaginary part)."""
    if check_dense(name, x).is_complex():
        raise TypeError(f"{name} must be real, got {x.dtype}")
    return x


def sigma_tensor(sigma: SigmaLike, noise: Tensor, check_values: bool = True) -> Tensor:
    """``sigma`` as a float32 tensor broadcastable to ``noise`` (B, C, H, W); validated > 0
    (for a tensor only with ``check_values``: reading its values waits for the device)."""
    if isinstance(sigma, Tensor):
        s = _real("sigma", sigma).to(device=noise.device, dtype=torch.float32)
        if s.dim() == 0:
            s = s.reshape(1, 1, 1, 1)
        elif s.dim() == 1:
            if s.shape[0] not in (1, noise.shape[0]):
                raise ValueError(
                    f"sigma of shape {tuple(s.shape)} must have one entry per sample "
                    f"(batch {noise.shape[0]})"
                )
            s = s.view(-1, 1, 1, 1)
        elif s.dim() == 4:
            try:
                torch.broadcast_shapes(s.shape, noise.shape)
            except RuntimeError:
                raise ValueError(
                    f"sigma map of shape {tuple(s.shape)} does not broadcast to noise "
                    f"{tuple(noise.shape)}"
                ) from None
        else:
            raise ValueError(
                f"sigma must be a number, a (B,) vector or a (B, C, H, W) map, got shape "
                f"{tuple(s.shape)}"
            )
        if check_values and not bool((torch.isfinite(s) & (s > 0)).all()):
            raise ValueError("sigma must be finite and > 0 everywhere")
        return s
    check_positive("sigma", sigma)
    return torch.tensor(float(sigma), device=noise.device).reshape(1, 1, 1, 1)


def entropy_rate(sigma: SigmaLike) -> Tensor:
    """Differential entropy per dimension of ``N(0, sigma^2)``: ``1/2 log(2 pi e sigma^2)``."""
    if isinstance(sigma, Tensor):
        _real("sigma", sigma)
    else:
        check_positive("sigma", sigma)
    s = torch.as_tensor(sigma, dtype=torch.float64)
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    return (0.5 * math.log(2 * math.pi * math.e) + torch.log(s)).float()


def nll_rate(noise: Tensor, sigma: SigmaLike) -> Tensor:
    """Normalised negative log-likelihood ``-(1/N) log p(n)`` per sample, shape (B,)."""
    n = check_images(noise, "noise").float()
    s = sigma_tensor(sigma, n).expand_as(n)
    log_term = 0.5 * torch.log(2 * math.pi * s.square())
    return _finite((log_term + (n / s).square() / 2).flatten(1).mean(1))


def deviation(noise: Tensor, sigma: SigmaLike) -> Tensor:
    """Deviation from the entropy rate, ``(|n|^2 / (N sigma^2) - 1) / 2``, per sample (B,)."""
    n = check_images(noise, "noise").float()
    s = sigma_tensor(sigma, n)
    if s.shape[1:] == (1, 1, 1):  # scalar or per-sample sigma: one division per sample
        power = n.square().flatten(1).mean(1) / s.view(-1).square()
    else:
        power = (n / s).square().flatten(1).mean(1)
    return _finite((power - 1) / 2)


def sample_deviation(noise: Tensor, sigma: Tensor) -> Tensor:
    """:func:`deviation` of trusted inputs with a per-sample sigma (B,), unchecked: it never
    waits for the device (the training step's hot path)."""
    power = noise.float().square().flatten(1).mean(1)
    return (power / sigma.float().square() - 1) / 2


def _finite(d: Tensor) -> Tensor:
    if not bool(torch.isfinite(d).all()):
        raise ValueError("noise is too large for sigma: its power overflows float32")
    return d


def window_deviation(
    noise: Tensor, sigma: SigmaLike, window: int = 8, stride: int | None = None
) -> Tensor:
    """Deviation over each ``window x window`` patch (all channels), shape (B, H', W').

    Windows that would run past the border are dropped (as in ``avg_pool2d``).
    """
    n = check_images(noise, "noise").float()
    check_positive("window", window, integer=True)
    stride = window if stride is None else stride
    check_positive("stride", stride, integer=True)
    if window > min(n.shape[-2:]):
        raise ValueError(f"window={window} is larger than the image {tuple(n.shape[-2:])}")
    z = (n / sigma_tensor(sigma, n)).square().mean(1, keepdim=True)
    return _finite(((F.avg_pool2d(z, window, stride) - 1) / 2).squeeze(1))


def is_typical(noise: Tensor, sigma: SigmaLike, eps: float) -> Tensor:
    """Membership of each sample in the eps-typical set, ``|d| <= eps``, shape (B,) bool."""
    check_positive("eps", eps)
    return deviation(noise, sigma).abs() <= eps


def shell_radii(n_dims: int, sigma: float, eps: float) -> tuple[float, float]:
    """Radii ``sigma sqrt(N (1 - 2 eps))`` .. ``sigma sqrt(N (1 + 2 eps))`` of the typical shell."""
    check_positive("n_dims", n_dims, integer=True)
    check_positive("sigma", sigma)
    check_positive("eps", eps)
    outer = sigma * math.sqrt(n_dims * (1 + 2 * eps))
    if not math.isfinite(outer):
        raise ValueError(
            f"sigma={sigma:g}, eps={eps:g} and n_dims={n_dims} give a shell radius beyond "
            f"float range"
        )
    return sigma * math.sqrt(n_dims * max(0.0, 1 - 2 * eps)), outer


def deviation_std(n_dims: int) -> float:
    """Standard deviation of ``d`` for Gaussian noise: ``1 / sqrt(2 N)`` (chi-square with N dof)."""
    check_positive("n_dims", n_dims, integer=True)
    return 1.0 / math.sqrt(2 * n_dims)


def chebyshev_bound(n_dims: int, eps: float) -> float:
    """Chebyshev bound on ``P(|d| > eps)`` for Gaussian noise: ``1 / (2 N eps^2)`` (capped at 1)."""
    check_positive("n_dims", n_dims, integer=True)
    check_positive("eps", eps)
    denom = 2 * n_dims * eps * eps
    return 1.0 if denom <= 1 else 1.0 / denom


def laurent_massart_bound(n_dims: int, eps: float) -> float:
    """Laurent–Massart (2000) exponential bound on ``P(|d| > eps)`` for Gaussian noise.

    With ``X = |n|^2 / sigma^2 ~ chi^2_N``: ``P(X - N >= 2 sqrt(N x) + 2x) <= exp(-x)`` and
    ``P(N - X >= 2 sqrt(N x)) <= exp(-x)``; ``|d| > eps`` means ``|X - N| > 2 N eps``.
    """
    check_positive("n_dims", n_dims, integer=True)
    check_positive("eps", eps)
    root = math.sqrt(1 + 4 * eps) - 1
    upper = math.exp(-n_dims * root * root / 4)
    lower = math.exp(-n_dims * (eps * eps)) if eps < 0.5 else 0.0  # X >= 0 so d >= -1/2
    return min(1.0, upper + lower)
