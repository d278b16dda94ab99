"""``deepmsi evaluate --run RUN``: score a trained run and write report.json + confusion.png."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained run (report.json, confusion.png)",
        description="Score a run on a split of its own cache, another cache, or another dataset.",
    )
    p.add_argument("--run", required=True, type=Path, help="run folder from `deepmsi train`")
    p.add_argument("--split", default="test", help="split to score: train, dev, test or all")
    p.add_argument("--out", type=Path, help="folder for report.json and confusion.png")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--cache", type=Path, help="another prepared feature cache")
    src.add_argument(
        "--dataset",
        metavar="SPEC",
        help="another labelled dataset (meld:DIR, iemocap:PATH, folder:DIR), prepared first "
        "with the run's encoders",
    )
    p.add_argument(
        "--label-map",
        type=Path,
        metavar="FILE",
        help="JSON {old: new} or CSV old,new mapping the data's labels onto the run's",
    )
    p.add_argument("--checkpoint", default="best", help="best (default), last or an epoch number")
    p.add_argument("--batch-size", type=int, default=64)
    from deepmsi.cli.predict import add_precision_option

    add_precision_option(p)


def run(args: argparse.Namespace) -> int:
    from deepmsi.evaluation.scoring import evaluate
    from deepmsi.runs.folder import load_run

    checkpoint = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    trained = load_run(args.run, checkpoint=checkpoint)
    data = args.dataset or args.cache
    out = args.out
    if out is None:
        tag = "" if data is None else "-" + Path(str(data).rpartition(":")[2]).name
        out = args.run / f"eval{tag}-{args.split}"
    report = evaluate(
        trained,
        data,
        args.split,
        args.label_map,
        out=out,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    print(report.table())
    print(f"wrote {out}/report.json and {out}/confusion.png; model card: {args.run}/MODEL_CARD.md")
    return 0
