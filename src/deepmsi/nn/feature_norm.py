"""Standardisation of a frozen feature vector with statistics of the training data."""

from __future__ import annotations

import torch
from torch import nn


class FeatureNorm(nn.Module):
    """(x - mean) / std per dimension: [..., D] -> [..., D].

    Frozen encoders give features on very different scales (spectral descriptors mix Hz, dB and
    ratios), which a small head learns poorly from. The statistics are buffers: identity until
    ``set_stats`` is called (training sets them from its training split before the first step),
    then saved and loaded with the weights, so inference and ONNX export apply the same scaling.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Use these statistics; constant dimensions (std below ``eps``) are only centred."""
        self.mean.copy_(mean)
        self.std.copy_(torch.where(std > self.eps, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
