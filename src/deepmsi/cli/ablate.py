"""``deepmsi ablate --cache CACHE --out DIR``: one run per modality subset / component."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepmsi.cli.train import add_config_options, build_configs

DEFAULT_VARIANTS = "t,a,v,ta,tv,av,tav,tav-novsc,tav-nocontrastive"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablate",
        help="train and score modality subsets and components (ablation.md/.json)",
        description="Train T, A, V, T+A, T+V, A+V, T+A+V, T+A+V without VSC and without the "
        "contrastive loss; score each on the test split.",
    )
    p.add_argument("--cache", required=True, type=Path, help="feature cache from `deepmsi prepare`")
    p.add_argument("--out", required=True, type=Path, help="folder for ablation.md/.json and runs")
    p.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"comma-separated subset (default {DEFAULT_VARIANTS})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_options(p, modalities=False)


def run(args: argparse.Namespace) -> int:
    from deepmsi.evaluation.ablation import ablate, parse_variants

    model_cfg, train_cfg = build_configs(args)
    variants = parse_variants([v for v in args.variants.split(",") if v.strip()])
    result = ablate(
        args.cache, args.out, model_cfg, train_cfg, variants=variants, progress=not args.no_progress
    )
    print(result.table())
    print(f"wrote {args.out}/ablation.md and {args.out}/ablation.json")
    return 0
