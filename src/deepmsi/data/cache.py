"""The prepared feature cache: frozen-encoder features and face frames, one file per utterance.

Layout of a cache folder::

    manifest.json       encoders (name, version, width), frames, image size, sample rate, label
                        set, dataset: what the features mean, so two caches are never mixed
    utterances.jsonl    one utterance record per line, the ones with features, in dataset order
    problems.jsonl      items left out (``--on-error skip``), with the reason
    items/<key>.npz     text [Dt] f32, audio [Da] f32, frames [F,S,S,3] u8 (each optional),
                        faces (how many of the F frames had a detected face)

Items are written to a temporary name and renamed, so a killed ``prepare`` never leaves a
half-written entry, and a re-run skips every item already there.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from deepmsi.atomic import atomic_path, atomic_write_text
from deepmsi.data.records import Utterance
from deepmsi.errors import DataError, Problem
from deepmsi.labels import LabelSet

MANIFEST = "manifest.json"
UTTERANCES = "utterances.jsonl"
PROBLEMS = "problems.jsonl"
ITEMS = "items"
FORMAT_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Features:
    """What the cache holds for one utterance; a modality the utterance lacks is None."""

    text: np.ndarray | None  # [Dt] float32
    audio: np.ndarray | None  # [Da] float32
    frames: np.ndarray | None  # [F, S, S, 3] uint8 RGB face crops
    faces: int = 0  # frames with a detected face (the rest are centre crops)


def item_key(utt_id: str) -> str:
    """A file name for an utterance id: readable, and distinct even when ids differ only in
    characters a file name cannot hold."""
    safe = _UNSAFE.sub("_", utt_id)[:80]
    if safe == utt_id:
        return safe
    return f"{safe}-{hashlib.sha1(utt_id.encode()).hexdigest()[:10]}"


def record_to_dict(utt: Utterance) -> dict[str, Any]:
    d = {f.name: getattr(utt, f.name) for f in fields(utt)}
    for key in ("video", "audio"):
        d[key] = None if d[key] is None else str(d[key])
    return d


def record_from_dict(d: dict[str, Any]) -> Utterance:
    d = dict(d)
    for key in ("video", "audio"):
        d[key] = None if d.get(key) is None else Path(d[key])
    return Utterance(**d)


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failed write (a full disk, a read-only folder) into a one-line ``DataError``
    naming the file; the atomic write has already removed its temporary file."""
    try:
        yield
    except OSError as err:
        raise DataError(path, f"cannot write: {err.strerror or err}") from None


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with writing(path):
        atomic_write_text(path, text)


def write_json(path: Path, data: dict) -> None:
    with writing(path):
        atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


class FeatureCache:
    """A cache folder written by ``deepmsi.prepare()``; read-only use: ``records`` and ``load``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise DataError(self.path, f"not a feature cache (no {MANIFEST}); run deepmsi prepare")

    @cached_property
    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except ValueError as err:
            raise DataError(self.path / MANIFEST, f"malformed manifest: {err}") from None

    @property
    def labels(self) -> LabelSet:
        return LabelSet.from_dict(self.manifest["labels"])

    @property
    def text_dim(self) -> int | None:
        return (self.manifest.get("text_encoder") or {}).get("dim")

    @property
    def audio_dim(self) -> int | None:
        return (self.manifest.get("audio_encoder") or {}).get("dim")

    @cached_property
    def _records(self) -> list[Utterance]:
        path = self.path / UTTERANCES
        if not path.is_file():
            raise DataError(self.path, f"incomplete cache (no {UTTERANCES}); run deepmsi prepare")
        records = []
        with path.open(encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(record_from_dict(json.loads(line)))
                except (TypeError, ValueError, AttributeError) as err:
                    raise DataError(path, f"line {n}: malformed utterance record: {err}") from None
        return records

    def records(self, split: str | None = None) -> list[Utterance]:
        """Utterances with features, in dataset order (those of one split when given)."""
        return [r for r in self._records if split is None or r.split == split]

    def problems(self) -> list[Problem]:
        path = self.path / PROBLEMS
        if not path.is_file():
            return []
        with path.open(encoding="utf-8") as f:
            return [Problem(**json.loads(line)) for line in f if line.strip()]

    def item_path(self, utt_id: str) -> Path:
        return self.path / ITEMS / f"{item_key(utt_id)}.npz"

    def load(self, utt_id: str) -> Features:
        path = self.item_path(utt_id)
        try:
            with np.load(path) as z:
                return Features(
                    text=z["text"] if "text" in z else None,
                    audio=z["audio"] if "audio" in z else None,
                    frames=z["frames"] if "frames" in z else None,
                    faces=int(z["faces"]) if "faces" in z else 0,
                )
        except FileNotFoundError:
            raise DataError(path, f"no cached features for {utt_id!r}") from None
        except (OSError, ValueError, KeyError) as err:
            raise DataError(path, f"unreadable cache entry: {err}") from None


def write_item(path: Path, features: Features) -> None:
    """Write one entry atomically (temporary file, then rename); a failed write (a full disk)
    raises a ``DataError`` naming the entry and leaves nothing under its name."""
    arrays: dict[str, np.ndarray] = {"faces": np.asarray(features.faces, np.int32)}
    for name in ("text", "audio", "frames"):
        value = getattr(features, name)
        if value is not None:
            arrays[name] = value
    with writing(path), atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, allow_pickle=False, **arrays)  # a file object: a path would get ".npz"
