"""Visual backbone speed with visual sequence compression (VSC) on and off, per preset.

For each preset (``cpu``, ``paper``) two Swin-V2 backbones are built from the same config, one
with VSC in stage 3 and one without, and run on the same inputs (a batch of B clips of the
preset's F frames, i.e. B*F images, plus the same random text/audio guidance vector) in
inference mode. Reported per configuration:

- forward time per clip: wall-clock seconds of one backbone forward on the batch divided by B,
  median (and min) of ``--repeats`` timed calls after two warm-up calls. VSC on and off are
  interleaved call by call (alternating which goes first) so both see the same machine load;
  the process CPU time of the same calls is reported too (less sensitive to other processes);
- where the time goes: median seconds per clip in each stage and inside the VSC modules
  (token scoring, top-k, gather, merge), timed with forward hooks;
- tokens per frame at the input and output of each stage (stage 3's output shrinks with VSC);
- the peer: transformers' ``Swinv2Model`` with the same architecture (VSC off; its position-bias
  MLP is 512 wide, transformers hard-codes that, so deepmsi's side of this pair is built with
  ``cpb_hidden=512``), its random weights mapped into deepmsi's backbone with
  ``deepmsi.models.swin_v2_hf.load_hf_weights``. Equality is checked before timing: the pooled
  outputs of both on the timed input must agree within ``PEER_ATOL``, else the benchmark stops.
  The pair is timed in the same interleaved loop as VSC on/off (forward, inference mode), and
  once more for training (forward + backward of the pooled output's sum, train mode, no dropout
  or drop-path), ``--train-repeats`` times;
- FLOPs per clip: matmul/linear/conv/attention FLOPs counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on one clip (a multiply-add counts 2; softmax,
  norms and other element-wise ops are not counted);
- peak memory: the rise of the process's peak resident set size (VmHWM) during one inference
  forward, in a fresh subprocess per configuration, over its RSS after building the model and
  inputs (free heap returned with ``malloc_trim``, peak reset through ``/proc/self/clear_refs``).
  It covers activations, temporaries and allocator/oneDNN scratch of the forward pass, not the
  weights or the inputs; the allocator may round it by a few MB.

    .venv/bin/python benchmarks/vsc_speed.py [--presets cpu paper] [--repeats 7] [--batch B]
        [--threads 2] [--train-repeats 3] [--json vsc_speed.json] [--record]

``--batch`` applies to every preset; by default the cpu preset uses 8 clips (64 images of 96 px)
and the paper preset 1 clip (15 images of 256 px) so that the run stays within a few minutes on
a 2-core CPU. On a machine shared with other busy processes, ``--threads 1`` is both faster and
steadier than 2 (each multi-threaded op waits at a barrier for a descheduled thread); the paired
off/on ratio (adjacent calls) is the figure least disturbed by such load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_BATCH = {"cpu": 8, "paper": 1, "tiny": 8}
WARMUP = 2
MODES = ("on", "off")
PEERS = ("deepmsi", "hf")  # deepmsi's backbone with the peer's weights, transformers' Swinv2Model
PEER_ATOL = 1e-4  # pooled output agreement required before the pair is timed


def _inputs(cfg, batch: int, seed: int = 0):
    """images [B*F, 3, S, S] (normalised) and guidance [B*F, C3], as VideoEncoder feeds them."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n = batch * cfg.frames
    images = torch.randn(n, 3, cfg.image_size, cfg.image_size, generator=gen)  # B*F, 3, S, S
    guidance = torch.randn(n, cfg.stage_dims[2], generator=gen)  # B*F, C3
    return images, guidance


def _backbone(cfg, vsc: bool):
    import torch

    from deepmsi.models.swin_v2 import SwinV2

    torch.manual_seed(0)
    return SwinV2(cfg, vsc=vsc).eval()


def _peer_pair(cfg):
    """transformers' Swinv2Model with ``cfg``'s architecture (random weights, VSC off) and
    deepmsi's SwinV2 holding the same weights: {"deepmsi": ..., "hf": ...}."""
    import torch
    from transformers import Swinv2Config, Swinv2Model

    from deepmsi.models.swin_v2 import SwinV2
    from deepmsi.models.swin_v2_hf import HF_CPB_HIDDEN, hf_config_fields, load_hf_weights

    hf_cfg = Swinv2Config(
        **hf_config_fields(cfg),
    )
    torch.manual_seed(0)
    hf = Swinv2Model(hf_cfg, add_pooling_layer=True).eval()
    ours = SwinV2(cfg.replace(cpb_hidden=HF_CPB_HIDDEN, drop_path=0.0), vsc=False).eval()
    load_hf_weights(ours, hf.state_dict(), "Swinv2Model")
    return {"deepmsi": ours, "hf": _HFPooled(hf)}


class _HFPooled:
    """Swinv2Model called like deepmsi's backbone: images -> pooled [N, C]."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, images, _guidance=None):
        return self.model(pixel_values=images).pooler_output

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self


def _check_peers(peers, images) -> float:
    import torch

    with torch.inference_mode():
        diff = (peers["deepmsi"](images) - peers["hf"](images)).abs().max().item()
    if not diff <= PEER_ATOL:
        raise SystemExit(f"deepmsi and Swinv2Model disagree by {diff:.2e} (> {PEER_ATOL})")
    return diff


def _time_training(peers, images, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of forward + backward (sum of the pooled output), interleaved."""

    wall: dict[str, list[float]] = {name: [] for name in PEERS}
    for model in peers.values():
        model.train()
    try:
        for r in range(repeats + 1):  # the first round warms up
            for name in PEERS if r % 2 == 0 else PEERS[::-1]:
                t0 = time.perf_counter()
                peers[name](images).sum().backward()
                if r:
                    wall[name].append(time.perf_counter() - t0)
    finally:
        for model in peers.values():
            model.train(False)
    return wall


def _speedup(slow: list[float], fast: list[float]) -> dict[str, float]:
    """slow/fast: ratio of medians and median of the ratios of adjacent calls."""
    return {
        "median_wall": statistics.median(slow) / statistics.median(fast),
        # adjacent calls see about the same load: the median of their ratios is the steadiest
        "paired_median_wall": statistics.median(s / f for s, f in zip(slow, fast, strict=True)),
    }


class _HookTimer:
    """Wall seconds spent inside each named submodule during the forwards since ``reset``."""

    def __init__(self, modules: dict[str, object]) -> None:
        self.seconds: dict[str, float] = {}
        self._start: dict[str, float] = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(self._pre(name))
            module.register_forward_hook(self._post(name))
        self.reset()

    def reset(self) -> None:
        self.seconds = {}

    def _pre(self, name: str):
        def hook(_module, _args) -> None:
            self._start[name] = time.perf_counter()

        return hook

    def _post(self, name: str):
        def hook(_module, _args, _out) -> None:
            spent = time.perf_counter() - self._start[name]
            self.seconds[name] = self.seconds.get(name, 0.0) + spent

        return hook


def _timed_modules(model) -> dict[str, object]:
    from deepmsi.models.vsc import VisualSequenceCompression

    named = {f"stage{i + 1}": stage for i, stage in enumerate(model.stages)}
    vsc = [m for m in model.modules() if isinstance(m, VisualSequenceCompression)]
    named.update({f"vsc{i}": m for i, m in enumerate(vsc)})
    return named


def _flops_per_clip(model, cfg) -> tuple[int, dict[str, int]]:
    """Total and per-stage FLOPs of one clip (F images), counted by FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    images, guidance = _inputs(cfg, 1, seed=1)
    with torch.inference_mode(), FlopCounterMode(display=False, depth=2) as counter:
        model(images, guidance)
    counts = counter.get_flop_counts()
    stages = {
        f"stage{i + 1}": int(sum(counts.get(f"SwinV2.stages.{i}", {}).values()))
        for i in range(len(model.stages))
    }
    return int(counter.get_total_flops()), stages


def _rss_mb(field: str) -> float:
    """VmRSS (current) or VmHWM (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


def _memory_probe(spec: str) -> None:
    """Subprocess entry: build one configuration, print its peak-RSS rise over one forward.

    ``ru_maxrss`` cannot be used as the baseline here: Linux carries it over fork + exec, so the
    child starts with the parent's peak. Instead, free heap pages go back to the OS
    (``malloc_trim``) and the peak RSS is reset to the current RSS (``/proc/self/clear_refs``)
    just before the forward; VmHWM afterwards is the forward's peak.
    """
    import ctypes

    import torch

    from deepmsi.config import model_preset

    preset, mode, batch, threads = spec.split(":")
    torch.set_num_threads(int(threads))
    cfg = model_preset(preset)
    model = _backbone(cfg, vsc=mode == "on")
    images, guidance = _inputs(cfg, int(batch))
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _rss_mb("VmRSS")
    with torch.inference_mode():
        model(images, guidance)
    peak = _rss_mb("VmHWM")
    print(json.dumps({"rss_before_mb": before, "forward_peak_rise_mb": peak - before}))


def _measure_memory(preset: str, mode: str, batch: int, threads: int) -> dict[str, float]:
    spec = f"{preset}:{mode}:{batch}:{threads}"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-probe", spec],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_preset(
    preset: str, batch: int, repeats: int, threads: int, train_repeats: int = 3
) -> dict:
    """Time, count and probe the VSC-on and VSC-off backbones of one preset, and the pair
    deepmsi / transformers' Swinv2Model (VSC off) on the same weights."""
    import torch

    from deepmsi.config import model_preset

    cfg = model_preset(preset)
    images, guidance = _inputs(cfg, batch)
    models = {mode: _backbone(cfg, vsc=mode == "on") for mode in MODES}
    timers = {mode: _HookTimer(_timed_modules(m)) for mode, m in models.items()}
    result: dict = {
        "preset": preset,
        "batch_clips": batch,
        "frames": cfg.frames,
        "image_size": cfg.image_size,
        "vsc_grids": list(cfg.vsc_grids),
        "modes": {},
    }
    for mode, model in models.items():
        total, per_stage = _flops_per_clip(model, cfg)
        result["modes"][mode] = {
            "stage_tokens": [list(t) for t in model.stage_tokens()],  # per frame (in, out)
            "gflops_per_clip": total / 1e9,
            "gflops_per_clip_by_stage": {k: v / 1e9 for k, v in per_stage.items()},
            "memory": _measure_memory(preset, mode, batch, threads),
            "wall_s": [],
            "cpu_s": [],
            "parts_s": [],
        }
    peers = _peer_pair(cfg)
    peer_wall: dict[str, list[float]] = {name: [] for name in PEERS}
    result["peer"] = {"max_abs_diff": _check_peers(peers, images), "atol": PEER_ATOL}
    with torch.inference_mode():
        for model in [*models.values(), *peers.values()]:
            for _ in range(WARMUP):
                model(images, guidance)
        for r in range(repeats):
            order = MODES if r % 2 == 0 else MODES[::-1]
            for mode in order:
                rec = result["modes"][mode]
                timers[mode].reset()
                c0, t0 = time.process_time(), time.perf_counter()
                models[mode](images, guidance)
                rec["wall_s"].append(time.perf_counter() - t0)
                rec["cpu_s"].append(time.process_time() - c0)
                rec["parts_s"].append(dict(timers[mode].seconds))
            for name in PEERS if r % 2 == 0 else PEERS[::-1]:
                t0 = time.perf_counter()
                peers[name](images)
                peer_wall[name].append(time.perf_counter() - t0)
    train_wall = _time_training(peers, images, train_repeats) if train_repeats else None
    for rec in result["modes"].values():
        rec["median_s_per_clip"] = statistics.median(rec["wall_s"]) / batch
        rec["min_s_per_clip"] = min(rec["wall_s"]) / batch
        rec["median_cpu_s_per_clip"] = statistics.median(rec["cpu_s"]) / batch
        parts = rec.pop("parts_s")
        names = sorted({k for p in parts for k in p if not k.startswith("vsc")})
        rec["median_s_per_clip_by_part"] = {
            k: statistics.median(p.get(k, 0.0) for p in parts) / batch for k in names
        }
        rec["median_s_per_clip_by_part"]["vsc"] = (
            statistics.median(sum(v for k, v in p.items() if k.startswith("vsc")) for p in parts)
            / batch
        )
    on, off = result["modes"]["on"], result["modes"]["off"]
    result["peer"].update(
        {
            "wall_s": peer_wall,
            "median_s_per_clip": {k: statistics.median(v) / batch for k, v in peer_wall.items()},
            "train_wall_s": train_wall,
        }
    )
    result["speedup_off_over_hf"] = _speedup(peer_wall["hf"], peer_wall["deepmsi"])
    if train_wall:
        result["speedup_train_over_hf"] = _speedup(train_wall["hf"], train_wall["deepmsi"])
    result["speedup_off_over_on"] = {
        **_speedup(off["wall_s"], on["wall_s"]),
        "min_wall": off["min_s_per_clip"] / on["min_s_per_clip"],
        "median_cpu": off["median_cpu_s_per_clip"] / on["median_cpu_s_per_clip"],
        "flops": off["gflops_per_clip"] / on["gflops_per_clip"],
    }
    return result


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def table(results: dict) -> str:
    head = (
        f"Swin-V2 backbone forward, inference mode, torch {results['torch']}, "
        f"{results['torch_threads']} threads, {results['machine']}; "
        f"median (min) of {results['repeats']} interleaved calls; paired = median over repeats of "
        f"off/on of the two adjacent calls"
    )
    lines = [head]
    cols = (
        f"{'preset':<7}{'VSC':<5}{'batch':>6}{'tokens/frame per stage (in>out)':>34}"
        f"{'GFLOP/clip':>11}{'ms/clip':>9}{'(min)':>8}{'cpu ms':>8}{'peak +MB':>9}"
    )
    lines.append(cols)
    for res in results["presets"]:
        for mode in MODES:
            rec = res["modes"][mode]
            toks = " ".join(f"{a}>{b}" if a != b else f"{a}" for a, b in rec["stage_tokens"])
            lines.append(
                f"{res['preset']:<7}{mode:<5}{res['batch_clips']:>6}{toks:>34}"
                f"{rec['gflops_per_clip']:>11.2f}{1000 * rec['median_s_per_clip']:>9.1f}"
                f"({1000 * rec['min_s_per_clip']:>6.1f})"
                f"{1000 * rec['median_cpu_s_per_clip']:>8.0f}"
                f"{rec['memory']['forward_peak_rise_mb']:>9.0f}"
            )
        s = res["speedup_off_over_on"]
        lines.append(
            f"{'':<7}off/on: wall {s['median_wall']:.2f}x (min {s['min_wall']:.2f}x, paired "
            f"{s['paired_median_wall']:.2f}x), "
            f"cpu {s['median_cpu']:.2f}x, FLOPs {s['flops']:.2f}x "
            f"(wall/FLOP ratio {s['paired_median_wall'] / s['flops']:.2f})"
        )
        peer, h = res["peer"], res["speedup_off_over_hf"]
        lines.append(
            f"{'':<7}vs transformers Swinv2Model (VSC off, same weights, outputs within "
            f"{peer['max_abs_diff']:.1e}): {1000 * peer['median_s_per_clip']['hf']:.1f} ms/clip, "
            f"deepmsi {1000 * peer['median_s_per_clip']['deepmsi']:.1f}: "
            f"{h['median_wall']:.2f}x (paired {h['paired_median_wall']:.2f}x)"
        )
        if t := res.get("speedup_train_over_hf"):
            lines.append(
                f"{'':<7}forward + backward vs Swinv2Model: {t['median_wall']:.2f}x "
                f"(paired {t['paired_median_wall']:.2f}x)"
            )
    lines.append("")
    lines.append("median ms per clip by part (hook-timed; 'vsc' = inside the VSC modules)")
    parts = ["stage1", "stage2", "stage3", "stage4", "vsc"]
    lines.append(f"{'preset':<7}{'VSC':<5}" + "".join(f"{p:>9}" for p in parts))
    for res in results["presets"]:
        for mode in MODES:
            by = res["modes"][mode]["median_s_per_clip_by_part"]
            lines.append(
                f"{res['preset']:<7}{mode:<5}" + "".join(f"{1000 * by[p]:>9.1f}" for p in parts)
            )
    lines.append("")
    lines.append("GFLOP per clip by stage")
    lines.append(f"{'preset':<7}{'VSC':<5}" + "".join(f"{p:>9}" for p in parts[:4]))
    for res in results["presets"]:
        for mode in MODES:
            by = res["modes"][mode]["gflops_per_clip_by_stage"]
            lines.append(
                f"{res['preset']:<7}{mode:<5}" + "".join(f"{by[p]:>9.2f}" for p in parts[:4])
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per configuration")
    parser.add_argument("--batch", type=int, help="clips per forward (default: cpu 8, paper 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--train-repeats", type=int, default=3, help="timed forward+backward calls (0: none)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--record", action="store_true", help="record rows in results.json")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        _memory_probe(args.memory_probe)
        return
    import torch

    torch.set_num_threads(args.threads)
    results = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {_cpus()} CPUs",
        "load_average_at_start": os.getloadavg(),
        "repeats": args.repeats,
        "presets": [
            measure_preset(
                p,
                args.batch or DEFAULT_BATCH.get(p, 1),
                args.repeats,
                args.threads,
                args.train_repeats,
            )
            for p in args.presets
        ],
    }
    results["load_average_at_end"] = os.getloadavg()
    print(table(results))
    print(
        f"load average (1 min) at start {results['load_average_at_start'][0]:.2f}, "
        f"at end {results['load_average_at_end'][0]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.record:
        _record(results)


def _record(results: dict) -> None:
    from results import Row, command_line, record

    rows = []
    for preset in results["presets"]:
        on, off = preset["modes"]["on"], preset["modes"]["off"]
        geometry = f"{preset['frames']} frames x {preset['image_size']} px"
        for mode, stats in (("on", on), ("off", off)):
            tokens = " ".join(str(t[1]) for t in stats["stage_tokens"])
            note = (
                f"visual backbone forward, batch {preset['batch_clips']} clips, "
                f"{results['torch_threads']} thread(s), median of {results['repeats']}; "
                f"{stats['gflops_per_clip']:.2f} GFLOP/clip; tokens per stage {tokens}; "
                f"load average {results['load_average_at_start'][0]:.1f}"
            )
            rows.append(
                Row(
                    f"speed.vsc.{preset['preset']}.{mode}",
                    geometry,
                    "v",
                    "ms_per_clip",
                    round(1000 * stats["median_s_per_clip"], 1),
                    command_line(),
                    note=note,
                )
            )
        ratios = [
            ("speedup_off_over_on", "on", "VSC off / on wall time, paired median"),
            ("speedup_off_over_hf", "hf", "transformers Swinv2Model / deepmsi (VSC off), paired"),
            ("speedup_train_over_hf", "hf_train", "forward+backward, Swinv2Model / deepmsi"),
        ]
        for key, name, what in ratios:
            if key not in preset:
                continue
            ratio = preset[key]
            flops = f"; FLOP ratio {ratio['flops']:.2f}" if "flops" in ratio else ""
            rows.append(
                Row(
                    f"speed.vsc.{preset['preset']}.speedup_over_{name}",
                    geometry,
                    "v",
                    "speedup",
                    round(ratio["paired_median_wall"], 3),
                    command_line(),
                    note=(
                        f"{what} (median-of-medians {ratio['median_wall']:.2f}){flops}; "
                        f"{results['torch_threads']} thread(s), median of {results['repeats']}; "
                        f"load average {results['load_average_at_start'][0]:.1f}"
                    ),
                )
            )
    record(rows)


if __name__ == "__main__":
    main()
