"""Labels of another dataset onto a run's label set: built-in aliases, then a user's label map.

Utterances whose label maps to nothing are counted and left out, never scored.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from deepmsi.data.records import Utterance
from deepmsi.errors import DataError
from deepmsi.labels import LabelSet


def read_label_map(path: str | Path) -> dict[str, str | None]:
    """A label map file: JSON ``{"old": "new"}`` or CSV rows ``old,new`` (header optional).

    An empty/null target means "leave this label out".
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "label map not found")
    text = path.read_text()
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(path, f"invalid JSON: {err.msg} (line {err.lineno})") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise DataError(path, 'label map JSON must be an object {"old": "new"}')
        bad = [k for k, v in data.items() if v is not None and not isinstance(v, str)]
        if bad:
            raise DataError(path, f"label map targets must be strings or null (see {bad[0]!r})")
        return {
            k.strip().lower(): (v.strip().lower() or None) if v else None for k, v in data.items()
        }
    mapping: dict[str, str | None] = {}
    for n, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise DataError(path, f"line {n}: expected 'old,new', got {len(row)} fields")
        old, new = (c.strip().lower() for c in row)
        if n == 1 and (old, new) in {("old", "new"), ("from", "to"), ("source", "target")}:
            continue
        mapping[old] = new or None
    return mapping


def map_labels(
    records: Sequence[Utterance],
    run_labels: LabelSet,
    label_map: Mapping[str, str | None] | None = None,
) -> tuple[list[Utterance], list[int], dict[str, int]]:
    """(kept records, their class indices in ``run_labels``, counts of left-out labels)."""
    label_map = {k.strip().lower(): v for k, v in (label_map or {}).items()}
    kept: list[Utterance] = []
    targets: list[int] = []
    left: Counter[str] = Counter()
    for r in records:
        if r.label is None:
            continue
        raw = r.label.strip().lower()
        name = label_map[raw] if raw in label_map else raw
        canonical = run_labels.canonical(name) if name else None
        if canonical is None:
            left[raw] += 1
            continue
        kept.append(r)
        targets.append(run_labels.names.index(canonical))
    return kept, targets, dict(left)
