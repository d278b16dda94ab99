"""Progress: tqdm on a terminal, a few plain lines in a log file or pipe, silence when off."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from deepmsi.progress import is_terminal, progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_tqdm_bar():
    stream = FakeTerminal()
    assert list(progress(range(50), desc="work", unit="clip", stream=stream)) == list(range(50))
    text = stream.getvalue()
    assert "\r" in text and "work" in text and "50/50" in text


def test_log_file_gets_one_line_per_ten_percent():
    stream = io.StringIO()
    assert not is_terminal(stream)
    assert sum(progress(range(1000), desc="prepare", unit="utt", stream=stream)) == 499500
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 10
    assert lines[0].startswith("prepare: 10% (100/1000 utt")
    assert lines[-1].startswith("prepare: 100% (1000/1000 utt")
    assert "left" in lines[0] and "left" not in lines[-1]


def test_manual_updates_postfix_and_a_short_loop():
    stream = io.StringIO()
    bar = progress(total=3, desc="files", unit="file", stream=stream)
    for _ in range(3):
        bar.update()
        bar.set_postfix(loss="0.5")
    bar.close()
    lines = stream.getvalue().splitlines()
    # 3 items: each passes at least one tenth; the end is reported once
    assert [line.split(" (")[0] for line in lines] == ["files: 33%", "files: 67%", "files: 100%"]
    assert lines[-1].endswith("loss=0.5")


def test_unknown_total_reports_the_end_only():
    stream = io.StringIO()
    list(progress(iter(range(7)), desc="probe", unit="file", stream=stream))
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]
    assert stream.getvalue().startswith("probe: done (7 file")


@pytest.mark.parametrize("kwargs", [{"enabled": False}, {"lines": False}])
def test_silent_off_a_terminal(kwargs):
    stream = io.StringIO()
    assert len(list(progress(range(20), stream=stream, **kwargs))) == 20
    assert stream.getvalue() == ""


def test_disabled_on_a_terminal_is_silent():
    stream = FakeTerminal()
    list(progress(range(20), stream=stream, enabled=False))
    assert stream.getvalue() == ""


def test_a_real_pipe_gets_lines(tmp_path):
    """stderr redirected to a pipe (CI, ``make demo 2>&1 | tee log``): plain lines only."""
    code = (
        "from deepmsi.progress import progress\n"
        "for _ in progress(range(200), desc='steps', unit='step'): pass\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    lines = done.stderr.splitlines()
    assert len(lines) == 10 and "\r" not in done.stderr
    assert lines[-1].startswith("steps: 100% (200/200 step")


def test_every_progress_bar_goes_through_this_module():
    import ast
    from pathlib import Path

    import deepmsi

    src = Path(deepmsi.__file__).parent
    users = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] == "tqdm" for n in names):
                users.append(path.relative_to(src).as_posix())
    assert users == ["progress.py"]
