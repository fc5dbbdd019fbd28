"""Fuzzing the command line (issue 7): random and invalid argv give exit code 0, or 2 with a
one-line ``ts-defense: error: ...`` message — never a traceback. argparse's own SystemExit(2)
for unknown flags and malformed values is the same contract."""

import io
from contextlib import redirect_stderr, redirect_stdout

import pytest
from fuzz_support import CASES
from hypothesis import given
from hypothesis import strategies as st

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
    argv = [command]
    for flag in flags:
        argv += [flag, draw(FLAGS[flag])]
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
        (["demo", "--out", "/dev/null/x"], "Not a directory"),
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
