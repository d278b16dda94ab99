"""``deepmsi prepare --dataset SPEC --out CACHE``: run the frozen encoders once, cache features."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepmsi.cli.inspect import add_labels_option
from deepmsi.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="decode media and cache text/audio features and face frames",
        description="Run the frozen encoders over a dataset once and cache the features. "
        "Re-running skips what is cached; a cache made with other encoders or options is refused.",
    )
    p.add_argument(
        "--dataset", required=True, metavar="SPEC", help="meld:DIR, iemocap:PATH or folder:DIR"
    )
    p.add_argument("--out", required=True, type=Path, help="cache folder")
    p.add_argument(
        "--text-encoder",
        default="minilm",
        metavar="ID|PATH",
        help="Hugging Face id or local folder of a BERT-like model (default: the bundled MiniLM)",
    )
    p.add_argument(
        "--finetune-text",
        action="store_true",
        help="first fine-tune --text-encoder on this dataset's train split, each utterance read "
        "with its previous turns (epoch chosen on dev), into OUT/text-encoder (reused on a "
        "re-run), then encode with it; the paper keeps the text encoder frozen",
    )
    p.add_argument(
        "--text-past",
        type=int,
        metavar="N",
        help="with --finetune-text: previous turns read with each one (8)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        metavar="N",
        help="with --finetune-text: fine-tuning epochs (4)",
    )
    p.add_argument(
        "--finetune-frozen-layers",
        type=int,
        metavar="N",
        help="with --finetune-text: bottom encoder layers kept frozen (2; fewer learn "
        "more and cost more per epoch)",
    )
    p.add_argument(
        "--audio-encoder",
        default="spectral",
        metavar="spectral|ID|PATH",
        help="'spectral' (built-in speech descriptors, no weights needed; the default, since this "
        "machine has no pretrained speech model) or a wav2vec2-style id or folder",
    )
    p.add_argument(
        "--asr",
        metavar="SOURCE",
        help="transcribe items without a transcript: 'pocketsphinx' (offline, pip install "
        "'deepmsi[asr]') or a Whisper model's Hugging Face id or local folder; the manifest "
        "(and so the run) records how many transcripts are machine-made",
    )
    p.add_argument("--frames", type=int, default=8, help="face frames per utterance (default 8)")
    p.add_argument("--image-size", type=int, default=96, help="face crop side in pixels (96)")
    p.add_argument("--modalities", default="tav", help="what to prepare: any of t, a, v (tav)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0: one per core)")
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="stop at the first bad item (default) or list and skip it",
    )
    add_labels_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    from deepmsi.data import load_dataset
    from deepmsi.features.preparation import PrepareOptions, prepare

    finetune = None
    if args.finetune_text:
        from deepmsi.features.finetune import FinetuneOptions

        given = {
            "past": args.text_past,
            "epochs": args.finetune_epochs,
            "frozen_layers": args.finetune_frozen_layers,
        }
        finetune = FinetuneOptions(
            base=args.text_encoder,
            progress=args.progress,
            **{k: v for k, v in given.items() if v is not None},
        )
    elif any(
        v is not None for v in (args.text_past, args.finetune_epochs, args.finetune_frozen_layers)
    ):
        raise ConfigError(
            "--text-past, --finetune-epochs and --finetune-frozen-layers only apply "
            "with --finetune-text"
        )
    options = PrepareOptions(
        text_encoder=args.text_encoder,
        finetune_text=finetune,
        asr=args.asr,
        audio_encoder=args.audio_encoder,
        frames=args.frames,
        image_size=args.image_size,
        modalities=args.modalities,
        workers=args.workers,
        on_error=args.on_error,
        progress=args.progress,
    )
    dataset = load_dataset(args.dataset, on_error=args.on_error, labels=args.labels)
    result = prepare(dataset, args.out, options)
    summary = result.to_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{args.out}: {summary['utterances']} utterances cached ({result.prepared} new at "
        f"{result.per_second:.2f}/s, {result.cached} already there)"
    )
    if result.frames_total:
        print(
            f"faces found in {result.faces_found} of {result.frames_total} frames "
            "(the rest are centre crops)"
        )
    if result.problems:
        print(f"{len(result.problems)} item(s) skipped:")
        for p in result.problems:
            print(f"  {p.file}: {p.error}")
    return 0
