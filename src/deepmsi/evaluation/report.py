"""The report of a run on one split: per-class scores from the confusion matrix, a table, a plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

REPORT_FILE = "report.json"
CONFUSION_FILE = "confusion.png"


@dataclass(frozen=True)
class Report:
    """Scores of a run on one split; fractions in [0, 1] (the printed table shows percent).

    ``per_class[label]`` has precision, recall, f1 and support; ``confusion`` is [K true, K
    predicted] counts in ``labels`` order; ``left_out`` counts utterances whose label is not in
    the run's label set (after ``label_map``), which are not scored. ``context`` says how the
    predictions were made: "none" (utterance by utterance, the paper's model), "online" (each
    turn read with the earlier turns of its dialogue) or "offline" (with the whole dialogue).
    ``precision`` is the video backbone's arithmetic ("fp32", or "bf16" when asked for).
    """

    labels: list[str]
    accuracy: float
    weighted_f1: float
    macro_f1: float
    per_class: dict[str, dict]
    confusion: list[list[int]]
    split: str
    utterances: int
    left_out: dict[str, int] = field(default_factory=dict)
    context: str = "none"
    precision: str = "fp32"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> Report:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def table(self) -> str:
        """Per-class and overall scores in percent with two decimals."""
        width = max(12, *(len(n) for n in self.labels))
        lines = [
            f"{'label':<{width}} {'precision':>9} {'recall':>9} {'F1':>9} {'support':>8}",
        ]
        for name in self.labels:
            s = self.per_class[name]
            lines.append(
                f"{name:<{width}} {100 * s['precision']:9.2f} {100 * s['recall']:9.2f} "
                f"{100 * s['f1']:9.2f} {s['support']:8d}"
            )
        lines += [
            "",
            f"{'accuracy':<{width}} {100 * self.accuracy:9.2f}",
            f"{'weighted F1':<{width}} {100 * self.weighted_f1:9.2f}",
            f"{'macro F1':<{width}} {100 * self.macro_f1:9.2f}",
            f"{'utterances':<{width}} {self.utterances:9d}  (split: {self.split})",
        ]
        if self.context != "none":
            how = "past turns only" if self.context == "online" else "whole dialogue"
            lines.append(f"dialogue context: {self.context} ({how}, within the split)")
        if self.precision != "fp32":
            lines.append(f"video backbone in {self.precision}")
        if self.left_out:
            dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.left_out.items()))
            lines.append(f"left out (label not in the run's set): {dropped}")
        return "\n".join(lines)

    def save(self, out: str | Path, *, plot: bool = True) -> Path:
        """Write ``report.json`` (and ``confusion.png``) into folder ``out``; returns the JSON."""
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / REPORT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        if plot:
            plot_confusion(self.confusion, self.labels, folder / CONFUSION_FILE, title=self.split)
        return path


def plot_confusion(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, *, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (colour and percent) with the counts underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(labels)
    size = 1.2 + 0.9 * k
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{100 * norm[i, j]:.0f}%\n({int(cm[i, j])})",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.55 else "black",
            )
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion ({title}), row-normalised" if title else "confusion, row-normalised")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
