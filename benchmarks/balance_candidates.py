"""One candidate of balanced multimodal training on the demo's cache: train a modality subset
with the demo's model sizes plus JSON overrides; print dev (the choice) and test (the record)
weighted F1.

    .venv/bin/deepmsi demo --out demo-out            # makes demo-out/cache
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/balance_candidates.py demo-out/cache /tmp/cand \\
        --modalities v --model '{"dropout": 0.0}' --train '{"precise_bn": true}'

The table in docs/balanced-training.md was measured this way (seed 0). ``--balanced`` starts from
the demo's recipe (``deepmsi.config.balanced``) and trains in the demo's deterministic mode, so
only the overrides differ from what ``deepmsi demo --seed N`` trains (on the cache of that seed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from pathlib import Path

import torch

from deepmsi.config import balanced, model_preset, train_preset
from deepmsi.data.dataset import FeatureStore
from deepmsi.demo.demo import MODEL, TRAIN, reproducible
from deepmsi.evaluation.scoring import evaluate
from deepmsi.training.loop import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cache", type=Path)
    p.add_argument("out", type=Path, help="run folder (replaced)")
    p.add_argument("--modalities", default="tav")
    p.add_argument("--model", default="{}", help="JSON ModelConfig overrides")
    p.add_argument("--train", default="{}", help="JSON TrainConfig overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--balanced", action="store_true", help="the demo's recipe and mode first")
    args = p.parse_args()
    torch.set_num_threads(1)
    shutil.rmtree(args.out, ignore_errors=True)
    model_cfg = model_preset("cpu", **{**MODEL, "modalities": args.modalities})
    train_cfg = train_preset("cpu", seed=args.seed, **TRAIN)
    if args.balanced:
        model_cfg, train_cfg = balanced(model_cfg, train_cfg)
    model_cfg = model_cfg.replace(**json.loads(args.model))
    train_cfg = train_cfg.replace(**json.loads(args.train))
    t0 = time.perf_counter()
    with reproducible() if args.balanced else contextlib.nullcontext():
        result = train(FeatureStore(args.cache), args.out, model_cfg, train_cfg, progress=False)
        report = evaluate(args.out, split="test", progress=False)
    row = {
        "modalities": args.modalities,
        "model": json.loads(args.model),
        "train": json.loads(args.train),
        "seed": args.seed,
        "balanced": args.balanced,
        "best_epoch": result.best_epoch,
        "dev_weighted_f1": round(100 * result.best_dev["weighted_f1"], 2),
        "test_weighted_f1": round(100 * report.weighted_f1, 2),
        "seconds": round(time.perf_counter() - t0),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
