import json

import numpy as np
import pytest

from ts_defense.app.cli import main

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


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err  # progress bars may come first
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("ts-defense: error:")
    return err.strip().splitlines()[-1]


def test_sixteen_bit_images_are_scaled_by_their_bit_depth(tmp_path, capsys, shared_data):
    from PIL import Image

    from ts_defense.data import bundled_images, read_image

    grey = bundled_images(("camera",), size=32)[0, 0].numpy()
    path = tmp_path / "gray16.png"
    Image.fromarray((grey * 65535).round().astype(np.uint16)).save(path)
    assert np.asarray(Image.open(path)).dtype == np.uint16
    np.testing.assert_allclose(read_image(path)[0, 0].numpy(), grey, atol=1e-4)
    out = tmp_path / "out"
    argv = ["attack", "--images", str(path), "--attacks", "fgsm", "--size", "16"]
    assert main([*argv, "--out", str(out), "--data", str(shared_data)]) == 0
    psnr = json.loads((out / "attack.json").read_text())["attacks"]["fgsm"]["psnr_clean"]
    assert 20 < psnr[0] < 45, psnr  # was -91.6: 16-bit values read as 8-bit ones


def test_hostile_files_and_numbers_are_one_line_errors(tmp_path, capsys, shared_data, monkeypatch):
    from PIL import Image

    base = ["--out", str(tmp_path / "o")]
    small = ["--attacks", "fgsm", "--size", "12", "--data", str(shared_data)]
    huge = "9" * 400
    for argv, name in (
        (["sampler-report", "--window", huge], "window"),
        (["attack", "--steps", huge, *small[2:], "--images", "camera"], "steps"),
        (["demo", "--steps", huge], "steps"),
    ):
        assert main(argv + base) == 2, argv
        assert name in _one_error_line(capsys)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert main(["attack", "--images", str(junk), *small, *base]) == 2
    assert "cannot read image file" in _one_error_line(capsys)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["attack", "--images", str(text), *small, *base]) == 2
    line = _one_error_line(capsys)
    assert line.endswith(f"cannot read image file {text}: not an image Pillow recognises"), line
    floats = tmp_path / "hdr.tif"
    Image.fromarray(np.full((16, 16), 1.5, np.float32)).save(floats)
    assert main(["attack", "--images", str(floats), *small, *base]) == 2
    assert f"image file {floats}: float pixels must lie in [0, 1]" in _one_error_line(capsys)
    bomb = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: over twice the limit
    assert main(["attack", "--images", str(bomb), *small, *base]) == 2
    assert "DecompressionBombError" in _one_error_line(capsys)


def test_an_animation_is_its_first_frame_with_a_one_line_warning(tmp_path, capsys, shared_data):
    from PIL import Image

    frames = tmp_path / "anim.gif"
    first = Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1)))
    first.save(frames, save_all=True, append_images=[Image.new("L", (16, 16), v) for v in (9, 99)])
    out = tmp_path / "out"
    argv = ["attack", "--images", str(frames), "--attacks", "fgsm", "--size", "16", "--out"]
    assert main([*argv, str(out), "--data", str(shared_data)]) == 0
    warning = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert warning == [
        f"ts-defense: warning: {frames} is an animation of 3 frames: reading its first frame only"
    ]
    assert json.loads((out / "attack.json").read_text())["image_shape"] == [1, 1, 16, 16]


def test_flag_prefixes_are_not_accepted(tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["sampler-report", "--win", "4", "--out", str(tmp_path)])
    assert stop.value.code == 2
