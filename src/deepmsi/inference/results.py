"""What a prediction returns, and its table, JSON and CSV forms.

A ``Prediction`` is one input (a clip, an audio file, a transcript, or a long video cut at its
subtitle cues) and its ``Segment`` rows. The CLI, the web service and the timeline plot all read
these dataclasses, so every output shows the same numbers.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Prediction", "Segment", "format_csv", "format_json", "format_table"]


@dataclass(frozen=True)
class Segment:
    """One classified stretch of an input.

    ``start``/``end`` are seconds into the media (None: the whole file, or text alone).
    ``probabilities`` maps every class name, in label-set order, to its probability.
    ``modalities`` lists what the model saw; ``contributions[m]`` is how much the predicted
    class's probability drops when modality ``m`` is hidden from the model (negative: ``m``
    argued against it). Empty when only one modality was present. ``transcribed``: ``text``
    was written by a speech recogniser, not given with the input.
    """

    start: float | None
    end: float | None
    text: str | None
    label: str
    probabilities: dict[str, float]
    modalities: tuple[str, ...]
    contributions: dict[str, float] = field(default_factory=dict)
    transcribed: bool = False

    @property
    def text_source(self) -> str | None:
        """Where ``text`` came from: "asr" (machine-made), "given", or None (no text)."""
        if not self.text:
            return None
        return "asr" if self.transcribed else "given"

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    def to_dict(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "text_source": self.text_source,
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities),
            "modalities": list(self.modalities),
            "contributions": dict(self.contributions),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Segment:
        return cls(
            d["start"],
            d["end"],
            d["text"],
            d["label"],
            dict(d["probabilities"]),
            tuple(d["modalities"]),
            dict(d.get("contributions", {})),
            d.get("text_source") == "asr",
        )


@dataclass(frozen=True)
class Prediction:
    """An input's segments and the overall emotion.

    ``labels`` is the class order (K names). With several segments the overall probabilities are
    the duration-weighted mean of the segments' (equal weights when segments have no times).
    ``asr`` names the speech recogniser that wrote the transcript (None: none was machine-made).
    """

    source: str
    labels: tuple[str, ...]
    segments: list[Segment]
    asr: str | None = None

    @property
    def transcript(self) -> str | None:
        """The segments' texts in order (None when no segment has text)."""
        texts = [s.text for s in self.segments if s.text]
        return " ".join(texts) if texts else None

    @property
    def probabilities(self) -> dict[str, float]:
        if len(self.segments) == 1:
            return dict(self.segments[0].probabilities)
        weights = [_duration(s) for s in self.segments]
        if not all(w > 0 for w in weights):
            weights = [1.0] * len(self.segments)
        total = sum(weights)
        return {
            name: sum(
                w * s.probabilities[name] for w, s in zip(weights, self.segments, strict=True)
            )
            / total
            for name in self.labels
        }

    @property
    def label(self) -> str:
        probs = self.probabilities
        return max(self.labels, key=lambda name: probs[name])

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "label": self.label,
            "probabilities": self.probabilities,
            "labels": list(self.labels),
            "transcript": self.transcript,
            "transcript_source": _source(self.segments),
            "asr": self.asr,
            "segments": [s.to_dict() for s in self.segments],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Prediction:
        segments = [Segment.from_dict(s) for s in d["segments"]]
        return cls(d["source"], tuple(d["labels"]), segments, d.get("asr"))


def _source(segments: Sequence[Segment]) -> str | None:
    """ "asr", "given", "mixed" (some of each) or None (no text) for a prediction's text."""
    kinds = {s.text_source for s in segments} - {None}
    if len(kinds) > 1:
        return "mixed"
    return kinds.pop() if kinds else None


def _duration(s: Segment) -> float:
    if s.start is None or s.end is None:
        return 0.0
    return max(0.0, s.end - s.start)


def _time(t: float | None) -> str:
    return "" if t is None else f"{t:.2f}"


def format_json(predictions: Sequence[Prediction]) -> str:
    """A JSON list with one object per input (``Prediction.to_dict``)."""
    return json.dumps([p.to_dict() for p in predictions], indent=2)


def format_csv(predictions: Sequence[Prediction]) -> str:
    """One CSV row per segment: source, segment, start, end, text, text_source (as in the JSON:
    "asr" machine-made, "given", empty without text), label, one column per class, modalities
    (``t+a+v``)."""
    labels = _common_labels(predictions)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["source", "segment", "start", "end", "text", "text_source", "label", *labels]
    writer.writerow([*header, "modalities"])
    for p in predictions:
        for i, s in enumerate(p.segments):
            writer.writerow(
                [p.source, i, _time(s.start), _time(s.end), s.text or "", s.text_source or ""]
                + [s.label]
                + [f"{s.probabilities[name]:.6f}" for name in labels]
                + ["+".join(s.modalities)]
            )
    return buf.getvalue()


def format_table(predictions: Sequence[Prediction], *, text_width: int = 32) -> str:
    """A fixed-width table for the terminal: one row per segment, probabilities to 3 places."""
    labels = _common_labels(predictions)
    header = ["source", "start", "end", "label", *labels, "used", "text"]
    rows = []
    for p in predictions:
        for s in p.segments:
            text = s.text or ""
            if len(text) > text_width:
                text = text[: text_width - 1] + "…"
            rows.append(
                [p.source, _time(s.start), _time(s.end), s.label]
                + [f"{s.probabilities[name]:.3f}" for name in labels]
                + ["".join(m[0] for m in s.modalities), text]
            )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    numeric = {1, 2, *range(4, 4 + len(labels))}

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    for p in predictions:
        if len(p.segments) > 1:
            out.append(f"{p.source}: overall {p.label} ({p.probabilities[p.label]:.3f})")
        if p.asr:
            out.append(f"{p.source}: transcript machine-made by {p.asr} (speech recognition)")
    return "\n".join(out)


def _common_labels(predictions: Sequence[Prediction]) -> tuple[str, ...]:
    if not predictions:
        return ()
    labels = predictions[0].labels
    if any(p.labels != labels for p in predictions):
        raise ValueError("predictions use different label sets")
    return labels
