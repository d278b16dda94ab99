"""Reference implementations shared by the model tests (slow, obviously-correct loops)."""

from __future__ import annotations

import torch


def grow_blocks(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every Swin-V2 block's residual post-norms the weights a trained model has: a fresh
    backbone's blocks are the identity (zero norms), which would let a test of the attention or
    MLP path pass without running it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-2:-1] in (["norm1"], ["norm2"]):
                centre = 1.0 if name.endswith("weight") else 0.0
                p.copy_(centre + 0.1 * torch.randn(p.shape, generator=g))
    return model


def naive_shift_mask(grid: int, window: int, shift: int) -> torch.Tensor:
    """Reference built from first principles: after rolling by -shift, the token at rolled row r
    came from row (r + shift) % grid; two tokens of one window may attend to each other only when
    neither or both wrapped around, on each axis."""
    n = window * window
    windows = []
    for wr in range(grid // window):
        for wc in range(grid // window):
            cells = [
                (wr * window + i, wc * window + j) for i in range(window) for j in range(window)
            ]
            m = torch.zeros(n, n)
            for a, (ra, ca) in enumerate(cells):
                for b, (rb, cb) in enumerate(cells):
                    wrap_a = (ra + shift >= grid, ca + shift >= grid)
                    wrap_b = (rb + shift >= grid, cb + shift >= grid)
                    m[a, b] = 0.0 if wrap_a == wrap_b else -100.0
            windows.append(m)
    return torch.stack(windows)


def hf_swinv2(cfg, **overrides):
    """A transformers ``Swinv2ForImageClassification`` with ``cfg``'s backbone architecture and
    every weight randomised (biases, norms and logit scales included, so none is left at an
    identity value a wrong mapping would survive)."""
    from transformers import Swinv2Config, Swinv2ForImageClassification

    from deepmsi.models.swin_v2_hf import hf_config_fields

    hf_cfg = Swinv2Config(
        **hf_config_fields(cfg),
        num_labels=3,
        **overrides,
    )
    torch.manual_seed(0)
    model = Swinv2ForImageClassification(hf_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model
