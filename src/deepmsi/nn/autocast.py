"""Regions that stay in float32 inside an autocast (bf16) region."""

from __future__ import annotations

import contextlib

import torch


def float32_region(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Turn autocast off on ``device`` where it is on (a no-op elsewhere, e.g. on "meta")."""
    if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
