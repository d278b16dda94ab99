"""deepmsi's Swin-V2 on transformers' weights against transformers' own ``Swinv2Model``.

For each architecture a ``Swinv2ForImageClassification`` with random weights (every tensor
perturbed, biases and norms included) is saved to a temporary folder in the Hub layout, loaded
with ``deepmsi.models.SwinV2.from_pretrained`` (VSC off) and both run on the same random images;
the table gives the largest absolute difference of the pooled output. No network is used.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pretrained_parity.py [--images 2]

transformers hard-codes the position-bias MLP at 512 wide, so the ``cpu`` and ``tiny``
architectures are measured with ``cpb_hidden=512`` (their presets use 64 and 16).
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import Swinv2Config, Swinv2ForImageClassification

from deepmsi.config import ModelConfig, model_preset
from deepmsi.models import SwinV2
from deepmsi.models.swin_v2_hf import hf_config_fields

CASES = {  # name -> (preset, transformers overrides)
    "tiny": ("tiny", {}),
    "tiny, no qkv bias, pretrained windows 5/5/4/4": (
        "tiny",
        {"qkv_bias": False, "pretrained_window_sizes": [5, 5, 4, 4]},
    ),
    "cpu": ("cpu", {}),
    "paper (= microsoft/swinv2-tiny-patch4-window8-256)": ("paper", {}),
}


def _transformers_model(cfg: ModelConfig, overrides: dict) -> Swinv2ForImageClassification:
    hf_cfg = Swinv2Config(
        **hf_config_fields(cfg),
        **overrides,
    )
    torch.manual_seed(0)
    model = Swinv2ForImageClassification(hf_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def max_diff(preset: str, overrides: dict, images: int) -> tuple[float, float]:
    """(max |deepmsi - transformers|, max |transformers|) of the pooled output."""
    cfg = model_preset(preset, cpb_hidden=512, drop_path=0.0, vsc=False)
    hf = _transformers_model(cfg, overrides)
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = SwinV2.from_pretrained(folder, cfg).eval()
    x = torch.randn(images, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        want = hf.swinv2(pixel_values=x).pooler_output
        got = ours(x)
    return (got - want).abs().max().item(), want.abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="random images per architecture")
    args = parser.parse_args()
    print("| architecture | max abs diff | max abs output |")
    print("|---|---:|---:|")
    for name, (preset, overrides) in CASES.items():
        diff, scale = max_diff(preset, overrides, args.images)
        print(f"| {name} | {diff:.2e} | {scale:.2f} |")


if __name__ == "__main__":
    main()
