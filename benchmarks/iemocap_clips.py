"""All three modalities on real clips: 129 IEMOCAP Session-1 utterances (video, audio, transcript).

Prepares the folder afresh (``deepmsi prepare``: MiniLM text, spectral audio, 8 face crops of
96 px per clip) and records its speed and how often a face was found. Then leave-one-speaker-out
with the two actors of the session (train on one, score the other once); inside the training
speaker a stratified 20% of clips is the dev set that picks the epoch. Every modality subset
(T, A, V, TA, TAV) trains the deepmsi model with the cpu preset cut to a few epochs.

64 to 72 training clips and 8 classes: the numbers show that the three-modality pipeline runs on
real media end to end and what an epoch costs, not how accurate the model is.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/iemocap_clips.py [--epochs 10] [--record]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from results import Row, command_line, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "iemocap-clips"
WORK = ROOT / "artifacts" / "bench"
CACHE = WORK / "iemocap_clips_tav"
DEEPMSI = ROOT / ".venv" / "bin" / "deepmsi"
SUBSETS = ("t", "a", "v", "ta", "tav")
DEV_FRACTION = 0.2

log = logging.getLogger("iemocap_clips")


@dataclass
class FoldScore:
    test_speaker: str
    accuracy: float  # percent
    weighted_f1: float  # percent
    best_epoch: int
    seconds_per_epoch: float
    n_train: int
    n_dev: int
    n_test: int


def prepare(workers: int) -> dict:
    args = [
        str(DEEPMSI),
        "prepare",
        "--dataset",
        f"folder:{DATA}",
        "--out",
        str(CACHE),
        "--workers",
        str(workers),
        "--no-progress",
        "--json",
    ]
    print("$ " + shlex.join(args), flush=True)
    return json.loads(subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout)


def face_counts() -> tuple[int, int, int]:
    """(clips with a face in at least one frame, frames with a face, frames) from the items."""
    from deepmsi.data.cache import FeatureCache

    cache = FeatureCache(CACHE)
    faces = [int(cache.load(r.id).faces) for r in cache.records()]
    frames = int(cache.manifest["frames"]) * len(faces)
    return sum(f > 0 for f in faces), sum(faces), frames


def run_fold(
    store, modalities: str, test_speaker: str, epochs: int, *, balanced: bool = False
) -> FoldScore:
    from deepmsi.config import balanced as balance
    from deepmsi.config import model_preset, train_preset
    from deepmsi.evaluation.protocols import inner_split
    from deepmsi.evaluation.scoring import score
    from deepmsi.runs.folder import load_run
    from deepmsi.training.loop import train

    records = store.records()
    rest = [r for r in records if r.speaker != test_speaker]
    test = [r for r in records if r.speaker == test_speaker]
    tr, dv = inner_split([r.label for r in rest], DEV_FRACTION, seed=0)
    run_dir = WORK / "runs" / f"iemocap_clips_{modalities}_test{test_speaker}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    model_cfg = model_preset("cpu", modalities=modalities)
    train_cfg = train_preset("cpu", epochs=epochs, patience=0, threads=1)
    if balanced:
        model_cfg, train_cfg = balance(model_cfg, train_cfg)
    result = train(
        store,
        run_dir,
        model_cfg,
        train_cfg,
        train_ids=[rest[i].id for i in tr],
        dev_ids=[rest[i].id for i in dv],
        progress=False,
    )
    report = score(load_run(run_dir), store, test, split=f"speaker {test_speaker}")
    return FoldScore(
        test_speaker,
        100 * report.accuracy,
        100 * report.weighted_f1,
        result.best_epoch,
        result.seconds_per_epoch,
        len(tr),
        len(dv),
        len(test),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--subsets", nargs="+", choices=SUBSETS, default=list(SUBSETS))
    ap.add_argument("--workers", type=int, default=2, help="decoding processes for prepare")
    ap.add_argument("--balanced", action="store_true", help="balanced training (--balanced)")
    ap.add_argument("--record", action="store_true", help="record rows in results.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not DATA.is_dir():
        sys.exit(f"IEMOCAP clips not found at {DATA}")
    import torch

    torch.set_num_threads(1)
    if CACHE.exists():  # prepared afresh every time, so its speed is measured every time
        shutil.rmtree(CACHE)
    load_before = os.getloadavg()[0]  # other jobs on the machine slow both timings down
    summary = prepare(args.workers)
    clips_with_face, faces, frames = face_counts()
    print(
        f"prepare: {summary['utterances']} clips, {summary['prepared']} new in "
        f"{summary['seconds']:.1f} s ({summary['per_second']:.2f} clips/s); faces in "
        f"{faces}/{frames} frames, {clips_with_face} clips with a face"
    )

    from deepmsi.data.dataset import FeatureStore

    store = FeatureStore(CACHE)
    speakers = sorted({r.speaker for r in store.records()})
    scores: dict[str, list[FoldScore]] = {}
    for subset in args.subsets:
        t0 = time.time()
        scores[subset] = [
            run_fold(store, subset, s, args.epochs, balanced=args.balanced) for s in speakers
        ]
        log.info("%s done in %.0f s", subset.upper(), time.time() - t0)

    load_train = os.getloadavg()[0]
    print(
        f"{'subset':6} {'acc ' + speakers[0]:>13} {'acc ' + speakers[1]:>13} {'mean acc':>9} "
        f"{'mean wF1':>9} {'s/epoch':>8}"
    )
    for subset, folds in scores.items():
        acc = [f.accuracy for f in folds]
        wf1 = [f.weighted_f1 for f in folds]
        spe = np.mean([f.seconds_per_epoch for f in folds])
        print(
            f"{subset.upper():6} {acc[0]:13.2f} {acc[1]:13.2f} {np.mean(acc):9.2f} "
            f"{np.mean(wf1):9.2f} {spe:8.2f}"
        )
    if not args.record:
        return
    cmd = command_line()
    dataset = f"IEMOCAP Session-1 clips ({summary['utterances']}, 8 classes)"
    majority = {
        s: max(Counter(r.label for r in store.records() if r.speaker == s).values())
        / sum(r.speaker == s for r in store.records())
        for s in speakers
    }
    rows = []
    rows.append(
        Row(
            "iemocap_clips.prepare.clips_per_second",
            dataset,
            "tav",
            "clips/s",
            summary["per_second"],
            cmd,
            note=f"deepmsi prepare, {args.workers} workers, 8 frames x 96 px, MiniLM "
            f"text + spectral audio; {summary['seconds']:.0f} s for "
            f"{summary['prepared']} clips; load average {load_before:.1f} "
            "before",
        )
    )
    rows.append(
        Row(
            "iemocap_clips.prepare.face_frames",
            dataset,
            "v",
            "% frames with a face",
            100 * faces / frames,
            cmd,
            note=f"{faces} of {frames} frames; {clips_with_face} of "
            f"{summary['utterances']} clips had a face in at least one frame",
        )
    )
    chance = ", ".join(f"{s} {100 * m:.0f}%" for s, m in majority.items())
    tag = ".balanced" if args.balanced else ""  # the paper's training keeps the plain names
    recipe = "balanced training, " if args.balanced else ""
    for subset, folds in scores.items():
        per = "; ".join(
            f"test {f.test_speaker}: acc {f.accuracy:.1f}, wF1 {f.weighted_f1:.1f}, "
            f"epoch {f.best_epoch} (train {f.n_train}/dev {f.n_dev}/test {f.n_test})"
            for f in folds
        )
        note = (
            f"too small to claim accuracy; {recipe}cpu preset cut to {args.epochs} epochs, epoch "
            f"chosen on a 20% dev slice of the training speaker; majority class: {chance}. "
            f"{per}"
        )
        for metric in ("accuracy", "weighted_f1"):
            vals = [getattr(f, metric) for f in folds]
            rows.append(
                Row(
                    f"iemocap_clips.{subset}{tag}.{metric}",
                    dataset,
                    subset,
                    metric,
                    float(np.mean(vals)),
                    cmd,
                    std=float(np.std(vals, ddof=1)),
                    note=note,
                )
            )
        spe = [f.seconds_per_epoch for f in folds]
        rows.append(
            Row(
                f"iemocap_clips.{subset}{tag}.train_s_per_epoch",
                dataset,
                subset,
                "s/epoch",
                float(np.mean(spe)),
                cmd,
                note="training + dev scoring, 1 torch thread, mean of the 2 folds; load "
                f"average {load_train:.1f} at the end of training",
            )
        )
    record(rows)


if __name__ == "__main__":
    main()
