"""Evaluation protocols: the dataset's own splits, or honest 10-fold cross-validation.

``standard``: train on ``train``, choose the epoch on ``dev``, score ``test`` once.

``kfold10`` (the authors' protocol, made honest): all labelled utterances are pooled and cut into
10 stratified folds. For fold i the model trains on the other nine folds minus an inner
validation slice, which alone chooses the epoch; fold i is only scored, with the chosen weights.
NOTE(paper): the authors report 10-fold utterance CV without saying how the epoch was chosen; an
epoch picked on the scored fold would leak it, so this protocol never looks at it while training.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepmsi.config import ModelConfig, TrainConfig
from deepmsi.data.dataset import FeatureStore
from deepmsi.errors import ConfigError
from deepmsi.evaluation.report import Report
from deepmsi.evaluation.scoring import score
from deepmsi.runs.card import OWN, evaluation_entry, refresh_card
from deepmsi.training.loop import TrainResult, train

log = logging.getLogger(__name__)

PROTOCOLS = ("standard", "kfold10")
SUMMARY_FILE = "protocol.json"
_KEYS = ("accuracy", "weighted_f1", "macro_f1")


@dataclass(frozen=True)
class FoldResult:
    """One trained run and its score on its held-out part (the test split or a test fold)."""

    fold: int
    run_dir: Path
    best_epoch: int
    report: Report
    train_ids: list[str]
    dev_ids: list[str]
    test_ids: list[str]

    def to_dict(self) -> dict:
        return {
            "fold": self.fold,
            "run": str(self.run_dir),
            "best_epoch": self.best_epoch,
            "sizes": {
                "train": len(self.train_ids),
                "dev": len(self.dev_ids),
                "test": len(self.test_ids),
            },
            "report": self.report.to_dict(),
        }


@dataclass(frozen=True)
class ProtocolResult:
    """Per-fold reports plus mean and sample standard deviation (ddof=1) of each score."""

    protocol: str
    folds: list[FoldResult]
    mean: dict[str, float]
    std: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "mean": self.mean,
            "std": self.std,
            "folds": [f.to_dict() for f in self.folds],
        }

    def table(self) -> str:
        """Scores per fold and mean ± std, in percent."""
        lines = [f"{'fold':>6} {'accuracy':>9} {'wF1':>9} {'macroF1':>9} {'n':>6} {'epoch':>6}"]
        for f in self.folds:
            r = f.report
            lines.append(
                f"{f.fold:>6} {100 * r.accuracy:9.2f} {100 * r.weighted_f1:9.2f} "
                f"{100 * r.macro_f1:9.2f} {r.utterances:6d} {f.best_epoch:6d}"
            )
        lines.append(
            f"{'mean':>6} "
            + " ".join(f"{100 * self.mean[k]:6.2f}±{100 * self.std[k]:.2f}" for k in _KEYS)
        )
        return "\n".join(lines)


def _summarise(name: str, folds: list[FoldResult]) -> ProtocolResult:
    values = {k: np.array([getattr(f.report, k) for f in folds]) for k in _KEYS}
    mean = {k: float(v.mean()) for k, v in values.items()}
    std = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()}
    return ProtocolResult(name, folds, mean, std)


def _fit_and_score(
    store: FeatureStore,
    run_dir: Path,
    fold: int,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    train_ids: Sequence[str] | None,
    dev_ids: Sequence[str] | None,
    test_ids: Sequence[str],
    split_name: str,
    resume: bool,
    progress: bool,
) -> FoldResult:
    from deepmsi.runs.folder import load_run

    result: TrainResult = train(
        store,
        run_dir,
        model_config,
        train_config,
        resume=resume,
        train_ids=train_ids,
        dev_ids=dev_ids,
        progress=progress,
    )
    run = load_run(run_dir)
    by_id = {r.id: r for r in store.records()}
    report = score(run, store, [by_id[i] for i in test_ids], split=split_name)
    report.save(run_dir / "eval")
    refresh_card(run_dir, evaluation=evaluation_entry(report.to_dict(), data=OWN, epoch=run.epoch))
    splits = json.loads((run_dir / "splits.json").read_text())
    return FoldResult(
        fold, run_dir, result.best_epoch, report, splits["train"], splits["dev"], list(test_ids)
    )


def standard(
    cache,
    out: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> ProtocolResult:
    """Train on the train split (epoch chosen on dev) and score the test split once."""
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache)
    test_ids = [r.id for r in store.records("test")]
    if not test_ids:
        raise ConfigError(f"{store.cache.path}: no labelled test split; use --protocol kfold10")
    fold = _fit_and_score(
        store,
        Path(out),
        0,
        model_config,
        train_config or TrainConfig(),
        train_ids=None,
        dev_ids=None,
        test_ids=test_ids,
        split_name="test",
        resume=resume,
        progress=progress,
    )
    return _write(Path(out), _summarise("standard", [fold]))


def kfold_splits(
    labels: Sequence[str], folds: int = 10, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train+dev positions, test positions) per fold; stratified when every class can be."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(labels)
    if n < folds:
        raise ConfigError(f"{n} utterances cannot be cut into {folds} folds")
    counts = np.unique(labels, return_counts=True)[1]
    if counts.min() >= folds:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(n), labels))
    log.warning("a class has fewer than %d utterances: folds are not stratified", folds)
    return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(n)))


def inner_split(labels: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions inside a training fold, stratified where possible."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    n_dev = max(1, int(round(fraction * n)))
    counts = np.unique(labels, return_counts=True)[1]
    strat = labels if counts.min() >= 2 and n_dev >= len(counts) else None
    tr, dv = train_test_split(np.arange(n), test_size=n_dev, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(dv)


def kfold(
    cache,
    out: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig | None = None,
    *,
    folds: int = 10,
    dev_fraction: float = 0.1,
    resume: bool = False,
    progress: bool = True,
) -> ProtocolResult:
    """k-fold utterance cross-validation over all labelled utterances (see module docstring).

    Fold i trains in ``out/fold_ii``; its held-out report is ``out/fold_ii/eval/report.json``.
    """
    train_config = train_config or TrainConfig()
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache)
    records = store.records()
    labels = [r.known_label for r in records]
    results = []
    for i, (rest, test) in enumerate(kfold_splits(labels, folds, train_config.seed)):
        inner_tr, inner_dev = inner_split(
            [labels[j] for j in rest], dev_fraction, train_config.seed + i
        )
        log.info(
            "fold %d/%d: train %d, validation %d, test %d",
            i + 1,
            folds,
            len(inner_tr),
            len(inner_dev),
            len(test),
        )
        results.append(
            _fit_and_score(
                store,
                Path(out) / f"fold_{i:02d}",
                i,
                model_config,
                train_config,
                train_ids=[records[rest[j]].id for j in inner_tr],
                dev_ids=[records[rest[j]].id for j in inner_dev],
                test_ids=[records[j].id for j in test],
                split_name=f"fold {i}",
                resume=resume,
                progress=progress,
            )
        )
    return _write(Path(out), _summarise(f"kfold{folds}", results))


def _write(out: Path, result: ProtocolResult) -> ProtocolResult:
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def run_protocol(
    name: str,
    cache,
    out: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig | None = None,
    **kwargs,
) -> ProtocolResult:
    """``standard`` or ``kfold10`` by name."""
    if name == "standard":
        return standard(cache, out, model_config, train_config, **kwargs)
    if name == "kfold10":
        return kfold(cache, out, model_config, train_config, folds=10, **kwargs)
    raise ConfigError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
