"""bf16 autocast regions, and regions that stay in float32 inside them."""

from __future__ import annotations

import contextlib

import torch


def float32_region(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Turn autocast off on ``device`` where it is on (a no-op elsewhere, e.g. on "meta")."""
    if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on ``device`` for ``precision`` "bf16"; nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
