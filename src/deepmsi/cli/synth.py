"""``deepmsi synth``: write the synthetic MELD-layout corpus (demo data, tests, benchmarks)."""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic corpus in MELD's layout",
        description="Writes {train,dev,test}_sent_emo.csv and H.264+AAC mp4 clips in MELD's "
        "layout, where face, voice and text each carry a partial cue of the emotion.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--preset",
        choices=("demo", "meld"),
        default="demo",
        help="demo: ~600 short small clips (default); meld: MELD's split sizes, 3 s 320x240 clips",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dialogues", type=int, help="total dialogues (default 110)")
    p.add_argument(
        "--utterances-per-dialogue",
        type=int,
        nargs="+",
        metavar="N",
        help="turns per dialogue: N, or MIN MAX",
    )
    p.add_argument(
        "--splits",
        nargs=3,
        metavar=("TRAIN", "DEV", "TEST"),
        help="fractions of the dialogues (0.7 0.1 0.2) or dialogue counts (1038 114 280)",
    )
    p.add_argument("--seconds", type=float, help="mean clip length")
    p.add_argument("--fps", type=int)
    p.add_argument("--size", type=int, nargs="+", metavar="PX", help="N (square) or WIDTH HEIGHT")
    p.add_argument("--sample-rate", type=int)
    p.add_argument("--workers", type=int, default=1, help="worker processes")


def _splits(values: list[str]) -> tuple[float, ...] | tuple[int, ...]:
    from deepmsi.errors import ConfigError

    try:
        return tuple(int(v) for v in values)
    except ValueError:
        pass
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise ConfigError(f"--splits takes three numbers, got {' '.join(values)}") from None


def _pair(values: list[int] | None, flag: str) -> int | tuple[int, int] | None:
    from deepmsi.errors import ConfigError

    if values is None or len(values) == 1:
        return values[0] if values else None
    if len(values) == 2:
        return (values[0], values[1])
    raise ConfigError(f"{flag} takes one or two numbers, got {len(values)}")


def run(args: argparse.Namespace) -> int:
    from deepmsi.demo.synthetic import CSV_NAMES, PRESETS, write_corpus

    options = dict(PRESETS[args.preset])
    given = {
        "dialogues": args.dialogues,
        "utterances_per_dialogue": _pair(args.utterances_per_dialogue, "--utterances-per-dialogue"),
        "splits": _splits(args.splits) if args.splits else None,
        "seconds": args.seconds,
        "fps": args.fps,
        "size": _pair(args.size, "--size"),
        "sample_rate": args.sample_rate,
    }
    options.update({k: v for k, v in given.items() if v is not None})
    started = time.perf_counter()
    root = write_corpus(args.out, seed=args.seed, workers=args.workers, **options)
    seconds = time.perf_counter() - started
    print(f"wrote {root} in {seconds:.1f} s")
    for split, name in CSV_NAMES.items():
        with open(root / name, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        dialogues = len({r["Dialogue_ID"] for r in rows})
        print(f"  {split:5s} {len(rows):6d} utterances {dialogues:5d} dialogues  {name}")
    return 0
