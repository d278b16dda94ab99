"""``deepmsi train --cache CACHE --out RUN``: train on a prepared feature cache.

Works as is under ``torchrun --nproc_per_node N -m deepmsi train ...`` (DDP; only rank 0 prints).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from deepmsi.config import PRECISIONS
from deepmsi.errors import ConfigError

PRESETS = ("cpu", "paper", "tiny")


def _modalities(text: str) -> str:
    from deepmsi.modalities import parse_modalities

    letters = "".join(dict.fromkeys(c for c in text.lower() if c not in ",+ "))
    try:
        return parse_modalities(letters)
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use any of t, a, v (e.g. tav or t,a)"
        ) from None


def _on_off(text: str) -> bool:
    if text.lower() not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r}: use on or off")
    return text.lower() == "on"


def add_config_options(p: argparse.ArgumentParser, *, modalities: bool = True) -> None:
    """Options shared by train and ablate; None means "not given" (keep the preset's value)."""
    g = p.add_argument_group("model and training")
    g.add_argument("--preset", choices=PRESETS, default="cpu", help="config preset (default cpu)")
    if modalities:
        g.add_argument("--modalities", type=_modalities, help="any of t, a, v (default tav)")
        g.add_argument("--vsc", type=_on_off, metavar="on|off", help="visual sequence compression")
    g.add_argument("--contrastive-weight", type=float, metavar="W", help="weight of the loss term")
    g.add_argument(
        "--modality-dropout",
        type=float,
        metavar="P",
        help="probability of hiding each modality per sample while training (cpu preset: 0.2)",
    )
    g.add_argument(
        "--balanced",
        action="store_true",
        help="balanced multimodal training for a video branch learning from scratch: no "
        "dropout, modality dropout 0.5, precise BatchNorm, video at 1/4 of the learning rate, "
        "a classifier head per modality (weight 1) "
        "(other options given still apply on top); off: the paper's training",
    )
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--patience", type=int, help="early-stopping patience in epochs (0: off)")
    g.add_argument(
        "--class-weights",
        action="store_const",
        const=True,
        help="inverse-frequency class weights in the cross-entropy (off by default, as the paper)",
    )
    g.add_argument(
        "--context",
        choices=("none", "online", "offline"),
        help="after the utterance model, fit a dialogue-context head over its vectors (default "
        "none: the paper's utterance-level model). online: each turn reads past turns only, "
        "usable live; offline: reads the whole dialogue, future turns included (needs the "
        "complete dialogue before labelling)",
    )
    g.add_argument(
        "--video-backbone",
        metavar="SOURCE",
        help="start the Swin-V2 from pretrained weights: a Hugging Face id (e.g. "
        "microsoft/swinv2-tiny-patch4-window8-256, which fits --preset paper) or a local folder "
        "with config.json + model.safetensors (default: from scratch, as the authors did)",
    )
    g.add_argument("--device", help="auto (default), cpu or cuda[:N]")
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32 (default), or bf16 autocast: faster on CPUs with bf16 instructions and on "
        "GPUs; weights and optimiser stay float32",
    )
    g.add_argument("--workers", type=int, help="data-loader worker processes (default 0)")
    g.add_argument(
        "--threads",
        type=int,
        help="torch threads per process (default: torch's choice; 1 is fastest on a loaded "
        "machine and under torchrun on CPU)",
    )


def build_configs(args: argparse.Namespace, base: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
    """(ModelConfig, TrainConfig): the preset (or ``base``) with the options given applied."""
    from deepmsi.config import balanced, model_preset, train_preset

    if base is None:
        model_cfg, train_cfg = model_preset(args.preset), train_preset(args.preset)
    else:
        model_cfg, train_cfg = base
    if getattr(args, "balanced", False):
        model_cfg, train_cfg = balanced(model_cfg, train_cfg)
    model_over = {
        "modalities": getattr(args, "modalities", None),
        "vsc": getattr(args, "vsc", None),
        "modality_dropout": args.modality_dropout,
    }
    train_over = {
        "contrastive_weight": args.contrastive_weight,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "patience": args.patience,
        "class_weights": args.class_weights,
        "device": args.device,
        "precision": getattr(args, "precision", None),
        "num_workers": args.workers,
        "threads": args.threads,
        "context": getattr(args, "context", None),
        "video_backbone": getattr(args, "video_backbone", None),
    }
    model_cfg = model_cfg.replace(**{k: v for k, v in model_over.items() if v is not None})
    train_cfg = train_cfg.replace(**{k: v for k, v in train_over.items() if v is not None})
    return model_cfg, train_cfg


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on a prepared feature cache",
        description="Train DeepMSI on a feature cache; the epoch is chosen on the dev split.",
    )
    p.add_argument("--cache", required=True, type=Path, help="feature cache from `deepmsi prepare`")
    p.add_argument("--out", required=True, type=Path, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--protocol",
        choices=("standard", "kfold10"),
        default="standard",
        help="standard: the dataset's splits; kfold10: 10-fold CV, one run per fold",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_options(p)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def run(args: argparse.Namespace) -> int:
    from deepmsi.runs.folder import CONFIG_FILE, read_config

    main = int(os.environ.get("RANK", "0")) == 0
    base = None
    if args.resume and args.protocol == "standard" and (args.out / CONFIG_FILE).is_file():
        saved = read_config(args.out)
        base = (saved.model_config, saved.train_config)
    model_cfg, train_cfg = build_configs(args, base)
    progress = not args.no_progress

    if args.protocol == "kfold10":
        from deepmsi.evaluation.protocols import kfold

        result = kfold(
            args.cache,
            args.out,
            model_cfg,
            train_cfg,
            folds=10,
            resume=args.resume,
            progress=progress,
        )
        if main:
            print(result.table())
            print(f"wrote {args.out}/protocol.json (per-fold reports in fold_XX/eval/)")
        return 0

    from deepmsi.training.loop import train

    if not args.cache.exists():
        raise ConfigError(f"{args.cache}: no such feature cache")
    trained = train(
        args.cache, args.out, model_cfg, train_cfg, resume=args.resume, progress=progress
    )
    if main:
        dev = trained.best_dev
        stop = " (stopped early)" if trained.stopped_early else ""
        print(
            f"trained {trained.epochs_run} epochs{stop}, {trained.seconds_per_epoch:.1f} s/epoch; "
            f"best epoch {trained.best_epoch}: dev accuracy {_pct(dev['accuracy'])}, "
            f"weighted F1 {_pct(dev['weighted_f1'])}, macro F1 {_pct(dev['macro_f1'])} "
            f"({dev['utterances']} utterances)"
        )
        if trained.context_dev is not None:
            ctx = trained.context_dev
            print(
                f"dialogue context ({train_cfg.context}), epoch {trained.context_epoch}: dev "
                f"accuracy {_pct(ctx['accuracy'])}, weighted F1 {_pct(ctx['weighted_f1'])}, "
                f"macro F1 {_pct(ctx['macro_f1'])}"
            )
        run = trained.run_dir
        print(f"run folder: {run}  (score it: deepmsi evaluate --run {run})")
        print(f"model card: {run}/MODEL_CARD.md")
    return 0
