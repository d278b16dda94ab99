"""Training seconds per MELD-sized epoch of the ``cpu`` preset, with VSC on and off.

The full text + audio + video model of ``model_preset("cpu")`` (7 MELD classes, text 384-d, audio
the width of ``SpectralEncoder``) is trained on random in-memory batches of the real shapes: text
[B, 384], audio [B, D_a], frames [B, F, 3, S, S] in [0, 1] (the preset's 8 frames of 96 px), labels
[B]. One step is what ``deepmsi.training.loop`` does per batch: forward (train mode, so modality
dropout and dropout are active), ``DeepMSILoss`` (cross-entropy + cross-modal SupCon), backward,
gradient clipping and an AdamW step, with the ``cpu`` training preset's batch size, learning rate,
weight decay, clip and loss weights. The VSC-on and VSC-off models are stepped alternately (ABBA
order, the same modality-dropout draw for both) so that both see the same machine load.

Reported per model: ``--steps`` measured steps after ``--warmup`` steps (fewer, but at least 4,
when ``--max-minutes`` runs out first); median, mean and min wall seconds per step, median process
CPU seconds per step, steps/s, and the epoch time EXTRAPOLATED from those steps to a MELD-sized
training split (``--utterances`` 10,000: ceil(10,000 / B) steps at the mean step time). Not in it:
reading the feature cache and collating (the in-memory batches are ready-made) and the learning
rate scheduler (negligible). The dev pass that ``deepmsi.training.loop`` runs after each epoch is
estimated separately from ``--eval-batches`` timed eval-mode batches of 64, extrapolated to
``--dev-utterances`` (MELD dev: 1,109).

    .venv/bin/python benchmarks/train_speed.py [--steps 16] [--warmup 2] [--batch 32]
        [--threads 2] [--max-minutes 3] [--json train_speed.json]

On a machine shared with other busy processes, ``--threads 1`` can be much faster than 2: each
multi-threaded op waits at a barrier for a thread that another process has descheduled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

MODES = ("on", "off")
N_BATCHES = 4  # distinct random batches, cycled
MELD_CLASSES = 7
MIN_STEPS = 4  # measured steps per model before --max-minutes may stop the run


def _config(vsc: bool, overrides: dict):
    from deepmsi.config import model_preset
    from deepmsi.features.audio import SpectralEncoder

    return model_preset(
        "cpu",
        num_classes=MELD_CLASSES,
        text_dim=384,
        audio_dim=SpectralEncoder().dim,
        vsc=vsc,
        **overrides,
    )


def _batches(cfg, batch: int, count: int, seed: int = 0) -> list[dict]:
    """``count`` random batches: text [B, Dt], audio [B, Da], frames [B, F, 3, S, S], labels [B]."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    return [
        {
            "text": torch.randn(batch, cfg.text_dim, generator=gen),
            "audio": torch.randn(batch, cfg.audio_dim, generator=gen),
            "frames": torch.rand(batch, cfg.frames, 3, s, s, generator=gen),
            "labels": torch.randint(0, cfg.num_classes, (batch,), generator=gen),
        }
        for _ in range(count)
    ]


class _Trainer:
    """One model, its loss and its optimiser; ``step`` is one training step of deepmsi.train()."""

    def __init__(self, cfg, train_cfg) -> None:
        import torch

        from deepmsi.losses import DeepMSILoss
        from deepmsi.models import DeepMSI, set_precision

        torch.manual_seed(0)
        self.model = DeepMSI(cfg).train()
        self.precision = train_cfg.precision
        set_precision(self.model, self.precision)
        self.criterion = DeepMSILoss(train_cfg.contrastive_weight, train_cfg.temperature)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay
        )
        self.grad_clip = train_cfg.grad_clip
        self.params = sum(p.numel() for p in self.model.parameters())

    def step(self, batch: dict, seed: int) -> tuple[float, float]:
        """One step -> (wall s, process CPU s); ``seed`` fixes the modality-dropout draws."""
        import torch
        from torch import nn

        from deepmsi.nn import autocast

        torch.manual_seed(seed)
        c0, t0 = time.process_time(), time.perf_counter()
        with autocast(self.precision, torch.device("cpu")):
            out = self.model(text=batch["text"], audio=batch["audio"], frames=batch["frames"])
            loss = self.criterion(out, batch["labels"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if not torch.isfinite(loss.total):
            raise RuntimeError(f"non-finite loss {float(loss.total)}")
        return wall, cpu

    def eval_seconds(self, batch: dict) -> float:
        """One eval-mode forward (what ``predict_dataset`` does per batch)."""
        import torch

        self.model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model(text=batch["text"], audio=batch["audio"], frames=batch["frames"])
            torch.softmax(out.logits, dim=-1)
        seconds = time.perf_counter() - t0
        self.model.train()
        return seconds


def measure(args: argparse.Namespace) -> dict:
    import torch

    from deepmsi.config import train_preset

    train_cfg = train_preset("cpu", batch_size=args.batch, precision=args.precision)
    cfgs = {mode: _config(mode == "on", {}) for mode in MODES}
    trainers = {mode: _Trainer(cfg, train_cfg) for mode, cfg in cfgs.items()}
    batches = _batches(cfgs["on"], args.batch, N_BATCHES)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu_times: dict[str, list[float]] = {mode: [] for mode in MODES}
    deadline = time.perf_counter() + 60 * args.max_minutes
    for i in range(args.warmup + args.steps):
        measured = i - args.warmup
        if measured >= MIN_STEPS and time.perf_counter() > deadline:
            break  # keep the run short on a loaded machine; the table says how many were taken
        order = MODES if i % 4 in (0, 3) else MODES[::-1]  # ABBA
        for mode in order:
            wall, cpu = trainers[mode].step(batches[i % N_BATCHES], seed=i)
            if measured >= 0:
                times[mode].append(wall)
                cpu_times[mode].append(cpu)

    eval_batch = train_cfg.eval_batch_size
    eval_batches = _batches(cfgs["on"], eval_batch, 1, seed=1)
    eval_times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i in range(1 + args.eval_batches):  # the first one is a warm-up
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            seconds = trainers[mode].eval_seconds(eval_batches[0])
            if i > 0:
                eval_times[mode].append(seconds)

    steps_per_epoch = math.ceil(args.utterances / args.batch)
    eval_steps = math.ceil(args.dev_utterances / eval_batch)
    cfg = cfgs["on"]
    result: dict = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {_cpus()} CPUs",
        "load_average_at_start": args.load_at_start,
        "preset": "cpu",
        "shapes": {
            "text": [args.batch, cfg.text_dim],
            "audio": [args.batch, cfg.audio_dim],
            "frames": [args.batch, cfg.frames, 3, cfg.image_size, cfg.image_size],
            "classes": cfg.num_classes,
        },
        "train": {
            k: train_cfg.to_dict()[k]
            for k in (
                "batch_size",
                "lr",
                "weight_decay",
                "grad_clip",
                "contrastive_weight",
                "precision",
            )
        },
        "modality_dropout": cfg.modality_dropout,
        "warmup_steps": args.warmup,
        "measured_steps": len(times["on"]),
        "utterances": args.utterances,
        "steps_per_epoch": steps_per_epoch,
        "dev_utterances": args.dev_utterances,
        "eval_batch_size": eval_batch,
        "measured_eval_batches": args.eval_batches,
        "modes": {},
    }
    for mode in MODES:
        ts, es = times[mode], eval_times[mode]
        mean = statistics.fmean(ts)
        dev_s = statistics.fmean(es) * eval_steps
        result["modes"][mode] = {
            "parameters": trainers[mode].params,
            "step_s": ts,
            "median_s_per_step": statistics.median(ts),
            "mean_s_per_step": mean,
            "min_s_per_step": min(ts),
            "steps_per_s": 1.0 / mean,
            "epoch_minutes_extrapolated": steps_per_epoch * mean / 60,
            "epoch_minutes_at_min_step": steps_per_epoch * min(ts) / 60,
            "cpu_s_per_step": cpu_times[mode],
            "median_cpu_s_per_step": statistics.median(cpu_times[mode]),
            "epoch_minutes_from_cpu_time": steps_per_epoch * statistics.fmean(cpu_times[mode]) / 60,
            "eval_s_per_batch": es,
            "dev_pass_minutes_extrapolated": dev_s / 60,
            "epoch_with_dev_minutes": (steps_per_epoch * mean + dev_s) / 60,
        }
    result["paired_median_off_over_on"] = statistics.median(
        f / n for f, n in zip(times["off"], times["on"], strict=True)
    )
    result["load_average_at_end"] = os.getloadavg()
    return result


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def table(result: dict, budget_minutes: float) -> str:
    shp = result["shapes"]
    lines = [
        f"cpu preset training speed (T+A+V, {shp['classes']} classes), torch {result['torch']}, "
        f"{result['torch_threads']} threads, {result['machine']}",
        f"batch {shp['frames'][0]}: text {shp['text'][1]}-d, audio {shp['audio'][1]}-d, "
        f"frames {'x'.join(map(str, shp['frames'][1:]))}; modality dropout "
        f"{result['modality_dropout']}; {result['measured_steps']} measured steps per model "
        f"after {result['warmup_steps']} warm-up, VSC on/off interleaved",
        f"epoch = {result['steps_per_epoch']} steps ({result['utterances']:,} utterances), "
        f"EXTRAPOLATED from the mean of the measured steps; +dev = "
        f"{result['dev_utterances']:,} dev utterances from {result['measured_eval_batches']} "
        f"timed eval batches of {result['eval_batch_size']}",
        f"{'VSC':<5}{'params':>10}{'s/step med':>11}{'mean':>7}{'min':>7}{'cpu s':>7}"
        f"{'steps/s':>9}{'epoch min':>10}{'+dev':>7}{'<= ' + f'{budget_minutes:g}':>7}"
        f"{'(at min)':>9}{'(cpu s)':>9}",
    ]
    for mode in MODES:
        r = result["modes"][mode]
        ok = "yes" if r["epoch_with_dev_minutes"] <= budget_minutes else "NO"
        lines.append(
            f"{mode:<5}{r['parameters']:>10,}{r['median_s_per_step']:>11.2f}"
            f"{r['mean_s_per_step']:>7.2f}{r['min_s_per_step']:>7.2f}"
            f"{r['median_cpu_s_per_step']:>7.2f}{r['steps_per_s']:>9.3f}"
            f"{r['epoch_minutes_extrapolated']:>10.1f}{r['epoch_with_dev_minutes']:>7.1f}{ok:>7}"
            f"{r['epoch_minutes_at_min_step']:>9.1f}{r['epoch_minutes_from_cpu_time']:>9.1f}"
        )
    on, off = result["modes"]["on"], result["modes"]["off"]
    lines += [
        "(at min): epoch at the fastest measured step; (cpu s): epoch at the mean process CPU "
        "time per step, i.e. uninterrupted by other processes (a quiet-core estimate only at "
        "--threads 1; with more threads it includes OpenMP spin-waiting)",
        f"off/on step time: mean {off['mean_s_per_step'] / on['mean_s_per_step']:.2f}x, "
        f"paired {result['paired_median_off_over_on']:.2f}x (median over steps of off/on of the "
        f"two adjacent steps), "
        f"median {off['median_s_per_step'] / on['median_s_per_step']:.2f}x, CPU time "
        f"{off['median_cpu_s_per_step'] / on['median_cpu_s_per_step']:.2f}x; load average "
        f"(1 min) {result['load_average_at_start'][0]:.2f} at start, "
        f"{result['load_average_at_end'][0]:.2f} at end",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16, help="measured steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--utterances", type=int, default=10_000, help="training utterances")
    parser.add_argument("--dev-utterances", type=int, default=1_109, help="dev utterances")
    parser.add_argument("--eval-batches", type=int, default=2, help="timed eval batches per model")
    parser.add_argument(
        "--max-minutes", type=float, default=3.0, help="stop measuring after this long"
    )
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="epoch budget checked")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    from deepmsi.config import PRECISIONS

    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--record", action="store_true", help="record rows in results.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.load_at_start = os.getloadavg()
    result = measure(args)
    print(table(result, args.budget_minutes))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.record:
        _record(result)


def _record(result: dict) -> None:
    from results import Row, command_line, record

    load = result["load_average_at_start"][0]
    precision = result["train"].get("precision", "fp32")
    suffix = "" if precision == "fp32" else f".{precision}"
    rows = []
    for mode, stats in result["modes"].items():
        note = (
            f"cpu preset T+A+V, {precision}, batch {result['train']['batch_size']}, "
            f"{result['torch_threads']} torch thread(s); extrapolated from "
            f"{result['measured_steps']} measured steps (mean {stats['mean_s_per_step']:.2f} "
            f"s/step) to {result['steps_per_epoch']} steps; load average {load:.1f} at start; "
            "goal <= 30 min"
        )
        rows.append(
            Row(
                f"speed.train_cpu_preset.vsc_{mode}{suffix}",
                "MELD-sized (10,000 utterances)",
                "tav",
                "minutes_per_epoch",
                round(stats["epoch_minutes_extrapolated"], 1),
                command_line(),
                note=note,
            )
        )
    record(rows)


if __name__ == "__main__":
    main()
