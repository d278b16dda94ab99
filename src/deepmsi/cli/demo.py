"""``deepmsi demo [--out DIR]``: the whole pipeline on a synthetic corpus, offline, in minutes."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="synthetic corpus -> prepare -> train -> evaluate -> ablation (offline)",
        description="Generate a synthetic corpus, prepare it, train the cpu preset, score it and "
        "compare T, A, V with T+A+V. Leaves DIR/run usable by evaluate and predict.",
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder (default demo-out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--paper-training",
        action="store_true",
        help="the paper's training instead of the balanced one (its video branch does not learn "
        "from scratch on this corpus)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from deepmsi.demo.demo import run_demo

    result = run_demo(
        args.out, seed=args.seed, balanced=not args.paper_training, progress=not args.no_progress
    )
    print(f"\nT+A+V on the synthetic test split ({result.run_dir}):\n")
    print(result.report.table())
    print("\nModality ablation (test split, percent):\n")
    print(result.ablation.table())
    from deepmsi.demo.demo import SINGLES

    row = result.ablation.row
    verdict = "beats" if result.multimodal_wins else "does NOT beat"
    singles = ", ".join(f"{m.upper()} {100 * row(m).weighted_f1:.2f}" for m in SINGLES)
    print(
        f"\nT+A+V weighted F1 {100 * row('tav').weighted_f1:.2f} {verdict} every single "
        f"modality ({singles}); T+A alone: {100 * row('ta').weighted_f1:.2f}"
    )
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"time: {stages}")
    print(
        f"wrote {result.out}/report.json, confusion.png, ablation.json, ablation.md; "
        f"run folder {result.run_dir}"
    )
    return 0
