"""bf16 inference (``--precision bf16``) against fp32: the backbone's speed and what it changes.

Speed: for each preset, the Swin-V2 backbone with VSC on and off, in fp32 and under bf16
autocast, on the same inputs (as ``vsc_speed.py`` builds them), timed interleaved call by call
in inference mode; the blocks' residual post-norms are set to one so every block computes
something (a fresh backbone's blocks are the identity). Agreement: cosine similarity of each
frame's pooled feature, bf16 against fp32, and the share of frames above 0.999 (with VSC, a
frame whose kept tokens change falls below).

Accuracy (with ``--run RUN``): a split of the run's own cache (``--split``, default test) scored
in both precisions: weighted F1 of each, and the share of utterances given the same label.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision.py --threads 1 [--presets cpu paper]
        [--repeats 5] [--run demo-out/run [--split test|all]] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from vsc_speed import DEFAULT_BATCH, _inputs

from deepmsi.config import PRECISIONS


def _backbone(cfg, vsc: bool):
    import torch
    from torch import nn

    from deepmsi.models.swin_v2 import SwinV2, SwinV2Block

    torch.manual_seed(0)
    model = SwinV2(cfg, vsc=vsc).eval()
    for block in model.modules():
        if isinstance(block, SwinV2Block):
            for norm in (block.norm1, block.norm2):
                nn.init.ones_(norm.weight)
    return model


def measure_preset(name: str, repeats: int) -> dict:
    import torch

    from deepmsi.config import model_preset
    from deepmsi.models import set_precision

    cfg = model_preset(name)
    batch = DEFAULT_BATCH[name]
    images, guidance = _inputs(cfg, batch)
    out: dict = {"preset": name, "batch_clips": batch, "frames": cfg.frames, "modes": {}}
    for vsc in (True, False):
        model = _backbone(cfg, vsc)
        times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        features = {}
        with torch.inference_mode():
            for i in range(repeats + 1):  # the first round warms up
                for p in PRECISIONS if i % 2 else PRECISIONS[::-1]:
                    set_precision(model, p)
                    t0 = time.perf_counter()
                    features[p] = model(images, guidance)
                    if i:
                        times[p].append((time.perf_counter() - t0) / batch)
        cosine = torch.nn.functional.cosine_similarity(features["bf16"], features["fp32"], dim=-1)
        fp32, bf16 = (statistics.median(times[p]) for p in PRECISIONS)
        out["modes"]["on" if vsc else "off"] = {
            "ms_per_clip": {"fp32": 1000 * fp32, "bf16": 1000 * bf16},
            "speedup": fp32 / bf16,
            "paired_speedup": statistics.median(
                a / b for a, b in zip(times["fp32"], times["bf16"], strict=True)
            ),
            "cosine_min": float(cosine.min()),
            "cosine_median": float(cosine.median()),
            "frames_above_0999": float((cosine > 0.999).float().mean()),
        }
    return out


def measure_run(run_dir: Path, split: str) -> dict:
    from deepmsi.data.dataset import FeatureDataset, FeatureStore
    from deepmsi.metrics import compute_metrics
    from deepmsi.models import set_precision
    from deepmsi.runs.folder import load_run
    from deepmsi.runs.predict import predict_dataset

    run = load_run(run_dir)
    store = FeatureStore(Path(run.cache_path))
    records = store.records(None if split == "all" else split)
    dataset = FeatureDataset(store, records, run.model_config)
    labels = {}
    scores = {}
    for p in PRECISIONS:
        set_precision(run.model, p)
        t0 = time.perf_counter()
        probs = predict_dataset(run.model, dataset).probs
        labels[p] = probs.argmax(axis=1)
        m = compute_metrics(dataset.targets, labels[p], run.labels.names)
        scores[p] = {"weighted_f1": m.weighted_f1, "seconds": time.perf_counter() - t0}
    same = float((labels["fp32"] == labels["bf16"]).mean())
    return {
        "run": str(run_dir),
        "split": split,
        "utterances": len(records),
        "scores": scores,
        "same_label": same,
    }


def table(results: dict) -> str:
    lines = [
        "preset VSC   fp32 ms/clip  bf16 ms/clip  speedup (paired)  cosine min/median  >0.999",
    ]
    for r in results["presets"]:
        for mode, m in r["modes"].items():
            ms = m["ms_per_clip"]
            lines.append(
                f"{r['preset']:<6} {mode:<4} {ms['fp32']:>12.1f} {ms['bf16']:>13.1f}"
                f"  {m['speedup']:>6.2f}x ({m['paired_speedup']:.2f}x)"
                f"  {m['cosine_min']:>8.4f}/{m['cosine_median']:.4f}"
                f"  {100 * m['frames_above_0999']:>5.1f}%"
            )
    if "run" in results:
        r = results["run"]
        s = r["scores"]
        lines.append(
            f"{r['run']}: {r['split']} weighted F1 fp32 {100 * s['fp32']['weighted_f1']:.2f}, "
            f"bf16 {100 * s['bf16']['weighted_f1']:.2f}; same label for "
            f"{100 * r['same_label']:.1f}% of {r['utterances']} utterances"
        )
    return "\n".join(lines)


def _record(results: dict) -> None:
    from results import Row, command_line, record

    rows = []
    threads = results["torch_threads"]
    for r in results["presets"]:
        for mode, m in r["modes"].items():
            rows.append(
                Row(
                    f"precision.{r['preset']}.vsc_{mode}.bf16_speedup",
                    f"{r['frames']} frames, batch {r['batch_clips']} clips",
                    "v",
                    "speedup",
                    round(m["paired_speedup"], 3),
                    command_line(),
                    note=(
                        f"Swin-V2 backbone, fp32 / bf16 autocast wall time, paired median of "
                        f"{results['repeats']}; {m['ms_per_clip']['fp32']:.1f} vs "
                        f"{m['ms_per_clip']['bf16']:.1f} ms/clip; pooled-feature cosine min "
                        f"{m['cosine_min']:.4f}, {100 * m['frames_above_0999']:.0f}% of frames "
                        f"above 0.999; {threads} thread(s)"
                    ),
                )
            )
    if "run" in results:
        r = results["run"]
        for p in PRECISIONS:
            rows.append(
                Row(
                    f"precision.run.{p}.weighted_f1",
                    f"{r['run']} {r['split']} split ({r['utterances']} utterances)",
                    "tav",
                    "weighted_f1",
                    round(100 * r["scores"][p]["weighted_f1"], 2),
                    command_line(),
                    note=f"same predicted label in both precisions: {100 * r['same_label']:.1f}%",
                )
            )
    record(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run", type=Path, help="also score this run's cache both ways")
    parser.add_argument("--split", default="test", help="the split to score, or all")
    parser.add_argument("--record", action="store_true", help="record rows in results.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    results: dict = {
        "torch": torch.__version__,
        "torch_threads": args.threads,
        "repeats": args.repeats,
        "load_average_at_start": os.getloadavg(),
        "presets": [measure_preset(p, args.repeats) for p in args.presets],
    }
    if args.run:
        results["run"] = measure_run(args.run, args.split)
    print(table(results))
    if args.record:
        _record(results)


if __name__ == "__main__":
    main()
