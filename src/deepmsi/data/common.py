"""Helpers every reader shares: the raise-or-skip problem log, CSV tables, deterministic splits."""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from deepmsi.data.records import Utterance
from deepmsi.errors import ConfigError, DataError, Problem

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")

# Spellings of the standard splits found in the wild (labels.csv files, pickles).
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
    "testing": "test",
}


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    return on_error


class ProblemLog:
    """Collects what is wrong with the input: raises at the first problem, or records and goes on.

    ``on_error="raise"`` turns the first problem into a one-line ``DataError`` naming the file;
    ``on_error="skip"`` keeps a ``Problem`` per skipped item so it can be listed and counted.
    """

    def __init__(self, on_error: str = "raise") -> None:
        self.on_error = check_on_error(on_error)
        self.problems: list[Problem] = []

    def add(self, file: str | Path, error: str, id: str | None = None) -> None:
        if self.on_error == "raise":
            raise DataError(file, error)
        log.debug("skipping %s: %s", file, error)
        self.problems.append(Problem(id, str(file), error))


@dataclass(frozen=True)
class Table:
    """Rows of a CSV file as dicts; ``line(i)`` is the 1-based file line of row ``i``."""

    path: Path
    columns: tuple[str, ...]
    rows: list[dict[str, str]]
    lines: list[int]
    ragged: dict[int, int] = field(default_factory=dict)  # line -> fields, when over the header's


def parse_csv(path: Path, text: str, required: Iterable[str]) -> Table:
    """Parse CSV text, raising ``DataError`` naming the file when a required column is missing."""
    reader = csv.DictReader(text.splitlines(keepends=True))
    columns = tuple(c.strip() for c in (reader.fieldnames or ()))
    missing = [c for c in required if c not in columns]
    if missing:
        have = ", ".join(columns) if columns else "no header"
        raise DataError(path, f"missing column(s) {', '.join(missing)} (has: {have})")
    rows, lines, ragged = [], [], {}
    try:
        for raw in reader:
            rows.append({k.strip(): (v or "").strip() for k, v in raw.items() if k is not None})
            lines.append(reader.line_num)
            if raw.get(None):  # more fields than the header: DictReader keeps them under None
                ragged[reader.line_num] = len(columns) + len(raw[None])
    except csv.Error as err:
        raise DataError(path, f"malformed CSV at line {reader.line_num}: {err}") from None
    return Table(path, columns, rows, lines, ragged)


def has_undecodable(text: str) -> bool:
    """Whether ``text`` (decoded with ``errors='surrogateescape'``) held non-UTF-8 bytes."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def stable_hash(key: str) -> int:
    """A hash that is the same on every machine and Python run (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def rank_groups(groups: Iterable[str]) -> list[str]:
    """Distinct groups in a fixed pseudo-random order (by ``stable_hash``), for held-out splits.

    The order does not depend on file order, and adding a group moves the others little.
    """
    return sorted(set(groups), key=lambda g: (stable_hash(g), g))


def held_out_groups(groups: Iterable[str], fraction: float, minimum: int = 1) -> list[str]:
    """Deterministically pick ``round(fraction * n)`` (at least ``minimum``) groups to hold out."""
    ranked = rank_groups(groups)
    return ranked[: min(max(minimum, round(fraction * len(ranked))), len(ranked))]


def normalise_split(value: str) -> str | None:
    return SPLIT_ALIASES.get(value.strip().lower())


def drop_duplicate_ids(
    utterances: list[Utterance], problems: ProblemLog, file: str | Path
) -> list[Utterance]:
    """Keep the first utterance of each id; later ones are problems ("duplicate utterance id")."""
    seen: set[str] = set()
    kept = []
    for utt in utterances:
        if utt.id in seen:
            problems.add(file, f"duplicate utterance id {utt.id!r}", utt.id)
            continue
        seen.add(utt.id)
        kept.append(utt)
    return kept
