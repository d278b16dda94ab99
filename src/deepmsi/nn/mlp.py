"""Multi-layer perceptrons: transformer feed-forward, BatchNorm MLP head, CLIP-style projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """Transformer feed-forward (Linear, GELU, dropout, Linear, dropout): [..., C] -> [..., Co]."""

    def __init__(
        self, dim: int, hidden: int, out_dim: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm that tolerates a training batch of one sample (it uses the running statistics).

    A last, odd-sized batch of 1 would otherwise crash training with "Expected more than 1 value
    per channel"; normalising that one sample with the running mean/var is the sensible fallback.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1 and self.running_mean is not None:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class MlpHead(nn.Module):
    """Stacked (Linear, BatchNorm, LeakyReLU 0.01, Dropout) blocks then a Linear: [B, D] -> [B, K].

    The authors' block for both the guidance network ("processor", hidden 512) and the
    classifier (hidden 512/256/128).
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), BatchNorm1d(h), nn.LeakyReLU(0.01), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ProjectionHead(nn.Module):
    """CLIP-style projection into the shared space: [B, D] -> [B, P].

    ``p = Linear(x)``; ``LayerNorm(p + Dropout(Linear(GELU(p))))``. Output is not L2-normalised;
    the contrastive loss normalises.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc = nn.Linear(out_dim, out_dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.projection(x)
        return self.norm(projected + self.drop(self.fc(self.act(projected))))
