"""The utterance table every reader produces, whatever the dataset layout on disk."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from deepmsi.errors import Problem
from deepmsi.labels import LabelSet

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Utterance:
    """One labelled utterance.

    ``video`` is a clip with frames (and usually its own audio track); ``audio`` is where the
    speech is read from: the clip itself, or a separate audio file. ``start``/``end`` (seconds)
    cut a segment out of a longer recording, e.g. an IEMOCAP dialogue video; None means the whole
    file. ``label`` is the canonical name in the dataset's label set (None when unlabelled).
    """

    id: str
    dialogue_id: str
    turn: int
    speaker: str
    text: str | None
    label: str | None
    split: str
    video: Path | None = None
    audio: Path | None = None
    start: float | None = None
    end: float | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """Which modalities this record points to ("text", "audio", "video")."""
        present = []
        if self.text:
            present.append("text")
        if self.audio is not None:
            present.append("audio")
        if self.video is not None:
            present.append("video")
        return tuple(present)

    @property
    def known_label(self) -> str:
        """The label, where only labelled utterances can arrive (``FeatureStore.records``)."""
        if self.label is None:
            raise ValueError(f"utterance {self.id!r} has no label")
        return self.label


@dataclass
class Dataset:
    """A labelled corpus: utterances in dialogue order, its label set, and what went wrong."""

    name: str
    labels: LabelSet
    utterances: list[Utterance]
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utterances)

    def split(self, name: str) -> list[Utterance]:
        return [u for u in self.utterances if u.split == name]

    @property
    def splits(self) -> list[str]:
        """Split names present, standard ones first."""
        seen = {u.split for u in self.utterances}
        return [s for s in SPLITS if s in seen] + sorted(seen - set(SPLITS))

    def label_counts(self, split: str | None = None) -> dict[str, int]:
        rows = self.utterances if split is None else self.split(split)
        counts = Counter(u.label for u in rows if u.label is not None)
        return {name: counts.get(name, 0) for name in self.labels.names}
