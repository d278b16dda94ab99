"""Metrics from the confusion matrix agree with scikit-learn on random labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion

from deepmsi.metrics import compute_metrics, confusion_matrix

LABELS = ("a", "b", "c", "d", "e")


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    y_true = rng.integers(0, 4, n)  # class "e" never occurs: zero support
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, 5, n))
    m = compute_metrics(y_true, y_pred, LABELS)

    ks = list(range(len(LABELS)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ks, zero_division=0)
    for i, name in enumerate(LABELS):
        c = m.per_class[name]
        assert c.precision == pytest.approx(p[i], abs=1e-12)
        assert c.recall == pytest.approx(r[i], abs=1e-12)
        assert c.f1 == pytest.approx(f[i], abs=1e-12)
        assert c.support == s[i]
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert m.weighted_f1 == pytest.approx(
        f1_score(y_true, y_pred, labels=ks, average="weighted", zero_division=0), abs=1e-12
    )
    # macro over the classes seen in labels or predictions, as sklearn does without labels=
    assert m.macro_f1 == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0), abs=1e-12
    )
    assert m.confusion == sk_confusion(y_true, y_pred, labels=ks).tolist()
    assert m.utterances == n


def test_confusion_rows_are_true_labels() -> None:
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([1, 1, 1]), 2)
    assert cm.tolist() == [[0, 2], [0, 1]]


def test_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
