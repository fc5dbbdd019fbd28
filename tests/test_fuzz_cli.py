"""Fuzzing the command line (issue 7): random and invalid argv give exit code 0, or 2 with a
one-line ``ts-defense: error: ...`` message — never a traceback. argparse's own SystemExit(2)
for unknown flags and malformed values is the same contract.

The standing harness of issues 27 and 29: output paths for every subcommand (refused before
anything is computed), image files of every mode and size (read as Pillow converts them, or
refused naming the file), and report writes killed at any moment (the old report or the new
one, whole)."""

import io
import os
import signal
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from fuzz_support import CASES
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from test_hostile_inputs import png_declaring

from ts_defense.app.cli import main

NUMBERS = st.sampled_from(["0", "-1", "nan", "inf", "1e308", "25", "0.5", "abc", "", "3"])
FLAGS = {
    "--sigma": NUMBERS,
    "--eps": NUMBERS,
    "--rho": NUMBERS,
    "--steps": st.sampled_from(["0", "-3", "1", "1.5", "x"]),
    "--seed": st.sampled_from(["0", "-1", "99999999999999999999999", "x"]),
    "--size": st.sampled_from(["-1", "0", "1", "8", "12", "x"]),
    "--window": st.sampled_from(["0", "1", "8", "1000", "x"]),
    "--eps-in": NUMBERS,
    "--eps-out": NUMBERS,
    "--objective": st.sampled_from(["clean", "output", "noisy", "bogus"]),
    "--images": st.sampled_from(["camera", "bundled", "nope.png", "set12"]),
    "--attacks": st.sampled_from(["fgsm", "zzz", "pgd"]),
    "--attack": st.sampled_from(["fgsm", "zzz"]),
    "--model": st.sampled_from(["dncnn-s-25", "nope", "bm3d"]),
    "--models": st.sampled_from(["dncnn-s-25", "nope"]),
    "--bogus": st.just("1"),
}
COMMANDS = ["demo", "sampler-report", "attack", "transfer", "bogus"]


@st.composite
def argvs(draw):
    command = draw(st.sampled_from(COMMANDS))
    flags = draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=4, unique=True))
    if command == "demo":
        flags = [f for f in flags if f != "--steps"]
    argv = [command]
    for flag in flags:
        argv += [flag, draw(FLAGS[flag])]
    if command == "demo":  # its valid run takes minutes (test_demo's); here only its refusals
        argv += ["--steps", draw(st.sampled_from(["0", "-3", "1.5", "x", "9" * 30]))]
    # keep the valid runs small and quick: one tiny image, one step, one cheap attack
    if command in ("attack", "transfer"):
        defaults = {"--size": "12", "--steps": "1", "--images": "camera", "--attacks": "fgsm"}
        if command == "transfer":
            defaults = {**defaults, "--attack": "fgsm", "--models": "dncnn-s-25"}
            del defaults["--attacks"]
        for flag, value in defaults.items():
            if flag not in flags:
                argv += [flag, value]
    return argv


@given(argv=argvs())
def test_fuzz_cli(argv, tmp_path_factory, shared_data):
    CASES["cli.main"] += 1
    if argv[0] in COMMANDS[:4]:
        argv = [*argv, "--out", str(tmp_path_factory.mktemp("cli"))]
        if argv[0] in ("attack", "transfer"):
            argv += ["--data", str(shared_data)]
    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as stop:  # argparse: unknown flags, malformed numbers
        assert stop.code == 2, argv
        assert "error:" in stderr.getvalue()
        return
    err = stderr.getvalue()
    assert code in (0, 2), argv
    if code == 2:
        assert err.strip().splitlines()[-1].startswith("ts-defense: error: "), (argv, err)
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["attack", "--size", "-1"], "size must be finite and > 0"),
        (["demo", "--out", "/dev/null/x"], "--out /dev/null/x: /dev/null is a file, not a folder"),
        (
            ["transfer", "--models", "dncnn-s-25", "bm3d", "--size", "8", "--images", "camera"],
            "BM3D needs",
        ),
    ],
)
def test_cli_errors_found_by_fuzzing(argv, message, tmp_path, capsys, shared_data):
    if "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path), "--data", str(shared_data)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


# -- output paths: every subcommand checks --out before it computes (issues 27.1, 29.3) -------
SUBCOMMANDS = {
    "demo": [],
    "sampler-report": [],
    "attack": ["--attacks", "fgsm"],
    "transfer": ["--models", "dncnn-s-25", "kair-dncnn-25"],
    "evaluate": ["dncnn-s-25"],
    "compare": ["dncnn-s-25", "kair-dncnn-25"],
}
BAD_OUT = {  # how a bad --out is made in a fresh folder (the cwd) -> what the refusal says
    "empty": (lambda d: "", "give a folder name"),
    "blank": (lambda d: " ", "give a folder name"),
    "a file": (lambda d: _file(d / "afile"), "exists and is not a folder"),
    "under a file": (lambda d: _file(d / "afile") + "/report", "is a file, not a folder"),
    "the cwd": (lambda d: ".", "the current folder"),
    "above the cwd": (lambda d: "..", "the current folder or holds it"),
    "read-only tree": (lambda d: "/proc/self/report", "cannot write in"),
    "/dev/null": (lambda d: "/dev/null", "exists and is not a folder"),
    "package source": (lambda d: os.path.join(_package(), "reports"), "package's own source"),
    "holds folders": (lambda d: _folder(d / "reports" / "attack"), "holds sub-folders"),
}


def _file(path):
    path.write_text("the user's file")
    return str(path)


def _folder(path):
    path.mkdir(parents=True)
    return str(path.parent)


def _package():
    import ts_defense

    return os.path.dirname(ts_defense.__file__)


@given(command=st.sampled_from(sorted(SUBCOMMANDS)), bad=st.sampled_from(sorted(BAD_OUT)))
def test_fuzz_output_paths_are_refused_before_computing(
    command, bad, tmp_path_factory, shared_data
):
    import ts_defense.data

    CASES["cli.--out"] += 1
    cwd = tmp_path_factory.mktemp("cwd")
    make, message = BAD_OUT[bad]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        out = make(cwd)

        def computing(*args, **kwargs):
            raise AssertionError(f"{command} read images before checking --out {out!r}")

        patch.setattr(ts_defense.data, "_pixels", computing)  # every command reads images first
        stderr = io.StringIO()
        with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
            code = main([command, *SUBCOMMANDS[command], "--out", out, "--data", str(shared_data)]
                        if command not in ("demo", "sampler-report")
                        else [command, "--out", out])  # fmt: skip
    lines = stderr.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1, (command, bad, lines)
    assert lines[0].startswith("ts-defense: error: --out ") and message in lines[0], lines
    if bad in ("a file", "under a file"):
        assert (cwd / "afile").read_text() == "the user's file"


# -- image files of every mode and size (issue 29.1) -----------------------------------------
def _pixels(draw, h, w):
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


@st.composite
def image_files(draw, folder):
    """(path, how Pillow reads it: a mode to convert to, "16" or "float", or None: refused)."""
    h, w = draw(st.sampled_from([(1, 1), (1, 7), (5, 3), (16, 16), (33, 17)]))
    rgb = Image.fromarray(_pixels(draw, h, w))
    kind = draw(
        st.sampled_from(
            ["CMYK", "P", "LA", "RGBA", "1", "L", "RGB", "I;16", "I", "F", "F>1", "F nan", "anim",
             "pages", "declared huge", "torn", "text"]
        )
    )  # fmt: skip
    suffix = {"CMYK": ".jpg", "RGB": ".jpg", "I": ".tif", "pages": ".tif", "text": ".png"}
    path = folder / f"{kind.replace(' ', '_').replace('>', 'gt')}{suffix.get(kind, '.png')}"
    path = path.with_suffix(".tif") if kind.startswith("F") else path
    if kind in ("CMYK", "P", "LA", "RGBA", "1", "L", "RGB"):
        rgb.convert(kind).save(path)
        return path, {"LA": "L", "1": "L", "L": "L"}.get(kind, "RGB")
    if kind in ("I;16", "I"):
        deep = (np.asarray(rgb.convert("L"), dtype=np.int64) * 257).astype(
            np.uint16 if kind == "I;16" else np.int32
        )
        Image.fromarray(deep).save(path)
        return path, "16"
    if kind.startswith("F"):
        pixels = np.asarray(rgb.convert("L"), dtype=np.float32) / 255
        pixels.flat[draw(st.integers(0, pixels.size - 1))] = {"F": 0.5, "F>1": 1.01}.get(
            kind, np.nan
        )
        Image.fromarray(pixels).save(path)
        return path, "float" if kind == "F" else None
    if kind in ("anim", "pages"):
        frames = [rgb.convert("L"), Image.new("L", (w, h), 7), Image.new("L", (w, h), 200)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
        return path, "first frame"
    if kind == "declared huge":
        side = draw(st.sampled_from([20_000, 100_000, 2**31 - 1]))
        path.write_bytes(png_declaring(side, side))
        return path, None
    if kind == "torn":
        rgb.save(path)
        whole = path.read_bytes()  # cut inside the pixel data (IEND is the last 12 bytes)
        path.write_bytes(whole[: draw(st.integers(0, len(whole) - 13))])
        return path, "torn"  # refused, or (all its pixels there) read as Pillow reads it
    path.write_text("not an image")
    return path, None


@given(data=st.data())
def test_fuzz_image_files_are_read_as_pillow_converts_them_or_refused(data, tmp_path_factory):
    import warnings

    from ts_defense.data import read_image

    CASES["data.read_image"] += 1
    path, read_as = data.draw(image_files(tmp_path_factory.mktemp("img")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = read_image(path)
        except ValueError as err:
            message = str(err)
            assert "\n" not in message and str(path) in message, message
            assert read_as in (None, "torn"), (path, message)
            return
    assert read_as is not None, f"{path} was read, not refused"
    with Image.open(path) as im:
        h, w = im.height, im.width
        if read_as in ("L", "RGB", "torn"):
            expected = np.asarray(im.convert(read_as.replace("torn", "RGB")), np.float64) / 255
        elif read_as == "16":
            expected = np.asarray(im, dtype=np.float64) / 65535
        elif read_as == "float":
            expected = np.asarray(im, dtype=np.float64)
        else:
            expected = np.asarray(im.convert("L"), dtype=np.float64) / 255  # the first frame
    assert image.shape[0] == 1 and image.shape[2:] == (h, w) and image.shape[1] in (1, 3)
    got = image[0].permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-6)
    frames = [str(c.message) for c in caught if "animation" in str(c.message)]
    assert frames == ([f"{path} is an animation of 3 frames: reading its first frame only"]
                      if read_as == "first frame" else [])  # fmt: skip


# -- report writes killed at any moment (issue 29.3) -----------------------------------------
class _Killing:
    """A figure whose saving kills the process once ``after`` bytes are written."""

    def __init__(self, data, after):
        self.data, self.after = data, after

    def savefig(self, f, **options):
        f.write(self.data[: self.after])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow  # a fork per case: about 4 s
@given(
    old=st.booleans(),
    names=st.lists(st.sampled_from(["a.json", "a.md", "a.png", "b.png"]), min_size=1, unique=True),
    at=st.integers(0, 10),
    cut=st.integers(0, 5),
)
def test_fuzz_killed_report_writes_leave_the_old_report_or_the_new_one(
    old, names, at, cut, tmp_path_factory
):
    from ts_defense.app.output import write_set

    CASES["output.write_set killed"] += 1
    out = tmp_path_factory.mktemp("w") / "report"
    before = {n: f"old {n}".encode() for n in ["a.json", "a.md", "a.png"]}
    if old:
        write_set(out, before)
    new = {n: f"new {n} {at}".encode() for n in names}
    files = dict(new)
    victim = names[at % len(names)]
    files[victim] = _Killing(new[victim], cut)
    pid = os.fork()
    if pid == 0:
        try:
            write_set(out, files)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    if old:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    else:
        assert not out.exists()
    write_set(out, new)
    expected = {**(before if old else {}), **new}
    assert {p.name: p.read_bytes() for p in out.iterdir()} == expected
    assert [p.name for p in out.parent.iterdir()] == ["report"]  # nothing left beside it
