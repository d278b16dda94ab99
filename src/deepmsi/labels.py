"""Label sets: explicit, ordered emotion vocabularies so every class index is unambiguous."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of emotion names plus the spellings datasets use for them.

    ``names[i]`` is the label of class index ``i``. ``aliases`` maps other spellings (lower-case)
    to a canonical name, so "hap", "happy" and "Happiness" all resolve to the same class.
    """

    name: str
    names: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"label set {self.name!r} has duplicate names: {self.names}")
        bad = {a: n for a, n in self.aliases.items() if n not in self.names}
        if bad:
            raise ValueError(f"label set {self.name!r}: aliases point to unknown names {bad}")

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and self.canonical(label) is not None

    def canonical(self, label: str) -> str | None:
        """The canonical name for a raw label, or None when it is not in this set."""
        key = label.strip().lower()
        if key in self.names:
            return key
        return self.aliases.get(key)

    def index(self, label: str) -> int:
        """Class index of a raw label; KeyError names the label set when it is unknown."""
        name = self.canonical(label)
        if name is None:
            raise KeyError(f"{label!r} is not a label of {self.name} ({', '.join(self.names)})")
        return self.names.index(name)

    def to_dict(self) -> dict:
        return {"name": self.name, "names": list(self.names), "aliases": dict(self.aliases)}

    @classmethod
    def from_dict(cls, d: Mapping) -> LabelSet:
        return cls(d["name"], tuple(d["names"]), dict(d.get("aliases", {})))

    @classmethod
    def from_labels(cls, labels: Iterable[str], name: str = "custom") -> LabelSet:
        """The distinct labels seen, sorted: for datasets with their own vocabulary."""
        return cls(name, tuple(sorted({label.strip().lower() for label in labels})))


# Community order (COSMIC, DialogueRNN): hap, sad, neu, ang, exc, fru.
IEMOCAP6 = LabelSet(
    "iemocap6",
    ("happy", "sad", "neutral", "angry", "excited", "frustrated"),
    {
        "hap": "happy",
        "happiness": "happy",
        "sadness": "sad",
        "neu": "neutral",
        "ang": "angry",
        "anger": "angry",
        "exc": "excited",
        "fru": "frustrated",
        "frustration": "frustrated",
    },
)

# MELD's official order.
MELD7 = LabelSet(
    "meld7",
    ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
    {
        "neu": "neutral",
        "surprised": "surprise",
        "sur": "surprise",
        "fearful": "fear",
        "fea": "fear",
        "sad": "sadness",
        "happy": "joy",
        "hap": "joy",
        "disgusted": "disgust",
        "dis": "disgust",
        "angry": "anger",
        "ang": "anger",
    },
)

# RAVDESS's emotion codes 01..08 in order.
RAVDESS8 = LabelSet(
    "ravdess8",
    ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
    {
        "fear": "fearful",
        "surprise": "surprised",
        "anger": "angry",
        "sadness": "sad",
        "joy": "happy",
        "disgusted": "disgust",
    },
)

LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in (IEMOCAP6, MELD7, RAVDESS8)}


def get_label_set(name: str) -> LabelSet:
    """A built-in label set by name (``iemocap6``, ``meld7``, ``ravdess8``)."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None
