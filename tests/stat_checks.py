"""Statistical checks the sampler is held to. Each raises AssertionError when a draw fails it;
tests feed both the real sampler and deliberately wrong ones, so every check is shown to bite."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ts_defense import TSSampler
from ts_defense.noise import typical

Z = 5.0  # two-sided z of about 6e-7: false alarms are negligible over a whole test run


def aep(noise: Tensor, sigma: Tensor | float) -> None:
    """Gaussian draws: mean deviation 0 and spread 1/sqrt(2N) (chi-square), and the share
    outside the eps-typical set within the Laurent–Massart bound."""
    d = typical.deviation(noise, sigma).double()
    b, n_dims = d.numel(), noise[0].numel()
    std = typical.deviation_std(n_dims)
    assert abs(d.mean().item()) <= Z * std / math.sqrt(b), f"mean deviation {d.mean():.4g}"
    eps = 3 * std
    outside = (d.abs() > eps).double().mean().item()
    bound = typical.laurent_massart_bound(n_dims, eps)
    assert outside <= bound + Z * math.sqrt(bound * (1 - bound) / b) + 1 / b, (
        f"{outside:.3f} of draws outside the {eps:.3g}-typical set, bound {bound:.3f}"
    )
    if b >= 64:  # variance of d within a generous factor of 1/(2N)
        ratio = d.var().item() / std**2
        assert 0.5 < ratio < 1.6, f"var(d) is {ratio:.2f} x 1/(2N)"


def in_band(noise: Tensor, sigma: Tensor | float, band: tuple[float, float], sides: str) -> None:
    """Every deviation lies in the band (float tolerance), hence outside the eps_in-typical set."""
    d = typical.deviation(noise, sigma)
    lo, hi = band
    tol = 1e-4
    mag = d.abs()
    assert bool(((mag >= lo - tol) & (mag <= hi + tol)).all()), f"deviations {d} not in {band}"
    if sides == "above":
        assert bool((d > 0).all()), "sides='above' drew d < 0"
    if sides == "below":
        assert bool((d < 0).all()), "sides='below' drew d > 0"


def local_windows(
    noise: Tensor, sigma: Tensor | float, window: int, fraction: float, band: tuple[float, float]
) -> None:
    """Each sample has exactly round(fraction K) windows in the band and the rest typical (d=0),
    for images tiled exactly by the windows."""
    dk = typical.window_deviation(noise, sigma, window).flatten(1)
    k_win = dk.shape[1]
    want = max(1, round(fraction * k_win))
    tol = 1e-4
    atypical = (dk.abs() >= band[0] - tol) & (dk.abs() <= band[1] + tol)
    typical_ = dk.abs() <= tol
    assert bool((atypical | typical_).all()), "a window is neither typical nor in the band"
    assert atypical.sum(1).tolist() == [want] * dk.shape[0], (
        f"atypical windows per sample {atypical.sum(1).tolist()}, want {want}"
    )


def nominal_power(noise: Tensor, sigma: Tensor | float) -> None:
    """Power equals the nominal sigma^2 (deviation 0 to float tolerance)."""
    d = typical.deviation(noise, sigma)
    assert bool((d.abs() <= 1e-4).all()), f"deviation {d} off nominal power"


def correlated(noise: Tensor, min_rho: float = 0.1) -> None:
    """Horizontal neighbours are positively correlated (white noise has rho ~ 0)."""
    a, b = noise[..., :, :-1], noise[..., :, 1:]
    rho = ((a * b).mean() / (a.square().mean() * b.square().mean()).sqrt()).item()
    assert rho >= min_rho, f"neighbour correlation {rho:.3f} < {min_rho}"


def isotropic(noise: Tensor) -> None:
    """Directions u = n/|n| of independent draws: |sum u|^2 ~ B (no preferred direction) and the
    energy splits evenly between the two halves of the image (no preferred region)."""
    u = noise.flatten(1).double()
    u = u / u.norm(dim=1, keepdim=True)
    b, n_dims = u.shape
    s2 = u.sum(0).square().sum().item()
    # E|sum u|^2 = B; its sd is about B sqrt(2/N): allow Z sds plus a little.
    assert abs(s2 / b - 1) <= Z * math.sqrt(2 / n_dims) + 0.25, f"|sum u|^2 / B = {s2 / b:.3f}"
    half = u[:, : n_dims // 2].square().sum(1)  # Beta(N/4, N/4)-like, mean ~ 1/2
    sd = math.sqrt(1 / (2 * n_dims)) / math.sqrt(b)
    assert abs(half.mean().item() - (n_dims // 2) / n_dims) <= Z * sd + 1e-3, (
        f"first half carries {half.mean():.4f} of the energy"
    )


def binomial_share(hits: Tensor, p: float) -> None:
    """The count of True in ``hits`` is consistent with Binomial(n, p): neither tail of the
    exact binomial distribution at the count is below the two-sided z = Z level (an interval
    such as Wilson's is too narrow when the count is tiny, e.g. 1 hit at p = 1e-5)."""
    from scipy.stats import binom, norm

    n = hits.numel()
    k = int(hits.sum())
    alpha = 2 * norm.sf(Z)
    tail = min(binom.cdf(k, n, p), binom.sf(k - 1, n, p))
    assert tail > alpha / 2, f"{k}/{n} hits, p={p}: tail probability {tail:.2g}"


def resumes_exactly(cfg, clean: Tensor, seed: int, steps: int = 1, **options) -> None:
    """A sampler restored from ``state_dict`` after ``steps`` draws continues the same stream
    (``options``: the samplers' other arguments, e.g. ``compile=True``)."""
    first = TSSampler(cfg, seed=seed, **options)
    for _ in range(steps):
        first.draw(clean)
    state = first.state_dict()
    expected = [first.draw(clean) for _ in range(3)]
    resumed = TSSampler(cfg, seed=seed + 1, **options)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.draw(clean)
        assert torch.equal(got.noise, want.noise) and torch.equal(got.sigma, want.sigma)
