"""Errors a user can act on: one line that names the file and the problem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DeepMSIError(Exception):
    """Base for user-facing errors; the CLI prints ``str(err)`` and exits with code 2."""


class ConfigError(DeepMSIError, ValueError):
    """A bad option or config override (unknown key, wrong type, value out of range)."""


class DataError(DeepMSIError):
    """A file that cannot be used: missing, unreadable, malformed, or with unknown labels."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input, kept in a list when running with ``on_error='skip'``."""

    id: str | None
    file: str
    error: str

    def to_dict(self) -> dict:
        return {"id": self.id, "file": self.file, "error": self.error}
