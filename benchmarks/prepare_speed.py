"""Throughput of ``deepmsi prepare`` (clips per second) with 1 worker against N workers.

Each configuration prepares the same clips into a fresh cache in the same run, so the numbers are
comparable: decoding, face crops and the spectral audio features run in the workers, the MiniLM
text encoder in the main process. The clips are the real IEMOCAP clips of ../shared/data
(640x480 H.264 + AAC, 1.2 to 18 s) when present, else a synthetic corpus.

    .venv/bin/python benchmarks/prepare_speed.py [--workers 1 2] [--limit 64] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "iemocap-clips"


def _dataset(limit: int, tmp: Path):
    from deepmsi.data import load_dataset

    if CLIPS.is_dir():
        dataset, source = load_dataset(f"folder:{CLIPS}"), "iemocap-clips (real)"
    else:
        from deepmsi.demo.synthetic import write_corpus

        corpus = write_corpus(tmp / "corpus", dialogues=20, progress=False)
        dataset, source = load_dataset(f"meld:{corpus}"), "synthetic corpus"
    return replace(dataset, utterances=dataset.utterances[:limit]), source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit", type=int, default=64, help="clips to prepare per run")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--record", action="store_true", help="record rows in results.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from deepmsi.features.preparation import PrepareOptions, prepare
    from deepmsi.features.text import TextEncoder

    TextEncoder().encode(["warm up"])  # load the text model once, outside the timings
    rows = []
    with tempfile.TemporaryDirectory(prefix="prepare-speed-") as tmp:
        dataset, source = _dataset(args.limit, Path(tmp))
        seconds = sum(1 for _ in dataset.utterances)
        for workers in args.workers:
            options = PrepareOptions(
                frames=args.frames, image_size=args.image_size, workers=workers, progress=False
            )
            t0 = time.perf_counter()
            result = prepare(dataset, Path(tmp) / f"cache-{workers}", options)
            wall = time.perf_counter() - t0
            rows.append(
                {
                    "workers": workers,
                    "clips": result.prepared,
                    "seconds": round(wall, 2),
                    "clips_per_second": round(result.prepared / wall, 3),
                    "faces_found": result.faces_found,
                    "frames_total": result.frames_total,
                }
            )
    base = rows[0]["clips_per_second"]
    print(
        f"prepare: {seconds} clips of {source}, {args.frames} frames x {args.image_size} px, "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    )
    print(f"{'workers':>7} {'clips':>6} {'seconds':>8} {'clips/s':>8} {'speed-up':>8} faces")
    for r in rows:
        print(
            f"{r['workers']:>7} {r['clips']:>6} {r['seconds']:>8.1f} "
            f"{r['clips_per_second']:>8.2f} {r['clips_per_second'] / base:>7.2f}x "
            f"{r['faces_found']}/{r['frames_total']}"
        )
    if args.json:
        args.json.write_text(json.dumps({"source": source, "rows": rows}, indent=2) + "\n")
    if args.record:
        from results import Row, command_line, record

        record(
            [
                Row(
                    f"speed.prepare.workers_{r['workers']}",
                    f"{r['clips']} clips of {source}",
                    "tav",
                    "clips_per_second",
                    r["clips_per_second"],
                    command_line(),
                    note=(
                        f"{args.frames} frames x {args.image_size} px, spectral audio, MiniLM "
                        f"text; faces found in {r['faces_found']} of {r['frames_total']} frames; "
                        f"load average {os.getloadavg()[0]:.1f} at the end"
                    ),
                )
                for r in rows
            ]
        )


if __name__ == "__main__":
    main()
