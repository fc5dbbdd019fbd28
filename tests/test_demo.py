import dataclasses
import json
import statistics

import pytest

from ts_defense.app import demo, hardening
from ts_defense.app.cli import main
from ts_defense.app.demo import ROBUST, DemoConfig, format_table, recommendation, run_demo


def test_demo_writes_a_complete_report(tmp_path):
    cfg = DemoConfig(
        steps=6, depth=3, features=8, budgets=(0.0, 8 / 255), attack_steps=2, bm3d=False
    )
    results = run_demo(tmp_path, cfg, progress=False)
    for name in ("report.md", "report.json", "transfer.json", "transfer.md", "sampler.md"):
        assert (tmp_path / name).stat().st_size > 100
    for png in ("psnr_vs_budget.png", "transfer.png", "deviations.png", "strip.png", "sampler.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "report.json").read_text())
    assert set(saved["budget_curves"]) == {"gaussian", "ts", ROBUST}
    assert set(results["train_seconds"]) == {"gaussian", "ts", ROBUST}
    for curve in results["budget_curves"].values():
        clean, attacked = curve["psnr"]
        assert attacked < clean  # even two PGD steps at 8/255 hurt
        assert 0 < curve["gain"][-1] < 10
    assert set(results["family_psnr"]["ts"]) == {"gaussian", "radial", "local", "structured"}
    assert saved["detector_auc"] == results["detector_auc"]
    for auc in results["detector_auc"].values():
        assert auc["global"] > 0.5  # the attack adds power: its global deviation stands out
    table = format_table(results)
    assert "| gaussian |" in table and "eps 8/255" in table
    report = (tmp_path / "report.md").read_text()
    assert "![transfer](transfer.png)" in report and "| ts |" in report
    # the recommendation quotes this run's numbers
    curves = results["budget_curves"]
    white = curves[ROBUST]["psnr"][-1] - curves["gaussian"]["psnr"][-1]
    assert f"{white:+.2f} dB under white-box PGD 8/255" in recommendation(results)
    assert recommendation(results) in report


def test_demo_command_rejects_bad_steps(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_demo_recipes_are_validated(tmp_path):
    with pytest.raises(ValueError, match="recipe"):
        run_demo(
            tmp_path,
            DemoConfig(steps=1, depth=3, features=4, recipes=("gaussian", "pgd")),
            progress=False,
        )


# -- the main job: hardening the public DnCNN-S-25 ----------------------------------------------
@dataclasses.dataclass(frozen=True)
class TinyHardening(hardening.HardeningConfig):
    """The main job at a size that runs in seconds (the real DnCNN-17, tiny pictures)."""

    steps: int = 2
    batch_size: int = 2
    patch_size: int = 16
    train_size: int = 32
    test_size: int = 32
    attack_steps: int = 1


def strict_json(path):
    def refuse(name):
        raise ValueError(f"{name} in strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    out = tmp_path_factory.mktemp("hardening")
    return out, hardening.run_hardening(out, TinyHardening(seeds=(0, 1)), progress=False)


def test_main_job_writes_report_json_and_plots(hardened):
    out, results = hardened
    for png in ("psnr_before_after.png", "paired_gain.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    saved = strict_json(out / "report.json")
    assert saved["headline"] == results["headline"]
    assert saved["config"]["seeds"] == [0, 1] and set(saved["runs"]) == {"0", "1"}
    report = (out / "report.md").read_text().splitlines()
    opening = report[: len(results["headline"])]
    assert opening == results["headline"] and report[len(opening)] == ""
    body = "\n".join(report)
    assert "![PSNR before and after](psnr_before_after.png)" in body
    assert "| free-hat - gaussian |" in body and "| camera (mean over seeds) |" in body


def test_main_job_measures_before_and_after_on_the_same_inputs(hardened):
    _, results = hardened
    before = results["before"]
    assert len(before["clean"]) == len(results["pictures"]["test"]) == 2
    for row in [before, *(r[k] for r in results["runs"].values() for k in r)]:
        for clean, attacked in zip(row["clean"], row["white_box"], strict=True):
            assert attacked < clean  # PGD 8/255 hurts every model on every picture
        assert all(0 < g < 10 for g in row["gain"])
        assert all(20 < p < 40 for p in row["transfer"])
    # the paired difference is robust minus baseline on the same picture, seed by seed
    diff = results["paired"]["white_box"]
    for seed, run in results["runs"].items():
        robust, base = run["free-hat"]["white_box"], run["gaussian"]["white_box"]
        want = [a - b for a, b in zip(robust, base, strict=True)]
        assert diff["per_seed_and_picture"][seed] == pytest.approx(want)
    assert diff["spread_over"] == "seeds"
    assert diff["spread"] == pytest.approx(statistics.stdev(diff["per_seed"]))
    assert diff["mean"] == pytest.approx(statistics.fmean(diff["per_seed"]))
    gain = results["headline"][-2]
    assert f"{diff['mean']:+.2f} ± {diff['spread']:.2f} dB under white-box PGD 8/255" in gain


DEFAULT_STEPS = hardening.HardeningConfig().steps


def paired_result(white_box, seeds=2, steps=DEFAULT_STEPS):
    """A results record with the given per-seed (or, one seed, per-picture) white-box gains."""
    per = {str(s): [v, v] for s, v in enumerate(white_box)} if seeds > 1 else {"0": white_box}
    results = {
        "config": {**dataclasses.asdict(hardening.HardeningConfig()), "steps": steps},
        "runs": {},
    }
    results["config"]["seeds"] = list(range(seeds))
    rows = {}
    for s, values in per.items():
        base = {c: [25.0] * len(values) for c in hardening.CONDITIONS}
        robust = {c: [25.0 + v for v in values] for c in hardening.CONDITIONS}
        rows[s] = {"gaussian": base, "free-hat": robust}
    results["runs"] = rows
    results["paired"] = hardening.paired(results)
    results["clear"] = hardening.is_clear(results["paired"]["white_box"])
    results["before"] = {"clean": [25.0] * len(next(iter(per.values())))}
    results["train_seconds"] = {
        s: {"gaussian": {"cpu": 10.0}, "free-hat": {"cpu": 11.0}} for s in per
    }
    return results


def test_a_gain_within_its_spread_says_so_first_and_names_the_budget_that_shows_it():
    clear = paired_result([0.30, 0.26])
    assert clear["clear"]
    lines = hardening.headline(clear)
    assert len(lines) == 3 and lines[0].startswith("Ran:")
    assert "+0.28 ± 0.03 dB under white-box" in lines[1] and "1.10x" in lines[2]
    for gains, steps in (([0.30, -0.05], 5), ([0.02, 0.50], DEFAULT_STEPS)):
        muddy = paired_result(gains, steps=steps)
        assert not muddy["clear"]
        first = hardening.headline(muddy)[0]
        assert first.startswith("Not clear at this budget")
        shorter = steps < DEFAULT_STEPS  # then the default budget shows it
        assert (f"--steps {DEFAULT_STEPS} --seeds 0 1" in first) == shorter
        assert ("BENCHMARKS.md" in first) == (not shorter)
    one_seed = paired_result([0.3, 0.1], seeds=1)
    assert one_seed["paired"]["white_box"]["spread_over"] == "pictures"
    assert "sd over 2 test pictures, one seed" in hardening.headline(one_seed)[-2]


@pytest.mark.parametrize(
    "options, said",
    [
        ({"test": ("camera", "coins")}, "different pictures"),
        ({"train": ("cat",)}, "unknown train picture"),
        ({"seeds": (1, 1)}, "seeds must differ"),
        ({"seeds": ()}, "seeds"),
        ({"steps": 0}, "steps"),
        ({"source": "dncnn-s-25"}, "source"),
        ({"robust": "pgd"}, "robust recipe"),
    ],
)
def test_main_job_options_are_checked_before_any_work(options, said):
    with pytest.raises(ValueError, match=said):
        hardening.HardeningConfig(**options)


def test_demo_command_runs_the_main_job_with_steps_seeds_and_out(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hardening, "HardeningConfig", TinyHardening)
    assert main(["demo", "--out", str(tmp_path), "--steps", "1", "--seeds", "3"]) == 0
    printed = capsys.readouterr().out
    saved = strict_json(tmp_path / "report.json")
    assert saved["config"]["steps"] == 1 and saved["config"]["seeds"] == [3]
    assert printed.startswith(saved["headline"][0])
    assert f"report written to {tmp_path.resolve()}/report.md" in printed
    assert "sd over 2 test pictures, one seed" in saved["headline"][-2]


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--sigma", "15"], "--sigma 15"),
        (["--no-bm3d"], "--no-bm3d is for --from-scratch"),
        (["--from-scratch", "--seeds", "0", "1"], "--from-scratch takes one --seed"),
    ],
)
def test_demo_options_of_the_other_mode_are_refused(argv, said, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), *argv]) == 2
    assert said in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class TinyScratch(DemoConfig):
    depth: int = 3
    features: int = 8
    budgets: tuple[float, ...] = (0.0, 8 / 255)
    attack_steps: int = 2


@pytest.mark.slow  # three small networks trained and attacked: about 8 s on two idle cores
def test_demo_from_scratch_still_runs_the_toy_comparison(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DemoConfig", TinyScratch)
    argv = ["demo", "--from-scratch", "--steps", "3", "--seed", "2", "--no-bm3d"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["config"]["steps"] == 3 and saved["config"]["seed"] == 2
    assert saved["config"]["bm3d"] is False
    assert set(saved["budget_curves"]) == {"gaussian", "ts", ROBUST}
    assert "| gaussian |" in capsys.readouterr().out
