"""``deepmsi predict --run RUN INPUT...``: emotions of clips, audio files or transcripts.

With ``--out FILE`` (.csv or .jsonl) it is a batch: INPUT may be a folder (every media file in
it) or a CSV list, one row per segment goes to FILE as each input finishes, and a rerun skips
the inputs already done (:mod:`deepmsi.inference.batch`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from deepmsi.config import PRECISIONS

if TYPE_CHECKING:
    from deepmsi.inference.predictor import Predictor


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
    add_precision_option(p)
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
        "--out",
        type=Path,
        metavar="FILE",
        help="batch: write one row per segment of every input to FILE (.csv or .jsonl) as it "
        "finishes; INPUT may then be a folder (every media file in it) or a CSV list (a file "
        "column, optional transcript). A rerun skips finished inputs and retries failed ones; "
        "a bad input is an error row, never an abort",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="with --out: start FILE over instead of resuming it",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="with --out: no progress bar or lines"
    )
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="skip: report an unusable input and go on with the others",
    )


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """--precision, shared by predict, serve and evaluate."""
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="arithmetic of the video backbone: bf16 is 1.3-1.9x as fast on CPUs with bf16 "
        "instructions (AVX-512 BF16, AMX) and on GPUs, at a small cost in accuracy",
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
    from deepmsi.inference.results import format_csv, format_json, format_table

    if args.out is not None:
        return _batch(args)
    _no_lists(args.inputs)
    inputs: list[Path | None] = list(args.inputs) or [None]
    if inputs == [None] and not args.text:
        raise ConfigError("give an INPUT file, --text, or both")
    if len(inputs) > 1 and (args.text or args.subtitles):
        raise ConfigError("--text and --subtitles describe a single input; give one INPUT")
    predictor = _load_predictor(args)
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


def _no_lists(inputs: list[Path]) -> None:
    from deepmsi.errors import ConfigError

    for p in inputs:
        if p.is_dir() or p.suffix.lower() == ".csv":
            raise ConfigError(
                f"{p}: a folder or a CSV list is a batch: add --out FILE (.csv or .jsonl)"
            )


def _load_predictor(args: argparse.Namespace) -> Predictor:
    """The run's predictor as the flags ask for it; its model card's summary goes to stderr."""
    from deepmsi.inference.predictor import Predictor

    checkpoint = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    predictor = Predictor.from_run(
        args.run_dir,
        checkpoint=checkpoint,
        contributions=not args.no_contributions,
        asr=args.asr,
        vad=args.vad,
        precision=args.precision,
    )
    _print_card(predictor)
    return predictor


def _print_card(predictor: Predictor) -> None:
    """The model card's one-line summary, on stderr: stdout carries only the predictions."""
    print(f"model: {predictor.card.summary()}", file=sys.stderr)


MAX_ERRORS_SHOWN = 10


def _batch(args: argparse.Namespace) -> int:
    """``--out FILE``: every input (a folder, a CSV list or media files) to FILE."""
    from deepmsi.errors import ConfigError
    from deepmsi.inference.batch import list_inputs

    clash = [
        f
        for f, on in (
            ("--text", args.text),
            ("--subtitles", args.subtitles),
            ("--plot", args.plot),
            ("--json", args.json),
            ("--csv", args.csv),
        )
        if on
    ]
    if clash:
        raise ConfigError(
            f"{clash[0]} does not go with --out (a CSV list gives transcripts; FILE's suffix "
            "gives the format)"
        )
    if not args.inputs:
        raise ConfigError("--out needs INPUT: a folder, a CSV list or media files")
    items = list_inputs(args.inputs)  # a bad folder or list fails before the model loads
    predictor = _load_predictor(args)
    result = predictor.predict_many(
        items, args.out, window=args.window, resume=not args.restart, progress=not args.no_progress
    )
    for problem in result.errors[:MAX_ERRORS_SHOWN]:
        print(f"deepmsi predict: failed: {problem.error}", file=sys.stderr)
    if result.failed > MAX_ERRORS_SHOWN:
        more = result.failed - MAX_ERRORS_SHOWN
        print(f"deepmsi predict: ... and {more} more (error rows in {args.out})", file=sys.stderr)
    print(result.summary())
    return 2 if result.failed and not (result.predicted or result.done_before) else 0


def _plot(pred, path: Path, item: Path | None, *, several: bool) -> None:
    from deepmsi.inference.timeline import plot_timeline

    if several and item is not None:
        path = path.with_name(f"{path.stem}_{item.stem}{path.suffix or '.png'}")
    plot_timeline(pred, path)
    print(f"wrote {path}", file=sys.stderr)
