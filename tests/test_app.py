"""The application package: one function per plot, each returning its own Figure (the caller's
matplotlib backend untouched) or drawing into a given Axes, titles that say what was run."""

import subprocess
import sys

import pytest
import torch

from ts_defense.app import plots

CURVE = {"budget": [0.0, 4 / 255], "psnr": [28.0, 25.0], "pass_through": [28.0, 24.5]}


@pytest.mark.parametrize("pass_through", [True, False])
def test_budget_plot_draws_one_curve_per_model_and_optional_references(tmp_path, pass_through):
    fig = plots.budget_curves_figure({"a": CURVE, "b": CURVE}, pass_through=pass_through)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    refs = [label for label in labels if "f(y) + delta" in label]
    assert len(labels) == (4 if pass_through else 2)
    assert len(refs) == (2 if pass_through else 0)
    path = plots.save_figure(plots.budget_curves_figure({"a": CURVE}), tmp_path / "s" / "c.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and [p.name for p in path.parent.iterdir()] == [
        "c.png"
    ]


def test_one_function_per_plot_and_the_composed_ones_draw_into_a_given_axes():
    from matplotlib.figure import Figure

    from ts_defense.evaluation.transfer import TransferResult

    public = [n for n in vars(plots) if callable(getattr(plots, n)) and not n.startswith("_")]
    assert not [n for n in public if n.startswith(("draw_", "plot_"))]
    page = Figure()
    left, right = page.subplots(1, 2)
    assert plots.budget_curves_figure({"a": CURVE}, ax=left) is page
    r = TransferResult(["a"], ["a", "b"], {"a": 28.0, "b": 27.0}, {"a": {"a": 25.0, "b": 26.0}})
    assert plots.transfer_figure(r, ax=right) is page
    assert len(left.get_lines()) == 2 and len(right.images) == 1
    assert len(page.axes) == 3  # the two panels and the heatmap's colour bar


@pytest.mark.parametrize(
    "attack, steps, objective, title, xlabel, x",
    [
        (
            "pgd",
            3,
            "clean",
            "DenoisingPGD (3 steps, clean target)",
            "L-inf budget eps (x 1/255)",
            4,
        ),
        (
            "pgd",
            1,
            "noisy",
            "DenoisingPGD (one step, noisy target)",
            "L-inf budget eps (x 1/255)",
            4,
        ),
        ("fgsm", 3, "output", "DenoisingFGSM (one step, output target)", "L-inf budget eps", 4),
        (
            "pgd-l2",
            5,
            "clean",
            "L2DenoisingPGD (5 steps",
            "L2 budget rho (a share of the noise",
            0.2,
        ),
    ],
)
def test_budget_plot_names_the_attack_that_was_run(attack, steps, objective, title, xlabel, x):
    budget = 0.2 if attack == "pgd-l2" else 4 / 255
    curve = {**CURVE, "budget": [0.0, budget]}
    fig = plots.budget_curves_figure({"a": curve}, attack=attack, steps=steps, objective=objective)
    ax = fig.axes[0]
    assert title in ax.get_title() and ax.get_xlabel().startswith(xlabel)
    assert ax.get_lines()[0].get_xdata()[1] == pytest.approx(x)


def test_attack_description_says_one_step():
    from ts_defense import Denoiser
    from ts_defense.attacks import DenoisingPGD

    atk = DenoisingPGD(Denoiser(torch.nn.Identity()), 0.1, eps=8 / 255, steps=1)
    assert "one step" in atk.describe() and "1 steps" not in atk.describe()


def _audit_data(steps):
    mean = {"psnr_clean": 28.0, "pgd": {"8": {"psnr": 25.0, "pass_through": 24.0}}}
    config = {"units": "grey levels", "sigma": 25 / 255, "budgets": [8 / 255], "steps": steps}
    config["budgets_as_typed"] = ["8"]
    data = {"config": config, "models": {"m": {"mean": mean}}, "transfer": None, "images": ["x"]}
    image = torch.rand(1, 1, 80, 80, generator=torch.Generator().manual_seed(0))
    keys = ("clean", "noisy", "attacked", "output", "output_attacked")
    return data, {"m": {k: image * (1 - i / 10) for i, k in enumerate(keys)}}


def test_audit_page_strips_have_no_colour_bar_and_count_steps_right():
    fig = plots.audit_figure(*_audit_data(steps=1))
    assert len(fig.axes) == 1 + len(plots.AUDIT_STRIP)  # the curves and five crops, no bar
    assert "(one step)" in fig.axes[0].get_title()
    assert fig.axes[1].images[0].get_array().shape == (plots.AUDIT_CROP, plots.AUDIT_CROP)


BACKEND_SCRIPT = """
import warnings
import sys, torch
import ts_defense, ts_defense.evaluation.transfer, ts_defense.evaluation.budget
import ts_defense.evaluation.detect, ts_defense.models.zoo, ts_defense.training.recipes
import ts_defense.training.fit, ts_defense.training.adversarial
assert not [m for m in sys.modules if m.startswith(("ts_defense.app", "matplotlib"))]
import matplotlib
matplotlib.use("svg")
from ts_defense.app import cli, demo, report, plots, audit
from ts_defense.evaluation.transfer import TransferResult
from ts_defense.noise.sampler import TSConfig
out = sys.argv[1]
curve = {"budget": [0.0, 0.03], "psnr": [28.0, 25.0], "pass_through": [28.0, 24.0]}
plots.save_figure(plots.budget_curves_figure({"a": curve}), out + "/c.png")
r = TransferResult(["a"], ["a", "b"], {"a": 28.0, "b": 27.0}, {"a": {"a": 25.0, "b": 26.0}})
plots.save_figure(plots.transfer_figure(r), out + "/t.png")
report.sampler_report(out + "/sampler", TSConfig())
x = torch.rand(2, 1, 16, 16)
plots.save_figure(plots.deviation_figure(x, 2 * x, 0.1, "an attack"), out + "/d.png")
plots.save_figure(plots.image_strip_figure({"a": x, "b": x}), out + "/s.png")
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
print("ok")
"""


def test_plots_leave_the_callers_backend_alone(tmp_path):
    """The library below the application imports neither it nor matplotlib; the plots use
    neither pyplot nor the old paths, and leave the backend the caller chose."""
    run = subprocess.run(
        [sys.executable, "-c", BACKEND_SCRIPT, str(tmp_path)], capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
    assert (tmp_path / "sampler" / "sampler.png").read_bytes()[:4] == b"\x89PNG"


def test_the_demo_trains_the_librarys_small_dncnn():
    from ts_defense.app.demo import DemoConfig
    from ts_defense.models import SmallDnCNN

    cfg = DemoConfig(steps=5, depth=3, features=4, patch_size=16)
    assert isinstance(cfg, SmallDnCNN) and DemoConfig().steps == 300
    assert cfg.fit_options() == {"steps": 5, "batch_size": 16, "patch_size": 16}
    layers = list(cfg.build(channels=3).modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in layers) == 3
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in layers)
