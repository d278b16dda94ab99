"""Scoring a trained run on a split of its own cache or on another labelled dataset.

The report holds true per-class precision/recall/F1 from the confusion matrix. Labels of another
dataset are mapped onto the run's label set (built-in aliases, then an optional ``label_map``);
utterances whose label maps to nothing are counted in ``left_out`` and never scored.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from deepmsi.checkpoint import Run, load_run
from deepmsi.data.records import Dataset, Utterance
from deepmsi.errors import ConfigError, DataError
from deepmsi.labels import LabelSet
from deepmsi.metrics import compute_metrics

log = logging.getLogger(__name__)

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
                j, i, f"{100 * norm[i, j]:.0f}%\n({int(cm[i, j])})",
                ha="center", va="center", fontsize=8,
                color="white" if norm[i, j] > 0.55 else "black",
            )  # fmt: skip
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
    kept, targets, left = [], [], Counter()
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


def _check_compatible(run: Run, cache) -> None:
    """A cache must hold features of the sizes (and encoders) the run was trained on."""
    cfg = run.model_config
    problems = []
    if "t" in cfg.modalities and cache.text_dim and cache.text_dim != cfg.text_dim:
        problems.append(f"text features are {cache.text_dim}-d, the run expects {cfg.text_dim}")
    if "a" in cfg.modalities and cache.audio_dim and cache.audio_dim != cfg.audio_dim:
        problems.append(f"audio features are {cache.audio_dim}-d, the run expects {cfg.audio_dim}")
    m = cache.manifest
    if (
        "v" in cfg.modalities
        and m.get("frames")
        and (m.get("frames"), m.get("image_size"))
        != (
            cfg.frames,
            cfg.image_size,
        )
    ):
        problems.append(
            f"frames are {m.get('frames')} x {m.get('image_size')} px, the run expects "
            f"{cfg.frames} x {cfg.image_size}"
        )
    for key in ("text_encoder", "audio_encoder"):
        ours, theirs = _encoder_id(run.cache_manifest, key), _encoder_id(m, key)
        if ours and theirs and ours != theirs:
            problems.append(f"{key} is {theirs}, the run was trained on {ours}")
    if problems:
        raise DataError(cache.path, "; ".join(problems))


def _encoder_id(manifest: Mapping, key: str) -> str | None:
    value = manifest.get(key) or (manifest.get("encoders") or {}).get(key.split("_")[0])
    if isinstance(value, Mapping):
        value = value.get("name") or value.get("id")
    return str(value) if value else None


def score(
    run: Run,
    store,
    records: Sequence[Utterance],
    *,
    split: str,
    label_map: Mapping[str, str | None] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Report:
    """Score ``records`` of a feature store (``deepmsi.training.FeatureStore``) with ``run``.

    A run with a dialogue-context head reads each dialogue made of ``records`` alone, so no
    other split's turns reach a prediction.
    """
    import torch

    from deepmsi.dialogue import context_probabilities
    from deepmsi.training import FeatureDataset, predict_dataset

    kept, targets, left_out = map_labels(records, run.labels, label_map)
    if left_out:
        log.warning(
            "left out %d utterances whose label is not in %s: %s",
            sum(left_out.values()), run.labels.name, left_out,
        )  # fmt: skip
    if not kept:
        raise DataError(store.cache.path, f"no utterance of split {split!r} has a scorable label")
    dataset = FeatureDataset(store, kept, run.model_config, targets=targets)
    device = next(run.model.parameters()).device
    with torch.inference_mode():
        if run.context is None:
            probs = predict_dataset(run.model, dataset, batch_size=batch_size, device=device,
                                    progress=progress).probs  # fmt: skip
        else:
            probs = context_probabilities(run.model, run.context, dataset, batch_size=batch_size,
                                          device=device, progress=progress)  # fmt: skip
    m = compute_metrics(dataset.targets, probs.argmax(axis=1), run.labels.names)
    return Report(**m.to_dict(), split=split, left_out=left_out, context=run.context_mode)


def prepare_for_run(run: Run, dataset: Dataset | str, cache_dir: str | Path):
    """Prepare a dataset with the encoders and options recorded in the run's cache manifest."""
    from deepmsi.data.cache import FeatureCache
    from deepmsi.preparation import PrepareOptions, prepare

    if isinstance(dataset, str):
        from deepmsi.data import load_dataset

        dataset = load_dataset(dataset, on_error="skip")
    options = PrepareOptions.from_manifest(run.cache_manifest)
    prepare(dataset, Path(cache_dir), options)
    return FeatureCache(Path(cache_dir))


def evaluate(
    run: Run | str | Path,
    data=None,
    split: str = "test",
    label_map: Mapping[str, str | None] | str | Path | None = None,
    *,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> Report:
    """Score a run on ``split`` of ``data`` and (with ``out``) write report.json + confusion.png.

    ``data``: None (the run's own cache), a ``FeatureCache`` or cache folder, or a labelled
    ``Dataset``/dataset spec (``meld:DIR``...), which is prepared first with the run's encoders
    into ``cache_dir`` (default ``out/cache``, else a temporary folder). ``split="all"`` scores
    every labelled utterance. ``label_map`` (a mapping or a JSON/CSV file) renames the data's
    labels onto the run's label set.
    """
    from deepmsi.data.cache import FeatureCache
    from deepmsi.training import FeatureStore

    if not isinstance(run, Run):
        run = load_run(run)
    if isinstance(label_map, (str, Path)):
        label_map = read_label_map(label_map)
    tmp = None
    if data is None:
        if not run.cache_path:
            raise ConfigError(f"{run.path}: run records no cache; pass a cache or dataset")
        cache = FeatureCache(Path(run.cache_path))
    elif isinstance(data, FeatureCache):
        cache = data
    elif isinstance(data, Dataset) or (isinstance(data, str) and _looks_like_spec(data)):
        if cache_dir is None:
            if out is not None:
                cache_dir = Path(out) / "cache"
            else:
                tmp = tempfile.TemporaryDirectory(prefix="deepmsi-eval-")
                cache_dir = tmp.name
        cache = prepare_for_run(run, data, cache_dir)
    else:
        cache = FeatureCache(Path(data))
    try:
        _check_compatible(run, cache)
        store = FeatureStore(cache)
        records = cache.records(None if split == "all" else split)
        if not records:
            raise DataError(cache.path, f"no utterances in split {split!r}")
        report = score(
            run, store, records, split=split, label_map=label_map,
            batch_size=batch_size, progress=progress,
        )  # fmt: skip
    finally:
        if tmp is not None:
            tmp.cleanup()
    if out is not None:
        report.save(out)
    return report


def _looks_like_spec(text: str) -> bool:
    from deepmsi.data.spec import READERS

    kind, sep, _ = text.partition(":")
    return bool(sep) and kind.strip().lower() in READERS
