import contextlib
import io
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ts_defense import (
    Denoiser,
    PatchSampler,
    TrainStep,
    TSConfig,
    TSSampler,
    fit,
    ts_loss,
)
from ts_defense._progress import Progress
from ts_defense.models import DnCNN
from ts_defense.training.fit import History

ROOT = Path(__file__).resolve().parents[1]
SIGMA = 25 / 255


def tiny(channels=1, out=None):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, out or channels, 3, padding=1)
    )


def batch(b=6, c=1, s=12, seed=1):
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed))


class Recorder(nn.Module):
    """Returns its input's first channels (an identity denoiser) and records what it was told."""

    def __init__(self, mode):
        super().__init__()
        self.mode, self.seen, self.w = mode, None, nn.Parameter(torch.ones(()))

    def forward(self, y, sigma=None):
        if self.mode == "map":
            self.seen = y[:, 1:].clone()
            return [y[:, :1] * 0, y[:, :1] * self.w]  # a list: the last output counts
        self.seen = sigma
        return y * self.w


@pytest.mark.parametrize("mode", ["map", "argument"])
def test_model_is_told_the_nominal_sigma_even_for_ood_noise(mode):
    model = Recorder(mode)
    sampler = TSSampler(TSConfig(sigma=SIGMA, p_ood=1.0, families={"radial": 1.0}), seed=0)
    res = ts_loss(Denoiser(model, noise_level=mode), sampler, batch())
    assert res.n_ood == 6 and (res.deviation.abs() >= 0.05 - 1e-4).all()
    seen = model.seen.flatten(1) if mode == "map" else model.seen[:, None]
    torch.testing.assert_close(seen, torch.full_like(seen, SIGMA))
    # identity denoiser: loss is the noise power, which the OOD draw moved off sigma^2
    torch.testing.assert_close(res.loss, res.draw.noise.square().mean())


def test_residual_model_and_losses_match_reference_formulas():
    clean = batch()
    model = tiny()
    den = Denoiser(model, predicts="noise")
    for name, ref in [
        ("mse", lambda p, t: F.mse_loss(p, t)),
        ("l1", lambda p, t: F.l1_loss(p, t)),
        ("charbonnier", lambda p, t: ((p - t) ** 2 + 1e-6).sqrt().mean()),
        ("sum_mse", lambda p, t: F.mse_loss(p, t, reduction="sum") / (2 * len(t))),
    ]:
        res = ts_loss(den, TSSampler(seed=0), clean, loss=name)
        draw = TSSampler(seed=0).draw(clean)
        with torch.no_grad():
            pred = draw.noisy - model(draw.noisy)
        torch.testing.assert_close(res.loss.detach(), ref(pred, clean))
        ood = draw.ood
        assert 0 < ood.sum() < len(ood)
        torch.testing.assert_close(res.loss_id, ref(pred[~ood], clean[~ood]))
        torch.testing.assert_close(res.loss_ood, ref(pred[ood], clean[ood]))


def test_callable_loss_and_empty_parts_are_nan_and_left_out_of_logs():
    clean = batch()
    sampler = TSSampler(TSConfig(p_ood=0.0), seed=0)
    for loss in (lambda p, t: (p - t).abs().max(), "mse"):
        res = ts_loss(Denoiser(tiny()), sampler, clean, loss=loss)
        assert res.n_ood == 0 and math.isnan(float(res.loss_ood))
        assert math.isnan(float(res.loss_adv)) and res.n_adv == 0
        assert float(res.loss_id) == pytest.approx(float(res.loss.detach()))
        d = res.as_dict()  # for experiment loggers: no part the batch did not have, no NaN
        assert list(d) == [
            "loss", "loss_id", "n_ood", "deviation_mean", "deviation_abs_max", "skipped"
        ]  # fmt: skip
        assert all(math.isfinite(v) for v in d.values())
    all_ood = TSSampler(TSConfig(p_ood=1.0), seed=0)
    d = ts_loss(Denoiser(tiny()), all_ood, clean).as_dict()
    assert "loss_id" not in d and d["n_ood"] == 6 and math.isfinite(d["loss_ood"])


def test_named_and_custom_losses_give_the_same_parts():
    clean = batch()
    mse = ts_loss(Denoiser(tiny()), TSSampler(seed=0), clean, loss="mse")
    custom = ts_loss(Denoiser(tiny()), TSSampler(seed=0), clean, loss=F.mse_loss)
    assert 0 < int(mse.n_ood) < 6
    for part in ("loss", "loss_id", "loss_ood"):
        torch.testing.assert_close(getattr(mse, part).detach(), getattr(custom, part).detach())


def test_train_step_updates_and_lowers_loss():
    model = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = TrainStep(model, opt, TSSampler(seed=0), loss="mse", predicts="clean")
    clean = batch(8, s=16)
    before = [p.detach().clone() for p in model.parameters()]
    losses = [float(step(clean).loss) for _ in range(30)]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


# ---- bad input: a clear error at the first step, never a NaN weight update ----


def _frozen_copy(model):
    return [p.detach().clone() for p in model.parameters()]


def test_bad_inputs_fail_at_first_step_before_any_update():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _frozen_copy(model)
    with pytest.raises(ValueError, match=r"model output \(6, 2, 12, 12\) must have the input"):
        TrainStep(tiny(out=2), opt, TSSampler(), predicts="clean")(batch())
    with pytest.raises(ValueError, match="predicts"):
        TrainStep(model, opt, TSSampler(), predicts="residual")
    bad = batch()
    bad[2, 0, 3, 3] = math.nan
    step = TrainStep(model, opt, TSSampler(), predicts="clean")
    with pytest.raises(ValueError, match="clean contains NaN"):
        step(bad)
    nan_loss = TrainStep(
        model, opt, TSSampler(), loss=lambda p, t: (p - t).mean() * math.nan, predicts="clean"
    )
    with pytest.raises(FloatingPointError, match="non-finite loss.* at step 0.*not updated"):
        nan_loss(batch())
    with pytest.raises(ValueError, match="loss must return a scalar"):
        TrainStep(model, opt, TSSampler(), loss=lambda p, t: p - t, predicts="clean")(batch())
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        TrainStep(model, opt, TSSampler(), loss="huber", predicts="clean")
    with pytest.raises(ValueError, match="on_nonfinite"):
        TrainStep(model, opt, TSSampler(), on_nonfinite="ignore", predicts="clean")
    with pytest.raises(TypeError, match="sampler must be a TSSampler"):
        TrainStep(model, opt, TSConfig(), predicts="clean")
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)


class Exploding(nn.Module):
    """Finite output; on odd calls a zero-valued term whose gradient overflows to inf."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, y):
        self.calls += 1
        out = y * self.w
        if self.calls % 2:
            out = out + (self.w - self.w.detach()) * 1e38 * 1e38
        return out


def test_nonfinite_gradient_raises_or_skips():
    model = Exploding()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        TrainStep(model, opt, TSSampler(), predicts="clean")(batch())
    assert float(model.w) == 1.0
    model = Exploding()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model, opt, TSSampler(), on_nonfinite="skip", predicts="clean")
    first, second = step(batch()), step(batch())
    assert first.skipped and not second.skipped
    assert math.isfinite(float(model.w)) and float(model.w) != 1.0


def nan_once():
    """A loss that is NaN on its first call only."""
    calls = []

    def flaky(p, t):
        calls.append(1)
        return F.mse_loss(p, t) * (math.nan if len(calls) == 1 else 1.0)

    return flaky


def test_skip_drops_nan_loss_steps_and_keeps_training():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sampler = TSSampler(TSConfig(p_ood=0.0))
    step = TrainStep(model, opt, sampler, loss=nan_once(), on_nonfinite="skip", predicts="clean")
    before = _frozen_copy(model)
    assert step(batch()).skipped
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not step(batch()).skipped
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_raised_bad_step_leaves_no_gradient_behind():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model, opt, TSSampler(TSConfig(p_ood=0.0)), loss=nan_once(), predicts="clean")
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        step(batch())
    assert all(p.grad is None for p in model.parameters())  # caught: the next step is clean
    assert not step(batch()).skipped
    assert all(torch.isfinite(p).all() for p in model.parameters())


class Accumulating:
    """The part of accelerate.Accelerator that TrainStep uses, accumulating over ``every``
    batches; records which batches reached backward."""

    scaler = None
    num_processes, process_index = 1, 0

    def __init__(self, every):
        self.every, self.calls, self.backwards = every, 0, []

    def prepare(self, *objects):
        return objects

    def register_for_checkpointing(self, obj):
        pass

    @contextlib.contextmanager
    def accumulate(self, model):
        self.calls += 1
        self.sync_gradients = self.calls % self.every == 0
        yield

    def backward(self, loss):
        self.backwards.append(self.calls)
        loss.backward()


def test_a_bad_micro_batch_never_reaches_the_accumulated_gradients():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    acc = Accumulating(every=2)
    sampler = TSSampler(TSConfig(p_ood=0.0))
    step = TrainStep(
        model, opt, sampler, loss=nan_once(), accelerator=acc, on_nonfinite="skip", predicts="clean"
    )
    assert step(batch()).skipped  # micro-batch 1 of 2: NaN loss, left out before backward
    assert not step(batch()).skipped  # micro-batch 2 updates with its own gradients
    assert acc.backwards == [2]
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---- the README diff, run as printed ----


def _readme_diff():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Turn on TS in an existing loop\n\n```diff\n(.*?)```", text, re.S)
    assert block, "README lost its TS diff"
    before, after = [], []
    for line in block.group(1).splitlines():
        tag, code = line[:1], line[1:]
        if tag in " -":
            before.append(code)
        if tag in " +":
            after.append(code)
    return "\n".join(before), "\n".join(after)


def test_readme_diff_runs_as_printed():
    before, after = _readme_diff()
    assert "randn_like" in before and "sampler.draw(clean).noisy" in after
    results = {}
    for name, loop in (("before", before), ("after", after)):
        torch.manual_seed(0)
        model = DnCNN(depth=3, features=8)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loader = [batch(4, s=16, seed=s) for s in range(3)]
        body = loop + "\n    opt.zero_grad()\n    loss.backward()\n    opt.step()\n"
        env = {"torch": torch, "F": F, "model": model, "loader": loader, "sigma": SIGMA}
        env["opt"] = opt
        exec(compile(body, f"README diff ({name})", "exec"), env)
        assert math.isfinite(float(env["loss"]))
        results[name] = [p.detach().clone() for p in model.parameters()]
    assert "sampler" in env and isinstance(env["sampler"], TSSampler)
    assert any(not torch.equal(a, b) for a, b in zip(*results.values(), strict=True))


def test_deferred_check_reports_a_bad_step_at_the_next_read():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def nan_at_2(p, t):
        if torch.is_grad_enabled():
            calls.append(1)
        return F.mse_loss(p, t) * (math.nan if len(calls) == 2 else 1.0)

    step = TrainStep(model, opt, TSSampler(seed=0), loss=nan_at_2, check_every=3, predicts="clean")
    step(batch())
    step(batch())  # the NaN step: applied, not yet read
    with pytest.raises(FloatingPointError, match=r"at a step in 0\.\.2; with check_every=3"):
        step(batch())
    step.check()  # read and cleared
    with pytest.raises(ValueError, match="check_every=2 needs on_nonfinite='raise'"):
        TrainStep(model, opt, TSSampler(), on_nonfinite="skip", check_every=2, predicts="clean")
    with pytest.raises(ValueError, match="check_every"):
        TrainStep(model, opt, TSSampler(), check_every=0, predicts="clean")


def test_step_result_holds_tensors_and_reads_them_in_as_dict():
    model = tiny()
    res = TrainStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), TSSampler(seed=0), predicts="clean"
    )(batch())
    assert isinstance(res.n_ood, torch.Tensor) and res.n_ood.dim() == 0
    assert int(res.n_ood) == int(res.draw.ood.sum())
    assert res.as_dict()["n_ood"] == float(res.n_ood)


def test_a_bare_module_must_say_what_it_predicts():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="predicts is required for a bare Sequential: predicts="):
        TrainStep(model, opt, TSSampler())
    with pytest.raises(TypeError, match="predicts is required"):
        fit(model, batch(2, s=16), steps=1, patch_size=8, progress=False)
    den = Denoiser(model, predicts="noise")
    assert TrainStep(den, opt, TSSampler()).denoiser is den  # a Denoiser carries it
    assert TrainStep(den, opt, TSSampler(), predicts="noise").denoiser is den
    with pytest.raises(ValueError, match="predicts='clean' contradicts the Denoiser"):
        TrainStep(den, opt, TSSampler(), predicts="clean")
    with pytest.raises(ValueError, match="noise_level='map' contradicts"):
        fit(den, batch(2, s=16), noise_level="map", steps=1, patch_size=8, progress=False)
    step = TrainStep(model, opt, TSSampler(), predicts="noise")
    assert step.denoiser.predicts == "noise" and step.denoiser.noise_level == "none"


def test_images_in_0_255_are_refused_naming_the_fix():
    model = tiny()
    weights = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    grey = batch() * 255  # float images still in grey levels
    fix = r"clean reaches 25\d\.?\d*, more than twice data_range=1: images in 0\.\.255\? Divide"
    with pytest.raises(ValueError, match=fix):
        TSSampler(sigma=SIGMA).draw(grey)
    with pytest.raises(ValueError, match=fix):
        TrainStep(model, opt, TSSampler(sigma=SIGMA), predicts="clean")(grey)
    with pytest.raises(ValueError, match=fix):
        ts_loss(Denoiser(model), TSSampler(sigma=SIGMA), grey)
    with pytest.raises(ValueError, match=r"images reaches .*more than twice data_range=1"):
        fit(model, grey, predicts="clean", steps=1, patch_size=8, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))
    # the rule: above twice the range; overshoot of an image in its own unit is accepted, and
    # so are 0..255 images declared as such
    TSSampler(sigma=SIGMA).draw(batch() * 1.9)
    TSSampler(sigma=25, data_range=255).draw(grey)
    TSSampler(sigma=SIGMA).draw(grey, check_finite=False)  # unchecked: no wait for the device


def test_huge_finite_batch_cannot_poison_batch_norm_statistics():
    # Finite values whose squares overflow: the loss can stay finite while the batch-norm
    # running variance becomes inf; the step must refuse it and leave every buffer as it was.
    torch.manual_seed(0)
    model = DnCNN(depth=3, features=4)
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.01), TSSampler(seed=0),
                     predicts="noise")  # fmt: skip
    step(batch(2))  # the first batch is checked for its range (this one would be refused)
    before = [t.detach().clone() for t in (*model.parameters(), *model.buffers())]
    with pytest.raises(FloatingPointError, match="batch statistics"):
        step(torch.tensor([[[[1.5410e30, -2.9343e29]]]]))
    after = (*model.parameters(), *model.buffers())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_fit_takes_grey_images_as_the_docstring_says():
    """A list of (H, W) grey pictures is one channel each, as (1, H, W) and (1, 1, H, W) are."""
    pictures = [batch(1, 1, 16, seed=k)[0, 0] for k in range(3)]  # (H, W) each
    cut = {}
    for name, shaped in {
        "(H, W)": pictures,
        "(C, H, W)": [p[None] for p in pictures],
        "(N, C, H, W)": [torch.stack(pictures)[:, None]],
    }.items():
        cut[name] = PatchSampler(shaped, 8, torch.Generator().manual_seed(0))(5)
    assert cut["(H, W)"].shape == (5, 1, 8, 8)
    assert torch.equal(cut["(H, W)"], cut["(C, H, W)"])
    assert torch.equal(cut["(H, W)"], cut["(N, C, H, W)"])
    history = fit(tiny(), pictures, predicts="clean", steps=2, batch_size=2, patch_size=8)
    assert len(history.records) == 2


@pytest.mark.parametrize(
    "images, said",
    [
        ([torch.rand(16)], r"images\[0\] must be \(H, W\), \(C, H, W\) or \(N, C, H, W\)"),
        ([torch.rand(1, 1, 1, 16, 16)], r"images\[0\] must be \(H, W\), \(C, H, W\)"),
        (torch.rand(1, 16, 16), r"images must be a \(N, C, H, W\) tensor or a list of \(H, W\)"),
    ],
)
def test_fit_names_the_image_shapes_it_takes(images, said):
    with pytest.raises(ValueError, match=said):
        fit(tiny(), images, predicts="clean", steps=1, patch_size=8, progress=False)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere(capsys):
    model = tiny()
    history = fit(model, batch(2, s=16), predicts="clean", steps=40, patch_size=8, batch_size=2)
    err = capsys.readouterr().err  # not a terminal: one line every twentieth of the run
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 20
    assert re.fullmatch(r"TS training: 2/40 \(5%\), loss [\d.e-]+, [\d.e+]+ steps/s", lines[0])
    assert lines[-1].startswith("TS training: 40/40 (100%), loss ")
    assert len(history.records) == 40
    bar = Terminal()
    with Progress(3, "TS training", stream=bar) as progress:
        for _ in range(3):
            progress.update(loss="0.5")
    assert "\r" in bar.getvalue() and "3/3" in bar.getvalue()  # tqdm redraws its line
    silent = Terminal()
    with Progress(3, "x", enabled=False, stream=silent) as progress:
        progress.update()
    assert silent.getvalue() == ""


def test_history_columns_read_nan_where_a_step_had_no_such_part():
    history = History([{"step": 1.0, "loss": 0.5}, {"step": 2.0, "loss": 0.4, "loss_ood": 0.7}])
    assert history.column("step") == [1.0, 2.0]
    ood = history.column("loss_ood")
    assert math.isnan(ood[0]) and ood[1] == 0.7
    with pytest.raises(KeyError, match=r"no 'loss_adv' in history; keys: \['loss', 'loss_ood'"):
        history.column("loss_adv")
