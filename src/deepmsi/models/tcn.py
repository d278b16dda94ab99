"""Temporal convolutional network over per-frame visual features (Bai et al. 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _causal_conv(in_ch: int, out_ch: int, kernel: int, dilation: int) -> nn.Conv1d:
    conv = nn.Conv1d(in_ch, out_ch, kernel, dilation=dilation)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return weight_norm(conv)


class TemporalBlock(nn.Module):
    """Two dilated causal convolutions (weight norm, ReLU, dropout) plus a residual path.

    [B, C_in, F] -> [B, C_out, F]; output step t only sees input steps <= t.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, dilation: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = _causal_conv(in_ch, out_ch, kernel, dilation)
        self.conv2 = _causal_conv(out_ch, out_ch, kernel, dilation)
        self.drop = nn.Dropout(dropout)
        self.residual = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NOTE(official-code): left padding replaces their pad-both-sides-then-chomp; same result.
        y = self.drop(F.relu(self.conv1(F.pad(x, (self.pad, 0)))))
        y = self.drop(F.relu(self.conv2(F.pad(y, (self.pad, 0)))))
        return F.relu(y + self.residual(x))


class TCN(nn.Module):
    """Stacked temporal blocks with dilations 1, 2, 4, ...: [B, F, C] -> [B, C_last] (last step)."""

    def __init__(
        self, in_dim: int, channels: tuple[int, ...], kernel: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        widths = (in_dim, *channels)
        self.blocks = nn.Sequential(
            *(
                TemporalBlock(widths[i], widths[i + 1], kernel, 2**i, dropout)
                for i in range(len(channels))
            )
        )
        self.out_dim = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, F, C] per-frame features -> [B, C_last], the causal summary at the last frame."""
        return self.blocks(x.transpose(1, 2))[:, :, -1]
