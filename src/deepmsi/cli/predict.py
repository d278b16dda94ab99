"""``deepmsi predict --run RUN INPUT...``: emotions of clips, audio files or transcripts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict the emotion of clips, audio files or transcripts",
        description="Predict emotions with a trained run. INPUT is a clip or audio file (any "
        "container PyAV reads) or a .txt transcript; with --subtitles a long video is cut at "
        "each cue, without them where speech starts and stops. --asr writes a missing "
        "transcript.",
    )
    p.add_argument("--run", dest="run_dir", required=True, type=Path, help="trained run folder")
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="clip, audio or .txt")
    p.add_argument("--text", help="transcript of the (single) clip, or alone without INPUT")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument(
        "--subtitles",
        type=Path,
        metavar="FILE",
        help=".srt or .vtt: one segment per cue, the cue text as transcript",
    )
    cut.add_argument(
        "--window", type=float, metavar="SECONDS", help="cut the input into windows of this length"
    )
    cut.add_argument(
        "--speech",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cut the input where speech starts and stops (the default for inputs over 30 s "
        "without subtitles or a window); --no-speech classifies a long input whole",
    )
    add_asr_options(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON (a list, one per input)")
    fmt.add_argument("--csv", action="store_true", help="print CSV, one row per segment")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="write the emotion timeline here "
        "(with several inputs, one file per input: PNG stem + _INPUT stem)",
    )
    p.add_argument("--checkpoint", default="best", help="best (default), last or an epoch number")
    p.add_argument(
        "--no-contributions",
        action="store_true",
        help="skip the per-modality contribution passes (faster)",
    )
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="skip: report an unusable input and go on with the others",
    )


def add_asr_options(p: argparse.ArgumentParser) -> None:
    """--asr and --vad, shared by predict and serve."""
    p.add_argument(
        "--asr",
        metavar="SOURCE",
        help="transcribe inputs given without a transcript: 'pocketsphinx' (offline, "
        "pip install 'deepmsi[asr]') or a Whisper model's Hugging Face id or local folder "
        "(e.g. openai/whisper-small); the transcript is marked machine-made",
    )
    p.add_argument(
        "--vad",
        choices=("auto", "silero", "energy"),
        default="auto",
        help="speech detector for cutting on speech (auto: silero where installed, else energy)",
    )


def run(args: argparse.Namespace) -> int:
    from deepmsi.errors import ConfigError, DeepMSIError
    from deepmsi.inference.predictor import Predictor
    from deepmsi.inference.results import format_csv, format_json, format_table

    inputs: list[Path | None] = list(args.inputs) or [None]
    if inputs == [None] and not args.text:
        raise ConfigError("give an INPUT file, --text, or both")
    if len(inputs) > 1 and (args.text or args.subtitles):
        raise ConfigError("--text and --subtitles describe a single input; give one INPUT")
    checkpoint = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    predictor = Predictor.from_run(
        args.run_dir,
        checkpoint=checkpoint,
        contributions=not args.no_contributions,
        asr=args.asr,
        vad=args.vad,
    )
    predictions, failed = [], 0
    for item in inputs:
        try:
            pred = predictor.predict(
                item,
                text=args.text,
                subtitles=args.subtitles,
                window=args.window,
                speech=args.speech,
            )
        except DeepMSIError as err:
            if args.on_error == "raise":
                raise
            failed += 1
            print(f"deepmsi predict: skipped: {err}", file=sys.stderr)
            continue
        predictions.append(pred)
        if args.plot:
            _plot(pred, args.plot, item, several=len(inputs) > 1)
    if args.json:
        print(format_json(predictions))
    elif args.csv:
        print(format_csv(predictions), end="")
    elif predictions:
        print(format_table(predictions))
    if failed:
        print(f"deepmsi predict: {failed} of {len(inputs)} inputs skipped", file=sys.stderr)
    return 0 if predictions else 2


def _plot(pred, path: Path, item: Path | None, *, several: bool) -> None:
    from deepmsi.inference.timeline import plot_timeline

    if several and item is not None:
        path = path.with_name(f"{path.stem}_{item.stem}{path.suffix or '.png'}")
    plot_timeline(pred, path)
    print(f"wrote {path}", file=sys.stderr)
