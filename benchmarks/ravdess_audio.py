"""Speech emotion on RAVDESS (actors 1-18, 8 classes) from audio alone, speaker-independent.

Features: deepmsi's built-in spectral descriptors (``deepmsi prepare --modalities a``; no
pretrained weights anywhere). Folds: 6 folds of 3 consecutive actors (1-3, 4-6, ... 16-18). For
test fold i the next fold's 3 actors are the dev set, which alone chooses hyper-parameters and
the epoch; the remaining 12 actors train; the test actors are scored once. Accuracy is the mean
over the 6 folds, ± the sample standard deviation (ddof=1).

Models, all on the same folds:

- ``logreg``: standardised features + logistic regression, C chosen on dev (the baseline).
- ``deepmsi``: the deepmsi model itself (``--preset cpu``, audio only) through
  ``deepmsi.training.loop.train`` with ``train_ids``/``dev_ids``, scored with
  ``deepmsi.evaluation.scoring.score``
  (the model standardises its inputs with the training actors' statistics itself).
- ``svm``: standardised features + RBF SVM, C and gamma chosen on dev.
- ``*_spknorm`` (logreg, svm, deepmsi): features z-normalised per speaker over all of that
  speaker's clips (labels are not used, but the test speaker's unlabelled clips are: a
  deployment needs a few clips of a speaker before it can normalise them; said in the row).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ravdess_audio.py [--models ...] [--record]
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from results import Row, command_line, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ravdess"
WORK = ROOT / "artifacts" / "bench"
CACHE = WORK / "ravdess_a"
DEEPMSI = ROOT / ".venv" / "bin" / "deepmsi"
FOLDS = 6
GOAL = 60.0

log = logging.getLogger("ravdess_audio")


@dataclass
class Data:
    ids: list[str]
    x: np.ndarray  # [N, D] spectral descriptors
    y: np.ndarray  # [N] class index (RAVDESS-8 order)
    actor: np.ndarray  # [N] int
    labels: tuple[str, ...]


@dataclass
class Fold:
    test: list[int]
    dev: list[int]
    train: list[int]


@dataclass
class ModelResult:
    name: str
    accuracy: list[float] = field(default_factory=list)  # percent, per fold
    chosen: list[str] = field(default_factory=list)  # what dev chose, per fold
    seconds: float = 0.0

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracy))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracy, ddof=1)) if len(self.accuracy) > 1 else 0.0


# ---- data ------------------------------------------------------------------------------------
def prepare(workers: int) -> dict:
    args = [
        str(DEEPMSI),
        "prepare",
        "--dataset",
        f"folder:{DATA}",
        "--out",
        str(CACHE),
        "--modalities",
        "a",
        "--workers",
        str(workers),
        "--no-progress",
        "--json",
    ]
    print("$ " + shlex.join(args), flush=True)
    return json.loads(subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout)


def load() -> Data:
    from deepmsi.data.cache import FeatureCache

    cache = FeatureCache(CACHE)
    records = [r for r in cache.records() if r.label is not None]
    x = np.stack([cache.load(r.id).audio for r in records]).astype(np.float64)
    y = np.array([cache.labels.index(r.label) for r in records])
    actor = np.array([int(r.speaker) for r in records])
    return Data([r.id for r in records], x, y, actor, tuple(cache.labels.names))


def make_folds(actors: np.ndarray) -> list[Fold]:
    ids = sorted(set(actors.tolist()))
    size = len(ids) // FOLDS
    groups = [ids[i * size : (i + 1) * size] for i in range(FOLDS)]
    out = []
    for i in range(FOLDS):
        test, dev = groups[i], groups[(i + 1) % FOLDS]
        out.append(Fold(test, dev, [a for a in ids if a not in test and a not in dev]))
    return out


def speaker_normalise(data: Data) -> np.ndarray:
    """Per-speaker z-scores over all of each speaker's clips (no labels used)."""
    x = data.x.copy()
    for a in np.unique(data.actor):
        m = data.actor == a
        x[m] = (x[m] - x[m].mean(0)) / (x[m].std(0) + 1e-8)
    return x


# ---- sklearn models --------------------------------------------------------------------------
def _sk_fold(x, y, split: tuple, grid, build) -> tuple[float, str]:
    """Fit each setting on train, keep the best on dev, score test once (percent); ``split``
    is (train, dev, test) positions."""
    from sklearn.preprocessing import StandardScaler

    tr, dv, te = split

    scaler = StandardScaler().fit(x[tr])
    xs = scaler.transform(x)
    best = None
    for setting in grid:
        clf = build(setting).fit(xs[tr], y[tr])
        dev = float((clf.predict(xs[dv]) == y[dv]).mean())
        if best is None or dev > best[0]:
            best = (dev, setting, clf)
    dev, setting, clf = best
    test = 100 * float((clf.predict(xs[te]) == y[te]).mean())
    return test, f"{setting} (dev {100 * dev:.1f})"


def logreg_grid():
    from sklearn.linear_model import LogisticRegression

    grid = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    return grid, lambda c: LogisticRegression(C=c, max_iter=5000)


def svm_grid(dim: int):
    from sklearn.svm import SVC

    grid = [(c, g) for c in (1.0, 3.0, 10.0, 30.0) for g in (0.3, 1.0, 3.0)]
    # gamma as a multiple of sklearn's "scale" (1 / (D * var), var = 1 after standardising)
    return grid, lambda s: SVC(C=s[0], gamma=s[1] / dim)


# ---- the deepmsi model -----------------------------------------------------------------------
def replaced_audio_store(ids: list[str], x: np.ndarray):
    """A FeatureStore of the cache whose audio vectors are the rows of ``x`` (ids order)."""
    import dataclasses

    from deepmsi.data.dataset import FeatureStore

    rows = {i: x[k].astype(np.float32) for k, i in enumerate(ids)}

    class ReplacedAudio(FeatureStore):
        def load(self, utt_id: str):
            return dataclasses.replace(super().load(utt_id), audio=rows[utt_id])

    return ReplacedAudio(CACHE)


def deepmsi_fold(data: Data, x: np.ndarray | None, fold_idx: int, split: tuple, tag: str):
    """Train the cpu-preset model on audio (epoch chosen on dev), score test once (percent);
    ``split`` is (train, dev, test) positions."""
    tr, dv, te = split
    from deepmsi.config import model_preset, train_preset
    from deepmsi.data.dataset import FeatureStore
    from deepmsi.evaluation.scoring import score
    from deepmsi.runs.folder import load_run
    from deepmsi.training.loop import train

    store = FeatureStore(CACHE) if x is None else replaced_audio_store(data.ids, x)
    run_dir = WORK / "runs" / f"ravdess_{tag}_fold{fold_idx}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    ids = np.array(data.ids)
    result = train(
        store,
        run_dir,
        model_preset("cpu", modalities="a"),
        train_preset("cpu", threads=1),
        train_ids=list(ids[tr]),
        dev_ids=list(ids[dv]),
        progress=False,
    )
    by_id = {r.id: r for r in store.records()}
    report = score(load_run(run_dir), store, [by_id[i] for i in ids[te]], split=f"fold {fold_idx}")
    chosen = f"epoch {result.best_epoch} (dev acc {100 * result.best_dev['accuracy']:.1f})"
    return 100 * report.accuracy, chosen


# ---- the loop --------------------------------------------------------------------------------
MODELS = (
    "logreg",
    "deepmsi",
    "svm",
    "logreg_spknorm",
    "svm_spknorm",
    "deepmsi_spknorm",
)


def run_model(name: str, data: Data, folds: list[Fold]) -> ModelResult:
    res = ModelResult(name)
    t0 = time.time()
    x = speaker_normalise(data) if name.endswith("_spknorm") else data.x
    for i, f in enumerate(folds):
        tr, dv, te = (np.flatnonzero(np.isin(data.actor, g)) for g in (f.train, f.dev, f.test))
        if name.startswith("logreg"):
            acc, chosen = _sk_fold(x, data.y, (tr, dv, te), *logreg_grid())
        elif name.startswith("svm"):
            acc, chosen = _sk_fold(x, data.y, (tr, dv, te), *svm_grid(x.shape[1]))
        elif name == "deepmsi":
            acc, chosen = deepmsi_fold(data, None, i, (tr, dv, te), name)
        elif name == "deepmsi_spknorm":
            acc, chosen = deepmsi_fold(data, x, i, (tr, dv, te), name)
        else:
            raise ValueError(name)
        res.accuracy.append(acc)
        res.chosen.append(chosen)
        log.info("%s fold %d (test actors %s): acc %.2f, chose %s", name, i, f.test, acc, chosen)
    res.seconds = time.time() - t0
    return res


NOTES = {
    "logreg": "baseline: standardised spectral descriptors + logistic regression, C on dev",
    "deepmsi": "deepmsi cpu preset, audio only (inputs standardised by the model with the "
    "training actors' statistics), epoch on dev",
    "svm": "standardised descriptors + RBF SVM, C and gamma on dev",
    "logreg_spknorm": "per-speaker z-normalised descriptors (uses the test speaker's unlabelled "
    "clips) + logistic regression, C on dev",
    "deepmsi_spknorm": "deepmsi cpu preset, audio only, per-speaker z-normalised descriptors "
    "(uses the test speaker's unlabelled clips), epoch on dev",
    "svm_spknorm": "per-speaker z-normalised descriptors (uses the test speaker's unlabelled "
    "clips) + RBF SVM, C and gamma on dev",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--workers", type=int, default=2, help="decoding processes for prepare")
    ap.add_argument("--record", action="store_true", help="record rows in results.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not DATA.is_dir():
        sys.exit(f"RAVDESS not found at {DATA}")
    import torch

    torch.set_num_threads(1)
    summary = prepare(args.workers)
    speed = f", {summary['per_second']:.1f} clips/s" if summary["prepared"] else ""
    print(f"cache: {summary['utterances']} clips ({summary['prepared']} new{speed})")
    data = load()
    folds = make_folds(data.actor)
    results = [run_model(m, data, folds) for m in args.models]
    head = " ".join(f"{'f' + str(i):>6}" for i in range(FOLDS))
    print(f"{'model':16} {head} {'mean':>6} {'std':>6} {'s':>6}")
    for r in results:
        accs = " ".join(f"{a:6.2f}" for a in r.accuracy)
        print(f"{r.name:16} {accs} {r.mean:6.2f} {r.std:6.2f} {r.seconds:6.0f}")
    if args.record:
        rows = []
        for r in results:
            goal = "goal 60 reached" if r.mean >= GOAL else "goal 60 not reached"
            folds_txt = ", ".join(f"{a:.1f}" for a in r.accuracy)
            note = f"{goal}. {NOTES[r.name]}. Per fold (actors 1-3 .. 16-18): {folds_txt}"
            rows.append(
                Row(
                    f"ravdess_audio.{r.name}.accuracy",
                    "RAVDESS speech, actors 1-18, 6 actor folds",
                    "a",
                    "accuracy",
                    r.mean,
                    command_line(),
                    std=r.std,
                    note=note,
                )
            )
        record(rows)


if __name__ == "__main__":
    main()
