"""Stochastic depth: drop a whole residual branch per sample while training."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Zero the residual branch of a random subset of samples, rescaling the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, ...] -> [B, ...]; identity in eval mode or when p == 0."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep).div_(keep)  # B, 1, ...: one multiply below
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
