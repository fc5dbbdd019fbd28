import json

from ts_defense.cli import main

SMALL = ["--images", "camera", "coins", "--size", "32", "--steps", "2"]


def test_attack_command_reports_every_attack_and_the_worst_case(tmp_path, capsys, shared_data):
    out = tmp_path / "atk"
    args = ["attack", "--attacks", "pgd", "fgsm", "--out", str(out), "--data", str(shared_data)]
    assert main(args + SMALL) == 0
    printed = capsys.readouterr().out
    assert "| pgd |" in printed and "worst case per image" in printed and "| noisy |" in printed
    rep = json.loads((out / "attack.json").read_text())
    worst = rep["worst_case"]["psnr_attacked"]
    for name in ("pgd", "fgsm"):
        assert all(
            w <= p for w, p in zip(worst, rep["attacks"][name]["psnr_attacked"], strict=True)
        )
    assert rep["attacks"]["pgd"]["mean"]["psnr_drop"] > 1.0


def test_transfer_command_writes_table_and_heatmap(tmp_path, capsys, shared_data):
    out = tmp_path / "trf"
    args = ["transfer", "--models", "dncnn-s-25", "kair-dncnn-25", "bm3d", "--out", str(out)]
    assert main(args + ["--data", str(shared_data)] + SMALL) == 0
    assert "| kair-dncnn-25 |" in capsys.readouterr().out
    data = json.loads((out / "transfer.json").read_text())
    assert data["sources"] == ["dncnn-s-25", "kair-dncnn-25"]
    assert data["targets"][-1] == "bm3d"
    assert (out / "transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PSNR drop" in (out / "transfer.md").read_text()


def test_attack_command_bad_input(tmp_path, capsys, shared_data):
    base = ["attack", "--out", str(tmp_path), "--data", str(shared_data)] + SMALL
    assert main(base + ["--eps", "-1"]) == 2
    assert "eps" in capsys.readouterr().err
    assert main(base + ["--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(base + ["--attacks", "cw"]) == 2
    assert "unknown attack" in capsys.readouterr().err
