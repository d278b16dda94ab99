"""Classification metrics computed from the confusion matrix.

NOTE(official-code): the authors' code reports a per-class "F1" built from accuracy-like ratios;
here every number is the textbook definition (precision = TP / predicted, recall = TP / true,
F1 = their harmonic mean, 0 where undefined), which matches scikit-learn with
``zero_division=0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class (fractions in [0, 1]) and its true count."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """Scores of one prediction set against its labels; fractions in [0, 1].

    ``macro_f1`` averages F1 over the classes that occur in the labels or the predictions (as
    scikit-learn does without ``labels=``), so a class absent from a small split does not add a
    meaningless zero. ``weighted_f1`` weights F1 by true support.
    """

    labels: tuple[str, ...]
    accuracy: float
    weighted_f1: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion: list[list[int]]  # [K true, K predicted] counts
    utterances: int

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "accuracy": self.accuracy,
            "weighted_f1": self.weighted_f1,
            "macro_f1": self.macro_f1,
            "per_class": {name: asdict(s) for name, s in self.per_class.items()},
            "confusion": self.confusion,
            "utterances": self.utterances,
        }


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [K, K]: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} differ in shape")
    for name, y in (("label", y_true), ("prediction", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} index outside [0, {num_classes})")
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metrics_from_confusion(confusion: np.ndarray, labels: Sequence[str]) -> Metrics:
    """All scores from a [K, K] confusion matrix (rows true, columns predicted)."""
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(labels)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix {cm.shape} does not match {k} labels")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)  # [K] true counts
    predicted = cm.sum(axis=0)  # [K] predicted counts
    total = int(cm.sum())
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    seen = (support + predicted) > 0
    per_class = {
        name: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i, name in enumerate(labels)
    }
    return Metrics(
        labels=tuple(labels),
        accuracy=float(tp.sum() / total) if total else 0.0,
        weighted_f1=float((f1 * support).sum() / total) if total else 0.0,
        macro_f1=float(f1[seen].mean()) if seen.any() else 0.0,
        per_class=per_class,
        confusion=cm.tolist(),
        utterances=total,
    )


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> Metrics:
    """Scores of class indices ``y_pred`` [N] against ``y_true`` [N] over ``labels`` (K names)."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, len(labels)), labels)
