"""The emotion timeline of a long input: class probabilities over time, as a PNG."""

from __future__ import annotations

import logging
from pathlib import Path

from deepmsi.inference.results import Prediction

__all__ = ["plot_timeline"]

log = logging.getLogger(__name__)


def plot_timeline(prediction: Prediction, path: str | Path, *, title: str | None = None) -> Path:
    """Draw ``prediction``'s segments to ``path`` (PNG) and return the path.

    Top strip: each segment's span coloured by its predicted class. Main panel: one line per class
    through its probability at each segment's midpoint, over grey bands marking the segments'
    spans. Segments without times (text alone) are laid out one unit apart.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in servers and CI
    import matplotlib.pyplot as plt

    path = Path(path)
    labels = prediction.labels
    spans = _spans(prediction)
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(labels)}
    fig, (strip, ax) = plt.subplots(
        2, 1, figsize=(11, 4.8), sharex=True, gridspec_kw={"height_ratios": [1, 6], "hspace": 0.08}
    )
    try:
        for (start, end), seg in zip(spans, prediction.segments, strict=True):
            strip.axvspan(start, end, color=colours[seg.label], alpha=0.85, lw=0)
            ax.axvspan(start, end, color="0.93", lw=0, zorder=0)
        strip.set_yticks([])
        strip.set_ylabel("label", rotation=0, ha="right", va="center")

        mids = [(start + end) / 2 for start, end in spans]
        for name in labels:
            ys = [seg.probabilities[name] for seg in prediction.segments]
            ax.plot(mids, ys, color=colours[name], lw=1.8, marker="o", ms=3.5, label=name)
        ax.set_ylim(0, 1)
        ax.set_xlim(spans[0][0], max(end for _, end in spans))
        timed = prediction.segments[0].start is not None
        ax.set_xlabel("time (s)" if timed else "segment")
        ax.set_ylabel("probability")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        strip.set_title(
            title or f"{prediction.source}: overall {prediction.label}", loc="left", fontsize=11
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    log.info("wrote timeline %s (%d segments)", path, len(prediction.segments))
    return path


def _spans(prediction: Prediction) -> list[tuple[float, float]]:
    """(start, end) in seconds per segment; index-based when a segment has no times."""
    segs = prediction.segments
    if not segs:
        raise ValueError(f"{prediction.source}: no segments to plot")
    spans = []
    for s in segs:
        if s.start is None or s.end is None:
            return [(float(i), float(i + 1)) for i in range(len(segs))]
        spans.append((float(s.start), float(max(s.end, s.start + 1e-3))))
    return spans
