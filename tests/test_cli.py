import json

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
