"""Report folders (``ts_defense.app.output``, issues 27.1 and 29.3): refused before anything is
computed when they cannot take a report, written as one unit (the old report or the new one,
whole, after a kill at any moment), a failed write keeps what was computed, strict JSON."""

import json
import os
import signal
from pathlib import Path

import pytest

from ts_defense.app import output
from ts_defense.app.output import ReportWriteError, check_out, json_text, write_set

OLD = {"r.json": '{"run": "old"}\n', "r.md": "old table\n", "r.png": b"old picture"}
NEW = {"r.json": '{"run": "new"}\n', "r.md": "new table\n", "r.png": b"new picture"}


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def as_bytes(files: dict) -> dict[str, bytes]:
    return {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


class Figure:
    """Saves itself like a matplotlib Figure; ``fail`` runs while it writes (a fault)."""

    def __init__(self, data: bytes, fail=None):
        self.data, self.fail = data, fail

    def savefig(self, f, **options):
        f.write(self.data[:3])
        if self.fail is not None:
            self.fail()
        f.write(self.data[3:])


def test_a_set_replaces_the_old_one_and_keeps_other_reports_files(tmp_path):
    out = tmp_path / "rep"
    write_set(out, OLD)
    (out / "other.md").write_text("another command's report")
    paths = write_set(out, {**NEW, "r.png": Figure(b"new picture")})
    assert contents(out) == {**as_bytes(NEW), "other.md": b"another command's report"}
    assert paths["r.md"] == out / "r.md" and not leftovers(out)


def test_a_failed_write_keeps_the_old_report_and_saves_the_new_one_elsewhere(tmp_path):
    out = tmp_path / "rep"
    write_set(out, OLD)

    def disk_full():
        raise OSError(28, "No space left on device")

    with pytest.raises(ReportWriteError) as err:
        write_set(out, {**NEW, "r.png": Figure(b"new picture", disk_full)}, what="audit")
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message
    fallback = Path(message.split("what was computed is in ")[1].split(" (not ")[0])
    assert contents(fallback) == as_bytes({"r.json": NEW["r.json"], "r.md": NEW["r.md"]})
    assert "(not r.png)" in message
    assert contents(out) == as_bytes(OLD) and not leftovers(out)


def _killed_while_writing(out: Path, files: dict, monkeypatch=None) -> None:
    """Write ``files`` into ``out`` in a forked child that is SIGKILLed by a fault in them."""
    pid = os.fork()
    if pid == 0:  # the child: killed inside write_set, never returns
        try:
            if monkeypatch is not None:
                monkeypatch()
            write_set(out, files)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("at", ["first file", "second file", "before the swap", "after the swap"])
def test_a_kill_at_any_moment_leaves_the_old_report_or_the_new_one_whole(tmp_path, at):
    out = tmp_path / "rep"
    write_set(out, OLD)
    files = dict(NEW)
    patch = None
    if at in ("first file", "second file"):
        name = "r.json" if at == "first file" else "r.png"
        files[name] = Figure(as_bytes(NEW)[name], kill)
    else:
        exchange = output._exchange

        def patch():
            def killing(a, b):
                if at == "before the swap":
                    kill()
                exchange(a, b)
                kill()

            output._exchange = killing

    _killed_while_writing(out, files, patch)
    expected = as_bytes(NEW) if at == "after the swap" else as_bytes(OLD)
    assert contents(out) == expected
    write_set(out, NEW)  # the next write removes what the killed one left
    assert contents(out) == as_bytes(NEW) and not leftovers(out)


def test_without_an_atomic_swap_a_kill_between_renames_leaves_the_old_report_aside(tmp_path):
    out = tmp_path / "rep"
    write_set(out, OLD)
    rename = os.rename

    def patch():
        output._exchange = lambda a, b: False
        calls = []

        def killing(a, b):
            calls.append(a)
            rename(a, b)
            if len(calls) == 1:  # the old report moved aside, the new one not yet in place
                kill()

        os.rename = killing

    _killed_while_writing(out, NEW, patch)
    assert not out.exists()
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith(".rep.old-")]
    assert contents(aside) == as_bytes(OLD)
    output._tidy(out)  # what the next write (or check) does first
    assert contents(out) == as_bytes(OLD) and not leftovers(out)


@pytest.mark.parametrize(
    "make, path, message",
    [
        (None, "", "give a folder name"),
        (None, "   ", "give a folder name"),
        (lambda t: (t / "f").write_text("x"), "f", "exists and is not a folder"),
        (lambda t: (t / "f").write_text("x"), "f/sub", "is a file, not a folder"),
        (lambda t: (t / "d" / "inner").mkdir(parents=True), "d", "holds sub-folders"),
        (lambda t: (t / "l").symlink_to(t / "d", target_is_directory=True), "l", "is a link"),
        (None, ".", "the current folder"),
        (None, "..", "the current folder or holds it"),
        (None, "/proc/ts-defense-report", "cannot write in /proc"),
        (None, str(output.PACKAGE / "reports"), "inside the package's own source folder"),
        (None, str(output.PACKAGE.parent / "adapters" / "x"), "package's own source folder"),
    ],
)
def test_output_folders_that_cannot_take_a_report_are_refused_by_name(
    tmp_path, monkeypatch, make, path, message
):
    monkeypatch.chdir(tmp_path)
    if make is not None:
        make(tmp_path)
    with pytest.raises(ValueError) as err:
        check_out(path, "--out")
    text = str(err.value)
    assert text.startswith("--out ") and message in text and "\n" not in text, text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_a_folder_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="cannot write in"):
            check_out(locked / "rep", "--out")
    finally:
        locked.chmod(0o700)


def test_a_new_nested_folder_and_an_empty_one_are_accepted(tmp_path):
    assert check_out(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    (tmp_path / "empty").mkdir()
    write_set(tmp_path / "empty", NEW)
    write_set(tmp_path / "a" / "b", NEW)
    assert contents(tmp_path / "a" / "b") == as_bytes(NEW)
    with pytest.raises(ValueError, match="plain names"):
        write_set(tmp_path / "c", {"../escape.md": "x"})


def test_json_is_strict():
    text = json_text({"psnr": [float("inf"), 1.5], "mean": float("nan"), "n": 3})
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "psnr": [None, 1.5],
        "mean": None,
        "n": 3,
    }


def test_a_replaced_folder_keeps_its_permissions(tmp_path):
    out = tmp_path / "rep"
    write_set(out, OLD)
    out.chmod(0o750)
    write_set(out, NEW)
    assert out.stat().st_mode & 0o777 == 0o750
