"""Can the demo's Swin-V2 see the face at all? Per-frame face-group probe on a demo cache.

The demo's faces carry one visual cue: the mouth curves up, stays flat or curves down
(``deepmsi.demo.synthetic.CUES``). This trains the demo's video backbone plus one linear layer to
tell those three groups apart from single frames (150 AdamW steps of 32 clips, lr 5e-4) and
scores dev frames; it also fits a logistic regression on the untrained backbone's features. Each
variant changes one thing:

- ``identity-init``: deepmsi's backbone as it is (residual post-norms start at zero, as in the
  official Swin-V2; no VSC, as in the video-only model);
- ``unit-norm-init``: those norms start at one instead (what deepmsi did before);
- ``vsc-unguided``: identity init, VSC on with no text or audio to guide it (tokens ranked
  against their own mean).

    .venv/bin/deepmsi demo --out demo-out            # makes demo-out/cache
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/video_probe.py demo-out/cache [--record]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from results import Row, command_line, record
from torch import nn

from deepmsi.config import model_preset
from deepmsi.data.dataset import FeatureStore
from deepmsi.demo.demo import MODEL, PREPARE
from deepmsi.demo.synthetic import CUES
from deepmsi.models.deepmsi import VideoEncoder
from deepmsi.models.swin_v2 import SwinV2Block

GROUPS = ("up", "flat", "down")
VARIANTS = ("identity-init", "unit-norm-init", "vsc-unguided")


def frames_and_groups(store: FeatureStore, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, F, 3, S, S] floats in [0, 1] and each clip's face group [N]."""
    clips, groups = [], []
    for rec in store.records(split):
        clips.append(np.asarray(store.load(rec.id).frames))  # F, S, S, 3 uint8
        groups.append(GROUPS.index(CUES[rec.label][0]))
    x = torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).float() / 255.0
    return x, torch.tensor(groups)


def probe(store: FeatureStore, variant: str, *, steps: int, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    (xtr, ytr), (xdv, ydv) = frames_and_groups(store, "train"), frames_and_groups(store, "dev")
    frames = xtr.shape[1]
    ytr_f, ydv_f = ytr.repeat_interleave(frames), ydv.repeat_interleave(frames)
    torch.manual_seed(seed)
    cfg = model_preset("cpu", **MODEL, **PREPARE, vsc=variant == "vsc-unguided")
    encoder = VideoEncoder(cfg)
    backbone = encoder.backbone
    if variant == "unit-norm-init":
        for block in backbone.modules():
            if isinstance(block, SwinV2Block):
                nn.init.ones_(block.norm1.weight)
                nn.init.ones_(block.norm2.weight)

    def features(x: torch.Tensor) -> torch.Tensor:
        return backbone((x.flatten(0, 1) - encoder.mean) / encoder.std)

    with torch.no_grad():
        backbone.eval()
        ftr, fdv = features(xtr).numpy(), features(xdv).numpy()
    lin = LogisticRegression(max_iter=2000).fit(ftr, ytr_f.numpy())
    untrained = float(lin.score(fdv, ydv_f.numpy()))

    head = nn.Linear(backbone.num_features, len(GROUPS))
    opt = torch.optim.AdamW(
        [{"params": backbone.parameters(), "lr": 5e-4}, {"params": head.parameters(), "lr": 2e-3}],
        weight_decay=0.01,
    )
    rng = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    backbone.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xtr), (32,), generator=rng)
        loss = F.cross_entropy(head(features(xtr[idx])), ytr[idx].repeat_interleave(frames))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        backbone.eval()
        trained = float((head(features(xdv)).argmax(1) == ydv_f).float().mean())
    majority = float(torch.bincount(ydv_f).max()) / len(ydv_f)
    return {
        "variant": variant,
        "untrained_probe_dev_accuracy": round(100 * untrained, 1),
        "trained_dev_accuracy": round(100 * trained, 1),
        "majority_dev_accuracy": round(100 * majority, 1),
        "final_train_loss": round(loss.item(), 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cache", type=Path)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--record", action="store_true", help="record rows in results.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    store = FeatureStore(args.cache)
    rows = []
    for variant in args.variants:
        result = probe(store, variant, steps=args.steps, seed=args.seed)
        print(json.dumps(result), flush=True)
        for key in ("untrained_probe_dev_accuracy", "trained_dev_accuracy"):
            rows.append(
                Row(
                    f"video_probe.{variant}.{key}",
                    f"demo cache, face group (3 classes) per frame, {args.steps} steps, "
                    f"majority {result['majority_dev_accuracy']}",
                    "v",
                    key,
                    result[key],
                    command=command_line(),
                )
            )
    if args.record:
        record(rows)


if __name__ == "__main__":
    main()
