"""``deepmsi export --run RUN --onnx PATH``: the fusion model as ONNX, checked against torch."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export the fusion model to ONNX",
        description="Export a run's model (inputs: cached features, face frames, presence "
        "masks; output: class probabilities) to ONNX and compare onnxruntime with torch.",
    )
    p.add_argument("--run", dest="run_dir", required=True, type=Path, help="trained run folder")
    p.add_argument("--onnx", required=True, type=Path, metavar="PATH", help="output .onnx file")
    p.add_argument("--checkpoint", default="best", help="best (default), last or an epoch number")
    p.add_argument(
        "--check",
        type=int,
        default=8,
        metavar="N",
        help="compare on N items of the run's cache (random inputs when the cache "
        "is gone); 0 skips the check",
    )


def run(args: argparse.Namespace) -> int:
    from deepmsi.inference.export import check_feed, export_onnx
    from deepmsi.runs.folder import load_run

    checkpoint = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    trained = load_run(args.run_dir, checkpoint=checkpoint)
    feed, origin = (None, "") if args.check <= 0 else check_feed(trained, args.check)
    result = export_onnx(trained.model, args.onnx, check_inputs=feed)
    print(f"wrote {result.path} (inputs: {', '.join(result.inputs)}; output: probabilities)")
    if result.max_abs_diff is not None:
        print(f"onnxruntime vs torch on {origin}: max |diff| = {result.max_abs_diff:.2e}")
    if trained.context is not None:
        print(
            f"note: the ONNX model is utterance-level; the run's {trained.context_mode} "
            "dialogue-context head is not exported"
        )
    return 0
