"""``ts-defense evaluate --attack auto`` (issue 23): the default audit is the per-image worst
case over APGD members and transfer, with convergence evidence and sanity checks in every
report; failed checks and NaN outputs come first; ``--attack pgd`` is the old fast path; bad
options are one line naming the option."""

import json
import math
import re

import numpy as np
import pytest
import torch
from test_audit import near_identity, tiny_model

from ts_defense import Denoiser
from ts_defense.app import plots
from ts_defense.app.audit import AuditConfig, AuditModel, run_audit, write_report
from ts_defense.app.audit import worst as auto
from ts_defense.app.audit.page import to_markdown
from ts_defense.app.cli import main
from ts_defense.attacks import APGD, make_attack
from ts_defense.evaluation.metrics import add_noise, denoise, psnr
from ts_defense.models import DnCNN

SIGMA = 25 / 255


class Rounded(torch.nn.Module):
    """A denoiser that rounds to grey levels: its gradient is zero almost everywhere, the
    textbook masked gradient."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # a parameter, as real models have

    def forward(self, y):
        return torch.round(y * 255) / 255 * self.scale


def rounded():
    """For ``test_audit_auto:rounded`` (module:function)."""
    return Rounded()


def colour():
    """For ``test_audit_auto:colour``: a tiny colour model."""
    torch.manual_seed(0)
    return Denoiser(near_identity(DnCNN(channels=3, depth=3, features=4)), predicts="noise")


class Bright(torch.nn.Module):
    """NaN wherever the input's mean is above 0.6."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_model().model

    def forward(self, y):
        bad = y.mean((1, 2, 3), keepdim=True) > 0.6
        return torch.where(bad, torch.nan, y - self.inner(y))


def images(n=2, size=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(f"im{i}", torch.rand(1, 1, size, size, generator=gen)) for i in range(n)]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One auto audit of the tiny model with transfer from the public DnCNN-25s."""
    config = AuditConfig(steps=12, budgets=(4 / 255, 8 / 255), obsatk_eps=4 / 255)
    ims = images(size=16)
    result = run_audit([AuditModel("tiny", tiny_model(), 1, "test")], ims, config, progress=False)
    out = tmp_path_factory.mktemp("auto") / "report"
    write_report(result, out)
    return result, out


@pytest.mark.slow  # the shared audit crafts transfer on two DnCNN-17s
def test_the_worst_case_is_the_per_image_minimum_over_the_members(report):
    result, out = report
    data = json.loads((out / "audit.json").read_text())
    assert data["config"]["attack"] == "auto" and data["config"]["steps"] == 12
    m, per = data["models"]["tiny"], data["models"]["tiny"]["per_image"]
    members = {
        "apgd-linf": per["apgd"]["8"]["psnr"],
        "apgd-linf-noisy": per["apgd_noisy"]["psnr"],
        "apgd-obsatk": per["obsatk"]["psnr"],
        **{f"transfer:{s}": v for s, v in per["transfer"].items()},
    }
    assert m["worst"]["members"] == list(members)
    assert list(per["transfer"]) == ["dncnn-s-25", "kair-dncnn-25"]
    table = np.array(list(members.values()))
    assert m["worst"]["psnr"] == pytest.approx(table.min(0).tolist())
    assert m["worst"]["winner"] == [list(members)[i] for i in table.argmin(0)]
    assert sum(m["worst"]["wins"].values()) == 2
    assert m["worst"]["mean"] == pytest.approx(np.mean(table.min(0)))
    assert m["mean"]["worst"] <= min(np.mean(v) for v in members.values())
    # the transfer was crafted with APGD, and says so
    assert data["transfer"]["meta"]["description"].startswith("APGD eps 8")


@pytest.mark.slow  # the shared audit crafts transfer on two DnCNN-17s
def test_every_report_shows_convergence_and_its_checks(report):
    result, out = report
    m = result.data["models"]["tiny"]
    curves = m["curves"]
    assert curves["iterations"]["count"] == [10, 12]  # 10, 25, 50, 100, ... up to the steps run
    assert curves["iterations"]["psnr"][-1] == m["mean"]["apgd"]["8"]["psnr"]  # the table's run
    assert curves["restarts"]["count"] == [1, 2]  # the run's restart, and one more
    # the recorded PSNR of restart 1 is the evaluated PSNR of the table's attack
    assert curves["restarts"]["psnr"][0] == pytest.approx(m["mean"]["apgd"]["8"]["psnr"], abs=1e-3)
    names = [c["name"] for c in m["checks"]]
    assert names == [
        "more iterations never weaker",
        "converged",
        "restarts converged",
        "budget curve monotone",
        "white-box never weaker than transfer",
        "random perturbation far weaker",
    ]
    md = (out / "audit.md").read_text()
    head = md.split("## Leaderboard")[0]
    failed = [c for c in m["checks"] if not c["passed"]]
    assert all(f"FAIL {c['name']}" in head for c in failed)
    if not failed:
        assert "All sanity checks passed" in head
    section = md.split("### Convergence and sanity checks: tiny")[1]
    assert "| iterations | 10 | 12 |" in section and "| restarts | 1 | 2 |" in section
    assert section.count("PASS ") + section.count("**FAIL** ") == len(names)
    assert "| **worst case** |" in md and "images won: apgd-linf" in md


@pytest.mark.slow  # the shared audit crafts transfer on two DnCNN-17s
def test_the_page_plots_psnr_against_iterations_and_restarts(report):
    result, _ = report
    fig = plots.audit_figure(result.data, result.examples)
    titles = [ax.get_title() for ax in fig.axes]
    (iters,) = [ax for ax, t in zip(fig.axes, titles, strict=True) if "against iterations" in t]
    (again,) = [ax for ax, t in zip(fig.axes, titles, strict=True) if "against restarts" in t]
    curves = result.data["models"]["tiny"]["curves"]
    assert list(iters.get_lines()[0].get_xdata()) == curves["iterations"]["count"]
    last = curves["restarts"]["psnr"][-1]
    assert list(again.get_lines()[0].get_ydata()) == [v - last for v in curves["restarts"]["psnr"]]
    assert f"last {last:.2f} dB" in again.get_legend().get_texts()[0].get_text()
    assert iters.get_xscale() == "log"


def test_the_extra_restart_is_what_one_more_restart_gives():
    den = tiny_model()
    x = images(1, 16)[0][1].repeat(3, 1, 1, 1)
    (y,) = add_noise(x, SIGMA, 0)
    two = APGD(den, SIGMA, eps=8 / 255, steps=6, restarts=2, seed=3)
    two(y, x)
    one = APGD(den, SIGMA, eps=8 / 255, steps=6, restarts=1, seed=3)
    one(y, x)
    nxt = auto.NextRestart(den, SIGMA, eps=8 / 255, steps=6, seed=3, first=1)
    nxt(y, x)
    assert torch.equal(nxt.record.loss[0], two.record.loss[1])
    assert torch.equal(one.record.loss[0], two.record.loss[0])
    # what the audit's evidence records for two restarts is the two-restart run's best
    config = AuditConfig(steps=6, budgets=(8 / 255,), transfer=False, seed=3)
    ev = auto.Evidence(den, config)
    atk = auto.attack("pgd", den, 8 / 255, config)
    ev.seen("pgd", 8 / 255, atk, x, y, atk(y, x))
    assert ev.values["restarts:2"] == pytest.approx(two.record.best_psnr[1].tolist())


def test_pgd_is_the_old_fast_path():
    den = tiny_model()
    config = AuditConfig(attack="pgd", steps=3, budgets=(8 / 255,), transfer=False)
    assert config.steps == 3 and AuditConfig(attack="pgd").steps == 10
    assert AuditConfig().steps == auto.STEPS["auto"] == 25 and AuditConfig().attack == "auto"
    ims = images()
    data = run_audit([AuditModel("tiny", den, 1, "t")], ims, config, progress=False).data
    m = data["models"]["tiny"]
    assert "apgd" not in m["per_image"] and "worst" not in m and "curves" not in m
    from ts_defense.app.audit.run import _noisy  # the audit's noise: seeded per image and tile

    noisy = [_noisy(x, config, name, 0) for name, x in ims]
    pgd = make_attack("pgd", den, SIGMA, eps=8 / 255, steps=3, seed=0)
    pairs = zip(ims, noisy, strict=True)
    expected = [psnr(x, denoise(den, pgd(y, x), SIGMA))[0] for (_, x), y in pairs]
    assert m["per_image"]["pgd"]["8"]["psnr"] == pytest.approx(expected, abs=1e-9)
    md = to_markdown(data)
    assert "Iteration and restart curves: run --attack auto" in md and "**worst case**" not in md
    # the cheap checks still run on the fast path
    assert [c["name"] for c in m["checks"]] == [
        "budget curve monotone",
        "random perturbation far weaker",
    ]


def test_a_failed_check_comes_first_in_the_report_and_on_the_terminal(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 20)).astype(np.uint8)).save(folder / "a.png")
    out = tmp_path / "out"
    argv = ["evaluate", "test_audit_auto:rounded", "--images", str(folder), "--out", str(out)]
    assert main([*argv, "--steps", "12", "--eps", "8", "--no-transfer"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "--attack auto: estimated run time about" in printed[0]
    assert printed[1].startswith("rounded: FAIL random perturbation far weaker: random drop")
    data = json.loads((out / "audit.json").read_text())
    assert data["failures"] == [printed[1]]
    md = (out / "audit.md").read_text().splitlines()
    assert md[2].startswith("**Read first: 1 sanity check(s) FAILED")
    assert md[4] == f"- {printed[1]}"


def test_nan_outputs_are_named_and_never_averaged(tmp_path):
    model = AuditModel("bright", Denoiser(Bright(), predicts="clean"), 1, "t")
    gen = torch.Generator().manual_seed(0)
    ims = [
        ("dark", 0.3 * torch.rand(1, 1, 24, 24, generator=gen)),
        ("light", 0.4 + 0.6 * torch.rand(1, 1, 24, 24, generator=gen)),
    ]
    config = AuditConfig(steps=12, budgets=(8 / 255,), transfer=False)
    result = run_audit([model], ims, config, progress=False)
    data = result.data
    (line,) = data["nonfinite"]
    assert line.startswith("bright: NaN/Inf output on light under: no attack; apgd 8;")
    m = data["models"]["bright"]
    assert m["nonfinite"]["apgd 8"] == ["light"] and "dark" not in str(m["nonfinite"])
    assert math.isnan(m["worst"]["mean"]) and math.isfinite(m["worst"]["psnr"][0])
    assert m["worst"]["mean_finite"] == pytest.approx(m["worst"]["psnr"][0])
    # the checks are over the finite image, and say so
    assert all("over 1 of 2 images" in c["detail"] for c in m["checks"])
    assert m["curves"]["iterations"]["psnr"][-1] == m["per_image"]["apgd"]["8"]["psnr"][0]
    write_report(result, tmp_path / "out")
    md = (tmp_path / "out" / "audit.md").read_text()
    assert md.index(line) < md.index("## Leaderboard")
    assert "NaN (" in md and "over the finite images" in md
    text = (tmp_path / "out" / "audit.json").read_text()
    assert "NaN" not in text.replace("NaN/Inf", "")  # strict JSON: NaN becomes null


@pytest.mark.parametrize(
    "options, message",
    [
        (["--steps", "0"], "--steps must be finite and > 0, got 0"),
        (["--restarts", "-1"], "--restarts must be finite and > 0, got -1"),
        (["--members"], "--members: the ensemble has no member; give one or more of apgd-linf"),
        (["--members", "pgd"], "unknown --members entry 'pgd'; choose one of 'apgd-linf'"),
        (["--attack", "fgsm"], "unknown --attack 'fgsm'; choose one of 'auto', 'pgd'"),
        (["--attack", "pgd", "--restarts", "2"], "--restarts: PGD has one random start"),
        (["--attack", "pgd", "--members", "transfer"], "--members: the ensemble is --attack auto"),
        (["--members", "transfer", "--no-transfer"], "--members: the ensemble has no member"),
        (["--eps", "0.03"], "--eps 0.03 looks like image units"),
        (["--obsatk-eps", "0.02"], "--obsatk-eps 0.02 looks like image units"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(options, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["evaluate", "test_audit:tiny_model", "--out", str(out), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ts-defense: error: {message}"), err
    assert not out.exists()


def test_an_ensemble_left_empty_for_a_colour_model_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", "test_audit_auto:colour", "--members", "transfer", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ts-defense: error: --members: the ensemble has no member for a colour model (only "
        "transfer, whose public sources are grey)"
    ]


def test_the_python_options_are_checked_the_same_way():
    for bad, message in [
        ({"members": ()}, "members: the ensemble has no member"),
        ({"steps": 0}, "steps must be finite and > 0"),
        ({"restarts": 0}, "restarts must be finite and > 0"),
        ({"attack": "apgd"}, "unknown attack 'apgd'"),
    ]:
        with pytest.raises(ValueError, match=message):
            AuditConfig(**bad)
    assert not AuditConfig(members=("apgd-linf",)).transfer  # transfer is a member or not run


def test_iteration_counts_double_up_to_the_steps_run():
    assert auto.iteration_counts(100) == [10, 25, 50, 100]
    assert auto.iteration_counts(30) == [10, 25, 30]
    assert auto.iteration_counts(300) == [10, 25, 50, 100, 200, 300]
    assert auto.iteration_counts(400) == [10, 25, 50, 100, 200, 400]
    assert auto.iteration_counts(5) == [5]


def test_a_long_estimate_names_the_options_that_bring_it_down(monkeypatch):
    from ts_defense.app.audit import run as audit_run

    model = AuditModel("tiny", tiny_model(), 1, "test")
    photos = images(8, 64)
    monkeypatch.setattr(audit_run, "_pass_seconds", lambda den, x, sigma: 1e-4)  # a slow CPU
    text = audit_run.estimate_text([model], photos, AuditConfig(steps=100))  # --steps 100
    total = float(re.search(r"--attack auto: estimated run time about (\d+) s", text).group(1))
    assert total > audit_run.LONG_RUN and "over 10 minutes; to bring it down:" in text
    options = dict(re.findall(r"(--[a-z-]+(?: \w+)?) \(about (\d+) s", text))
    assert set(options) == {"--steps 25", "--attack pgd", "--no-transfer"}, text
    fast = audit_run.estimate_text([model], photos, AuditConfig(attack="pgd"))
    fast_total = float(re.search(r"estimated run time about (\d+) s", fast).group(1))
    assert float(options["--attack pgd"]) == fast_total  # the fast path's own estimate
    assert float(options["--steps 25"]) < total and total > 10 * fast_total  # auto's price
