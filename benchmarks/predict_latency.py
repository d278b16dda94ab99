"""Warm latency of ``Predictor.predict`` on a 5-second clip, stage by stage.

A real IEMOCAP clip of 5.0 s (640x480 H.264 + AAC) with its transcript, when ../shared/data is
present; otherwise a synthetic clip of about 5 s. The predictor is loaded once and warmed up, then
``--repeats`` calls are timed; each stage (decode, face crop, text encoder, audio encoder, model,
per-modality contribution passes) reports its median, as does the whole call.

    .venv/bin/python benchmarks/predict_latency.py --run demo-out/run [--repeats 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "iemocap-clips"
CLIP_ID = "Ses01F_impro02_M005"  # 5.0 s
STAGES = ("decode", "face_crop", "text_encoder", "audio_encoder", "model", "contributions")


def _real_clip() -> tuple[Path, str] | None:
    import csv

    labels = CLIPS / "labels.csv"
    if not labels.is_file():
        return None
    with labels.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["utterance_id"] == CLIP_ID:
                return CLIPS / row["file"], row["transcript"]
    return None


def _synthetic_clip(folder: Path) -> tuple[Path, str]:
    """A synthetic clip of about 5 s (the corpus writer draws lengths of x0.8..x1.25)."""
    from deepmsi.demo.synthetic import write_corpus

    root = write_corpus(
        folder / "corpus",
        dialogues=3,
        utterances_per_dialogue=1,
        splits=(1, 1, 1),
        seconds=5.0,
        progress=False,
    )
    return sorted(root.rglob("*.mp4"))[0], "I can't believe you did that."


def measure(run: Path, repeats: int, contributions: bool) -> dict:
    from deepmsi.inference.predictor import Predictor

    with tempfile.TemporaryDirectory() as tmp:
        found = _real_clip()
        clip, text = found if found else _synthetic_clip(Path(tmp))
        t0 = time.perf_counter()
        predictor = Predictor.from_run(run, contributions=contributions)
        load_s = time.perf_counter() - t0
        predictor.predict(clip, text=text)  # warm-up: lazy imports, allocator, caches
        rows: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
        for _ in range(repeats):
            t0 = time.perf_counter()
            pred = predictor.predict(clip, text=text)
            rows["total"].append(time.perf_counter() - t0)
            for stage in STAGES:
                rows[stage].append(predictor.last_timings.get(stage, 0.0))
    import torch

    return {
        "clip": clip.name if found else f"synthetic clip {clip.name}",
        "modalities": list(predictor.modalities),
        "label": pred.label,
        "repeats": repeats,
        "load_seconds": load_s,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {_cpus()} CPUs",
        "median_ms": {k: 1000 * statistics.median(v) for k, v in rows.items()},
        "min_ms": {k: 1000 * min(v) for k, v in rows.items()},
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def table(result: dict) -> str:
    lines = [
        f"warm predict latency, {result['clip']} ({'+'.join(result['modalities'])}), "
        f"median of {result['repeats']}, torch threads {result['torch_threads']}",
        f"{'stage':<16}{'median ms':>11}{'min ms':>9}",
    ]
    for stage in (*STAGES, "total"):
        lines.append(
            f"{stage:<16}{result['median_ms'][stage]:>11.1f}{result['min_ms'][stage]:>9.1f}"
        )
    lines.append(f"(loading the run and its encoders once: {result['load_seconds']:.1f} s)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="trained run folder")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--no-contributions", action="store_true", help="skip the per-modality contribution passes"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--record", action="store_true", help="record the row in results.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = measure(args.run, args.repeats, not args.no_contributions)
    print(json.dumps(result, indent=2) if args.json else table(result))
    if args.record:
        from results import Row, command_line, record

        stages = ", ".join(f"{k} {v:.0f}" for k, v in result["median_ms"].items() if k != "total")
        note = (
            f"median of {result['repeats']}, {result['torch_threads']} torch thread(s); "
            f"stages (ms): {stages}"
        )
        record(
            [
                Row(
                    "speed.predict.warm_latency_5s_clip",
                    result["clip"],
                    "+".join(result["modalities"]),
                    "ms",
                    round(result["median_ms"]["total"], 1),
                    command_line(),
                    note=note,
                )
            ]
        )


if __name__ == "__main__":
    main()
