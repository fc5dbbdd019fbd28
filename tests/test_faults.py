"""Faults during training (issue 7): a NaN loss in ``fit`` stops the run with a message and the
last good checkpoint (from which the run resumes exactly), or is skipped when asked; no NaN
weights or running statistics ever reach the disk. (Torn writes, killed writers and resume
after a crash are in test_checkpoint.py.)"""

import math

import pytest
import torch
import torch.nn.functional as F

from ts_defense import TrainStep, TSSampler, fit, load_checkpoint, save_checkpoint
from ts_defense.models import DnCNN

IMAGES = torch.rand(3, 1, 24, 24, generator=torch.Generator().manual_seed(5))
FIT = dict(batch_size=4, patch_size=12, lr=1e-3, seed=3, predicts="noise", progress=False)


def small():
    torch.manual_seed(0)
    return DnCNN(depth=3, features=8)  # with batch norm: running statistics count too


class NaNAt:
    """MSE, except NaN at the given (1-based) training steps."""

    def __init__(self, *bad):
        self.bad, self.steps = set(bad), 0

    def __call__(self, pred, target):
        if torch.is_grad_enabled():  # the step's loss (the ID/OOD parts come without grad)
            self.steps += 1
        return F.mse_loss(pred, target) * (math.nan if self.steps in self.bad else 1.0)


def states_equal(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_nan_loss_stops_fit_and_leaves_the_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "run.pt"
    model = small()
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite loss.* at step 3.*after 3 steps\) is in",
    ):
        fit(model, IMAGES, steps=6, loss=NaNAt(4), checkpoint=ckpt, **FIT)
    assert load_checkpoint(ckpt, saved := small())["step"] == 3
    reference = small()
    fit(reference, IMAGES, steps=3, loss=NaNAt(), **FIT)
    assert states_equal(saved, reference) and states_equal(model, reference)
    # resuming (with the bad batch fixed) ends where an uninterrupted run ends
    full = small()
    h_full = fit(full, IMAGES, steps=6, loss=NaNAt(), **FIT)
    resumed = small()
    h_res = fit(resumed, IMAGES, steps=6, loss=NaNAt(), checkpoint=ckpt, **FIT)
    assert states_equal(resumed, full)
    assert repr(h_res.records) == repr(h_full.records)


def test_nan_loss_without_checkpoint_keeps_the_model_good():
    model = small()
    with pytest.raises(FloatingPointError, match="weights were not updated"):
        fit(model, IMAGES, steps=4, loss=NaNAt(2), **FIT)
    reference = small()
    fit(reference, IMAGES, steps=1, loss=NaNAt(), **FIT)
    assert states_equal(model, reference)


def test_skip_drops_nan_steps_and_writes_only_finite_checkpoints(tmp_path):
    ckpt = tmp_path / "run.pt"
    model = small()
    history = fit(
        model,
        IMAGES,
        steps=6,
        loss=NaNAt(2, 5),
        on_nonfinite="skip",
        checkpoint=ckpt,
        checkpoint_every=1,
        **FIT,
    )
    assert [r["skipped"] for r in history.records] == [0, 1, 0, 0, 1, 0]
    assert load_checkpoint(ckpt, saved := small())["step"] == 6
    for t in saved.state_dict().values():
        assert not t.is_floating_point() or bool(torch.isfinite(t).all())


def test_skipped_step_restores_batch_norm_running_statistics():
    model = small()
    calls = []

    def poison(module, args):  # the first forward sees an overflowing batch
        calls.append(1)
        return (args[0] * (math.inf if len(calls) == 1 else 1.0),)

    model.register_forward_pre_hook(poison)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    before = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    step = TrainStep(
        model,
        torch.optim.SGD(model.parameters(), 0.1),
        TSSampler(),
        on_nonfinite="skip",
        predicts="clean",
    )
    assert step(IMAGES[:, :, :12, :12]).skipped
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert torch.equal(bn.num_batches_tracked, before[2])
    assert not step(IMAGES[:, :, :12, :12]).skipped
    assert bool(torch.isfinite(bn.running_var).all()) and int(bn.num_batches_tracked) == 1


def test_save_checkpoint_refuses_nan_weights_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "c.pt"
    model = small()
    save_checkpoint(path, model, step=1)
    good = path.read_bytes()
    with torch.no_grad():
        model.layers[0].weight[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"model state 'layers.0.weight' holds NaN or Inf"):
        save_checkpoint(path, model, step=2)
    assert path.read_bytes() == good


def test_float16_weights_are_refused_with_a_pointer_to_mixed_precision():
    """Adam's update overflows float16 weights from finite gradients, past the gradient check:
    plain fp16 training is refused before any step."""
    model = small().half()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"float16 weights.*mixed_precision='fp16'"):
        fit(model, IMAGES, steps=3, **FIT)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="float16 weights"):
        TrainStep(model, torch.optim.SGD(model.parameters(), 0.1), TSSampler(), predicts="clean")
    bf16 = small().bfloat16()  # float32's exponent range: trains with finite weights
    fit(bf16, IMAGES, steps=3, **FIT)
    assert all(bool(torch.isfinite(p).all()) for p in bf16.parameters())
