import json

import pytest

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
