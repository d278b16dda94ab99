"""Early fusion (the text/audio guidance for VSC) and modality dropout."""

from __future__ import annotations

import torch
from torch import nn

from deepmsi.nn import MlpHead


class Guidance(nn.Module):
    """concat(text, audio) -> MLP (Linear, BatchNorm, LeakyReLU, Dropout, Linear) -> [B, C3].

    Built over whichever of text/audio the model uses (``inputs``), so a T+V or A+V model is
    guided by its one utterance-level modality. C3 is the width of Swin stage 3.
    """

    def __init__(self, inputs: dict[str, int], hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        if not inputs:
            raise ValueError("guidance needs at least one input modality")
        self.inputs = tuple(inputs)
        self.mlp = MlpHead(sum(inputs.values()), (hidden,), out_dim, dropout)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """features name -> [B, D_name] (missing samples already hold placeholders) -> [B, C3]."""
        return self.mlp(torch.cat([features[name] for name in self.inputs], dim=-1))


def modality_dropout(
    present: dict[str, torch.Tensor], p: float, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Randomly hide each present modality of each sample with probability ``p``.

    present name -> BoolTensor[B]. A sample never loses all of its present modalities: when the
    draw would hide everything, one of its present modalities (chosen at random) is kept.
    """
    if p <= 0.0 or not present:
        return present
    names = list(present)
    mask = torch.stack([present[n] for n in names], dim=1)  # B, M
    draw = torch.rand(mask.shape, generator=generator, device=mask.device)
    keep = mask & (draw >= p)
    lost_all = mask.any(dim=1) & ~keep.any(dim=1)  # B
    # For those samples keep the present modality with the highest draw (a uniform choice).
    rescue = torch.where(mask, draw, torch.full_like(draw, -1.0)).argmax(dim=1)  # B
    rescue_mask = nn.functional.one_hot(rescue, len(names)).bool() & lost_all[:, None]
    keep = keep | rescue_mask
    return {n: keep[:, i] for i, n in enumerate(names)}
