"""``KIND:PATH`` dataset specs (``meld:DIR``, ``iemocap:PATH``, ``folder:DIR``) and dispatch."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from deepmsi.data.common import ProblemLog
from deepmsi.data.records import Dataset
from deepmsi.errors import ConfigError, DataError
from deepmsi.labels import LabelSet, get_label_set

# kind -> (module under deepmsi.data, reader function); imported lazily to keep startup light.
READERS = {
    "meld": ("meld", "read_meld"),
    "iemocap": ("iemocap", "read_iemocap"),
    "folder": ("folder", "read_folder"),
}
USAGE = "meld:DIR, iemocap:PATH (IEMOCAP_full_release or cosmic_iemocap.pkl) or folder:DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``KIND:PATH`` spec."""

    kind: str
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """Split ``KIND:PATH``; an unknown kind or a missing colon is a ``ConfigError``."""
    if isinstance(spec, DatasetSpec):
        return spec
    kind, sep, path = str(spec).partition(":")
    kind = kind.strip().lower()
    if not sep or not path:
        raise ConfigError(f"dataset spec {spec!r} is not KIND:PATH; use {USAGE}")
    if kind not in READERS:
        raise ConfigError(f"unknown dataset kind {kind!r} in {spec!r}; use {USAGE}")
    return DatasetSpec(kind, Path(path).expanduser())


def resolve_labels(labels: LabelSet | str | None) -> LabelSet | None:
    if labels is None or isinstance(labels, LabelSet):
        return labels
    try:
        return get_label_set(labels)
    except KeyError as err:
        raise ConfigError(str(err.args[0])) from None


def load_dataset(
    spec: str | DatasetSpec,
    *,
    on_error: str = "raise",
    labels: LabelSet | str | None = None,
) -> Dataset:
    """Read a dataset into one utterance table.

    ``on_error="raise"`` stops at the first bad item with a one-line ``DataError`` naming the
    file; ``"skip"`` leaves bad items out and lists them in ``Dataset.problems``. ``labels``
    restricts the label set (a ``LabelSet`` or a built-in name such as ``"meld7"``); labels
    outside it are then problems ("unknown label"). Media are not decoded here: see
    ``deepmsi.data.media`` and ``deepmsi.data.inventory``.
    """
    parsed = parse_spec(spec)
    problems = ProblemLog(on_error)
    label_set = resolve_labels(labels)
    if not parsed.path.exists():
        raise DataError(parsed.path, "no such file or directory")
    module, func = READERS[parsed.kind]
    reader = getattr(importlib.import_module(f"deepmsi.data.{module}"), func)
    # Absolute media paths keep records valid whatever the working directory of later steps.
    return reader(parsed.path.resolve(), problems=problems, labels=label_set)
