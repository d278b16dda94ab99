"""Atomic file writes: a reader, or a process killed mid-write, never sees a half-written file.

A write goes to a temporary sibling ``.<name>.tmp<pid>`` and is renamed onto ``<name>`` when it
is complete. A process killed with SIGKILL cannot remove its temporary file, so ``prepare`` and
``train`` call :func:`remove_stale_temporaries` on their folders before they write anything.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_TEMPORARY = re.compile(r"^\..+\.tmp(\d+)$")


def temporary_path(path: str | Path) -> Path:
    """The temporary sibling this process writes ``path`` to."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to; renamed onto ``path`` when the block ends
    without error, removed otherwise."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has not started writing here yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files (``.<name>.tmp<pid>``) that killed writers left directly in
    ``folder``; those of a process still running are kept. Returns the paths removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match is None or not path.is_file() or _alive(int(match.group(1))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("%s: removed %d temporary file(s) left by a killed run", folder, len(removed))
    return removed
