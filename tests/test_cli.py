import json
from pathlib import Path

import pytest
import torch

from ts_defense.app.cli import main


def test_sampler_report_writes_statistics_and_plot(tmp_path, capsys):
    assert main(["sampler-report", "--out", str(tmp_path), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "| radial |" in printed and "Laurent" in printed
    stats = json.loads((tmp_path / "sampler.json").read_text())["stats"]
    assert abs(stats["gaussian"]["mean_d"]) < 5 * stats["theory"]["std_d"]
    assert stats["radial"]["outside_typical"] == 1.0
    assert stats["local"]["atypical_windows"] == 0.25
    assert abs(stats["structured"]["mean_d"]) < 1e-5
    png = (tmp_path / "sampler.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_bad_option_is_a_clear_error(tmp_path, capsys):
    assert (
        main(["sampler-report", "--out", str(tmp_path), "--eps-in", "0.4", "--eps-out", "0.1"]) == 2
    )
    assert "band" in capsys.readouterr().err


def test_budgets_are_printed_as_typed_and_signs_get_a_sign_message(tmp_path, capsys):
    base = ["--out", str(tmp_path / "o")]
    for argv, message in [
        (["attack", "--eps", "-8"], "--eps -8 must be > 0 (grey levels, 0..255)"),
        (["evaluate", "dncnn-s-25", "--eps", "4", "-2"], "--eps -2 must be > 0"),
        (["transfer", "--sigma", "nan"], "--sigma nan must be a finite number of grey levels"),
        (["evaluate", "dncnn-s-25", "--obsatk-eps", "300"], "--obsatk-eps 300 is outside"),
    ]:
        assert main(argv + base) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ts-defense: error: {message}"), lines


def test_python_budgets_with_the_wrong_sign_get_a_sign_message():
    from ts_defense.training.adversarial import AdversarialConfig

    with pytest.raises(ValueError, match="must be >= 0: a budget is a size") as err:
        AdversarialConfig(eps=-0.03)
    assert "image units" not in str(err.value)


def test_help_is_plain_text_and_says_where_data_is_looked_up():
    from ts_defense.app.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    for p in [parser, *sub.choices.values()]:
        text = " ".join(p.format_help().split())
        assert "``" not in text and "`" not in text, p.prog
        assert "(default: None)" not in text, p.prog
    data = " ".join(sub.choices["evaluate"].format_help().split())
    assert "$TS_DEFENSE_CACHE" in data and "$TS_DEFENSE_DATA" in data


def test_a_missing_weights_path_says_no_such_file(tmp_path, capsys):
    missing = tmp_path / "runs" / "dncnn.pt"
    assert main(["evaluate", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"ts-defense: error: no such file: {missing}\n"
    assert main(["evaluate", "no-such-model", "--out", str(tmp_path / "o")]) == 2
    assert "named model (dncnn-s-15" in capsys.readouterr().err


class Saturating(torch.nn.Module):
    """Outputs white whatever it gets: on a white image, an exact estimate (MSE 0)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, y):
        return torch.ones_like(y) + self.w * y


def saturating():
    """For ``test_cli:saturating`` (module:function)."""
    return Saturating()


FAST = ["--attack", "pgd", "--steps", "1", "--eps", "8", "--obsatk-eps", "4", "--no-transfer"]


@pytest.fixture
def white(tmp_path):
    from PIL import Image

    folder = tmp_path / "white"
    folder.mkdir()
    Image.new("L", (16, 16), 255).save(folder / "white.png")
    return folder


def strict(path):
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path}: {c}"))


def test_a_perfect_estimate_scores_the_psnr_ceiling_and_the_json_stays_strict(tmp_path, white):
    from ts_defense.evaluation.metrics import PSNR_CEILING

    out = tmp_path / "out"
    argv = ["evaluate", "test_cli:saturating", "--images", str(white), "--out", str(out)]
    assert main(argv + FAST) == 0
    mean = strict(out / "audit.json")["models"]["saturating"]["mean"]
    assert mean["psnr_clean"] == PSNR_CEILING == 100.0  # was Infinity, not JSON


def test_a_failed_report_write_keeps_the_audit_elsewhere_and_says_where(
    tmp_path, white, capsys, monkeypatch
):
    from ts_defense.app import output

    def disk_full(out, files):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "_replace_folder", disk_full)
    out = tmp_path / "out"
    argv = ["evaluate", "test_cli:saturating", "--images", str(white), "--out", str(out)]
    assert main(argv + FAST) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"ts-defense: error: could not write the audit report to {out} ")
    kept = Path(line.split("what was computed is in ")[1])
    assert strict(kept / "audit.json")["images"] == ["white.png"]
    assert sorted(p.name for p in kept.iterdir()) == ["audit.json", "audit.md", "audit.png"]
    assert not out.exists()
