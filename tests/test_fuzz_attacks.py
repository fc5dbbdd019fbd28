"""Fuzzing the attacks, their evaluation, the transfer matrix, typicality and the detector
(issue 7) with tiny DnCNNs: random budgets (negative, NaN, huge), steps, shapes, dtypes, NaN
inputs and mismatched references."""

import math
from functools import partial

import torch
from fuzz_support import outcome, sigmas, tensors, values
from hypothesis import given
from hypothesis import strategies as st

from ts_defense import Denoiser
from ts_defense.attacks import ATTACKS, make_attack
from ts_defense.evaluation.detect import TypicalityDetector, roc_auc, typicality_scores
from ts_defense.evaluation.metrics import add_noise, evaluate_attack, psnr, ssim, worst_case
from ts_defense.evaluation.transfer import transfer_matrix
from ts_defense.evaluation.typicality import typicality
from ts_defense.models import DnCNN

ATTACK_PARAMS = (
    "noisy",
    "reference",
    "eps",
    "rho",
    "sigma",
    "steps",
    "alpha",
    "clip",
    "seed",
    "model",
    "objective",
    "loss",
    "decay",
    "unexpected keyword",  # an option the chosen attack does not take (Python's own message)
)
LINF = {name for name, cls in ATTACKS.items() if cls.norm == "L-inf"}


def tiny(seed=0):
    torch.manual_seed(seed)
    return Denoiser(DnCNN(depth=3, features=4), predicts="noise").eval()


def surrogate(name):
    return [tiny(0), tiny(1)] if name == "ensemble-pgd" else tiny()


budgets = st.one_of(st.sampled_from([8 / 255, 0.0, -1.0, math.nan, math.inf, 1e30]), sigmas)
steps = st.one_of(st.integers(-1, 3), st.sampled_from([1.5, "2", None, True]))
options = st.dictionaries(
    st.sampled_from(["alpha", "objective", "loss", "clip", "random_start", "seed", "decay"]),
    st.one_of(
        values,
        st.sampled_from(["clean", "output", "noisy", "mse", "l1", (0.0, 1.0), (-9.0, 9.0), (1, 0)]),
        st.integers(-1, 2**70),
    ),
    max_size=3,
)


@given(
    name=st.sampled_from(sorted(ATTACKS)),
    noisy=tensors(max_side=6),
    ref_kind=st.sampled_from(["same", "none", "other"]),
    eps=budgets,
    sigma=sigmas,
    n_steps=steps,
    opts=options,
)
def test_fuzz_attacks(name, noisy, ref_kind, eps, sigma, n_steps, opts):
    ref = {"same": noisy * 0.5, "none": None, "other": torch.rand(1, 1, 3, 3)}[ref_kind]
    kw = dict(opts, **{ATTACKS[name].budget: eps})
    if name != "fgsm":
        kw["steps"] = n_steps

    def call():
        return make_attack(name, surrogate(name), sigma, **kw)(noisy, ref)

    adv = outcome(f"attack[{name}]", call, ATTACK_PARAMS)
    if adv is not None:
        assert adv.shape == noisy.shape and adv.dtype == noisy.dtype


@given(
    name=st.sampled_from(sorted(ATTACKS)),
    b=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    eps=st.floats(0, 1),
    n_steps=st.integers(1, 3),
    objective=st.sampled_from(["clean", "output", "noisy"]),
)
def test_fuzz_attacks_valid_inputs_respect_the_budget(name, b, h, w, eps, n_steps, objective):
    """Valid inputs of any size: a finite attacked input of the same shape inside the budget."""
    gen = torch.Generator().manual_seed(b * 100 + h * 10 + w)
    clean = torch.rand(b, 1, h, w, generator=gen)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=gen)
    kw = {ATTACKS[name].budget: eps}
    if name != "fgsm":
        kw["steps"] = n_steps
    attack = make_attack(name, surrogate(name), 0.1, objective=objective, **kw)
    adv = outcome(f"attack[{name}] valid", lambda: attack(noisy, clean), ATTACK_PARAMS)
    assert adv is not None and adv.shape == noisy.shape
    delta = (adv - noisy).flatten(1)
    if name in LINF:
        assert float(delta.abs().max()) <= eps * (1 + 1e-5) + 1e-7
    else:
        radius = attack.radius(noisy).flatten().float()
        assert (delta.double().norm(dim=1) <= radius * (1 + 1e-4) + 1e-7).all()


@given(
    clean=tensors(max_side=9),
    noisy_kind=st.sampled_from(["same", "shifted", "list", "short"]),
    sigma=sigmas,
    data_range=st.one_of(st.just(1.0), sigmas),
)
def test_fuzz_evaluate_attack(clean, noisy_kind, sigma, data_range):
    den = tiny()
    if noisy_kind == "same":
        noisy = clean
    elif noisy_kind == "shifted":
        noisy = torch.rand(2, 1, 8, 8)
    elif noisy_kind == "list":
        noisy = [clean, clean]
    else:
        noisy = []
    attack = make_attack("fgsm", den, 0.1, eps=2 / 255)

    def call():
        return evaluate_attack(den, attack, clean, noisy, sigma, data_range=data_range)

    params = ("clean", "noisy", "sigma", "data_range", "model", "estimate", "ssim", "eps")
    out = outcome("evaluate_attack", call, params)
    if out is not None:
        ev, adv = out
        assert len(ev.psnr_attacked) == clean.shape[0] and adv[0].shape == clean.shape
        assert all(math.isfinite(v) for v in ev.psnr_attacked + ev.ssim_attacked)


@given(clean=tensors(max_side=9), estimate=tensors(max_side=9), data_range=sigmas)
def test_fuzz_metrics(clean, estimate, data_range):
    for name, fn in (("psnr", psnr), ("ssim", ssim)):
        out = outcome(
            name, lambda fn=fn: fn(clean, estimate, data_range), ("clean", "estimate", "data_range")
        )
        if out is not None:
            assert len(out) == clean.shape[0]
            assert all(not math.isnan(v) for v in out)  # identical images give PSNR inf


@given(clean=tensors(max_side=6), sigma=sigmas, seed=st.one_of(st.integers(-1, 3), values))
def test_fuzz_add_noise(clean, sigma, seed):
    out = outcome("add_noise", lambda: add_noise(clean, sigma, seed), ("clean", "sigma", "seed"))
    if out is not None:
        assert out[0].shape == clean.shape


@given(
    models=st.sampled_from(["two", "one", "empty", "list", "strings"]),
    clean=tensors(max_side=6),
    sigma=sigmas,
    sources=st.one_of(st.none(), st.sampled_from([["a"], ["z"], "a", []])),
    eps=budgets,
)
def test_fuzz_transfer_matrix(models, clean, sigma, sources, eps):
    named = {
        "two": {"a": tiny(0), "b": tiny(1)},
        "one": {"a": tiny(0)},
        "empty": {},
        "list": [tiny(0)],
        "strings": {"a": "dncnn"},
    }[models]
    factory = partial(make_attack, "pgd", sigma=0.1, eps=eps, steps=1)

    def call():
        return transfer_matrix(named, clean, sigma, lambda m: factory(m), sources=sources)

    params = ("models", "clean", "noisy", "sigma", "source", "eps", "model", "differentiable")
    res = outcome("transfer_matrix", call, params)
    if res is not None:
        for s in res.sources:
            assert all(math.isfinite(res.drop(s, t)) for t in res.targets)


@given(clean=tensors(max_side=9), inputs=tensors(max_side=9), sigma=sigmas, window=values)
def test_fuzz_typicality(clean, inputs, sigma, window):
    params = ("clean", "inputs", "noise", "sigma", "window", "eps")
    out = outcome("typicality", lambda: typicality(clean, inputs, sigma, window), params)
    if out is not None:
        assert len(out["d"]) == clean.shape[0]


@given(
    noisy=tensors(max_side=9),
    sigma=sigmas,
    window=st.one_of(st.integers(-1, 10), values),
    score=st.sampled_from(["global", "window", "max"]),
    false_alarm=st.one_of(st.floats(0, 1), values),
    threshold=st.one_of(st.none(), values),
)
def test_fuzz_detector(noisy, sigma, window, score, false_alarm, threshold):
    den = tiny()
    params = ("noisy", "sigma", "window", "score", "false_alarm", "threshold", "model", "noise")
    outcome("typicality_scores", lambda: typicality_scores(den, noisy, sigma, window), params)

    def detect():
        det = TypicalityDetector(den, sigma, score=score, window=window, threshold=threshold)
        if threshold is None:
            det.calibrate(noisy, false_alarm)
        return det(noisy)

    flags = outcome("TypicalityDetector", detect, params)
    if flags is not None:
        assert flags.shape == (noisy.shape[0],) and flags.dtype == torch.bool


@given(negatives=st.one_of(tensors(max_dims=2), values), positives=st.one_of(tensors(), values))
def test_fuzz_roc_auc(negatives, positives):
    out = outcome("roc_auc", lambda: roc_auc(negatives, positives), ("negatives", "positives"))
    if out is not None:
        assert 0.0 <= out <= 1.0


@given(lengths=st.lists(st.integers(0, 3), min_size=0, max_size=3))
def test_fuzz_worst_case(lengths):
    from ts_defense.evaluation.metrics import AttackEvaluation

    evals = {
        f"a{i}": AttackEvaluation(f"a{i}", [30.0] * n, [20.0 + i] * n, [0.9] * n, [0.5] * n)
        for i, n in enumerate(lengths)
    }
    out = outcome("worst_case", lambda: worst_case(evals), ("evaluations",))
    if out is not None:
        assert len(out["attack"]) == lengths[0]
