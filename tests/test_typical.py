import math

import pytest
import torch
from fuzz_support import EXOTIC, exotic_tensor
from hypothesis import given
from hypothesis import strategies as st

from ts_defense.noise import typical


def test_entropy_rate_matches_formula():
    for s in (0.01, 0.1, 1.0, 3.0):
        assert typical.entropy_rate(s).item() == pytest.approx(
            0.5 * math.log(2 * math.pi * math.e * s * s), rel=1e-6
        )


@given(seed=st.integers(0, 2**31 - 1), sigma=st.floats(0.01, 2.0))
def test_deviation_is_nll_minus_entropy(seed, sigma):
    g = torch.Generator().manual_seed(seed)
    n = sigma * torch.randn(3, 2, 8, 8, generator=g)
    d = typical.deviation(n, sigma)
    expected = typical.nll_rate(n, sigma) - typical.entropy_rate(sigma)
    torch.testing.assert_close(d, expected, atol=1e-5, rtol=1e-4)
    by_hand = (n.flatten(1).square().sum(1) / (n[0].numel() * sigma**2) - 1) / 2
    torch.testing.assert_close(d, by_hand, atol=1e-6, rtol=1e-5)


@given(seed=st.integers(0, 2**31 - 1), sigma=st.floats(0.01, 1.0))
def test_sigma_as_number_vector_and_map_agree(seed, sigma):
    g = torch.Generator().manual_seed(seed)
    n = sigma * torch.randn(4, 3, 16, 16, generator=g)
    d0 = typical.deviation(n, sigma)
    torch.testing.assert_close(typical.deviation(n, torch.full((4,), sigma)), d0)
    torch.testing.assert_close(typical.deviation(n, torch.full((4, 1, 16, 16), sigma)), d0)


def test_per_pixel_sigma_map_weights_each_pixel():
    n = torch.ones(1, 1, 2, 2)
    sigma = torch.tensor([[[[1.0, 1.0], [2.0, 2.0]]]])
    # mean of (n/s)^2 = (1 + 1 + 1/4 + 1/4) / 4 = 0.625
    assert typical.deviation(n, sigma).item() == pytest.approx((0.625 - 1) / 2)


@given(seed=st.integers(0, 2**31 - 1), window=st.sampled_from([2, 4, 8]))
def test_window_map_averages_to_global_deviation(seed, window):
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(2, 3, 16, 16, generator=g)
    dk = typical.window_deviation(n, 1.0, window)
    assert dk.shape == (2, 16 // window, 16 // window)
    torch.testing.assert_close(dk.flatten(1).mean(1), typical.deviation(n, 1.0))


def test_window_map_finds_a_hot_window():
    n = torch.zeros(1, 1, 16, 16)
    n[..., :8, :8] = 2.0
    dk = typical.window_deviation(n, 1.0, 8)
    assert dk[0, 0, 0].item() == pytest.approx(1.5)
    assert dk[0, 1, 1].item() == pytest.approx(-0.5)


def test_shell_radii_contain_typical_draws():
    lo, hi = typical.shell_radii(4096, 0.1, 0.05)
    assert lo == pytest.approx(0.1 * math.sqrt(4096 * 0.9))
    assert hi == pytest.approx(0.1 * math.sqrt(4096 * 1.1))
    n = 0.1 * torch.randn(200, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    r = n.flatten(1).norm(dim=1)
    inside = (r >= lo) & (r <= hi)
    torch.testing.assert_close(inside, typical.is_typical(n, 0.1, 0.05))
    assert bool(inside.all())


@given(n_dims=st.integers(1, 100_000), eps=st.floats(1e-3, 2.0))
def test_bounds_are_probabilities_and_lm_beats_chebyshev_for_large_n(n_dims, eps):
    lm = typical.laurent_massart_bound(n_dims, eps)
    ch = typical.chebyshev_bound(n_dims, eps)
    assert 0 <= lm <= 1 and 0 <= ch <= 1
    if n_dims * eps**2 > 20:
        assert lm <= ch


def test_bounds_hold_empirically():
    g = torch.Generator().manual_seed(1)
    n = torch.randn(4000, 1, 8, 8, generator=g)
    d = typical.deviation(n, 1.0)
    for eps in (0.1, 0.2, 0.3):
        share = (d.abs() > eps).float().mean().item()
        assert share <= typical.chebyshev_bound(64, eps)
        assert share <= typical.laurent_massart_bound(64, eps)


def test_deviation_std_matches_chi_square():
    g = torch.Generator().manual_seed(2)
    d = typical.deviation(torch.randn(4000, 1, 16, 16, generator=g), 1.0)
    assert d.std().item() == pytest.approx(typical.deviation_std(256), rel=0.06)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: typical.deviation(torch.zeros(2, 8, 8), 1.0), "4-D"),
        (lambda: typical.deviation(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 1.0), "floating"),
        (lambda: typical.deviation(torch.zeros(1, 1, 4, 4, dtype=torch.complex64), 1.0), "float"),
        (lambda: typical.deviation(torch.full((1, 1, 2, 2), math.nan), 1.0), "NaN"),
        (lambda: typical.deviation(torch.zeros(1, 1, 2, 2), 0.0), "sigma"),
        (lambda: typical.deviation(torch.zeros(1, 1, 2, 2), -1.0), "sigma"),
        (lambda: typical.deviation(torch.zeros(1, 1, 2, 2), math.inf), "sigma"),
        (lambda: typical.deviation(torch.zeros(2, 1, 2, 2), torch.ones(3)), "per sample"),
        (lambda: typical.deviation(torch.zeros(1, 1, 2, 2), torch.tensor([0.0])), "sigma"),
        (lambda: typical.deviation(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 3, 3)), "broadcast"),
        (lambda: typical.window_deviation(torch.zeros(1, 1, 4, 4), 1.0, 8), "window"),
        (lambda: typical.window_deviation(torch.zeros(1, 1, 4, 4), 1.0, 0), "window"),
        (lambda: typical.is_typical(torch.zeros(1, 1, 4, 4), 1.0, -0.1), "eps"),
        (lambda: typical.shell_radii(0, 1.0, 0.1), "n_dims"),
        (lambda: typical.shell_radii(248, 1e300, 1e300), "sigma=.*eps=.*beyond float"),
        (lambda: typical.entropy_rate(0.0), "sigma"),
        (lambda: typical.deviation(torch.zeros(0, 1, 4, 4), 1.0), "empty"),
    ],
)
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


ENTRIES = {
    "deviation": lambda x: typical.deviation(x, 0.1),
    "nll_rate": lambda x: typical.nll_rate(x, 0.1),
    "window_deviation": lambda x: typical.window_deviation(x, 0.1, 4),
    "is_typical": lambda x: typical.is_typical(x, 0.1, 0.05),
}


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("kind", EXOTIC)
def test_exotic_tensors_are_refused_at_every_entry_naming_noise(entry, kind):
    """Issue 27.4: meta, sparse, nested, quantized, MKL-DNN, complex and integer tensors get one
    line naming ``noise``, not an error from inside torch."""
    with pytest.raises(TypeError, match=f"^noise must .*{EXOTIC[kind][1]}") as err:
        ENTRIES[entry](exotic_tensor(kind))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["meta", "sparse", "nested", "quantized", "mkldnn", "complex"])
def test_exotic_sigma_tensors_are_refused_naming_sigma(kind):
    message = "must be real" if kind == "complex" else EXOTIC[kind][1]
    sigma = exotic_tensor(kind)
    for call in (
        lambda: typical.deviation(torch.ones(2, 1, 8, 8), sigma),
        lambda: typical.entropy_rate(sigma),
    ):
        with pytest.raises(TypeError, match=f"^sigma .*{message}"):
            call()
