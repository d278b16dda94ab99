"""Visual sequence compression (VSC): keep the tokens that matter to the utterance, merge the rest.

Each visual token is scored by its cosine similarity to a query made of the mean visual token
plus the text/audio guidance vector. The top-k tokens are kept (in their original raster order);
every dropped token whose similarity to a kept token exceeds a threshold is merged into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepmsi.nn import float32_region


@dataclass
class Compressed:
    """VSC result. tokens [N, K, C] (kept + merged, raster order); index [N, K] ascending
    positions in the input; scores [N, L] relevance of every input token."""

    tokens: torch.Tensor
    index: torch.Tensor
    scores: torch.Tensor


class VisualSequenceCompression(nn.Module):
    """Reduce [N, L, C] tokens to [N, keep, C] guided by a [N, C] vector (no parameters).

    Merge rule for kept token j with dropped tokens i (cosine similarity s_ij):
    ``z_j <- alpha * z_j + (1 - alpha) * sum_i [s_ij > threshold] * softmax_j(s_ij) * z_i`` for
    every kept token with at least one match; kept tokens with no match are unchanged.
    """

    def __init__(self, keep: int, threshold: float = 0.6, alpha: float = 0.9) -> None:
        super().__init__()
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self.threshold = threshold
        self.alpha = alpha

    def extra_repr(self) -> str:
        return f"keep={self.keep}, threshold={self.threshold}, alpha={self.alpha}"

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None = None) -> Compressed:
        """x [N, L, C] and guidance [N, C] (None: score against the mean token alone).

        Always in float32, also under bf16 autocast: bf16's rounding of the scores would change
        which tokens are kept, a discrete change far larger than the rounding itself."""
        with float32_region(x.device):
            return self._compress(x.float(), None if guidance is None else guidance.float())

    def _compress(self, x: torch.Tensor, guidance: torch.Tensor | None) -> Compressed:
        n, length, c = x.shape
        if self.keep >= length:
            raise ValueError(f"cannot keep {self.keep} of {length} tokens")
        query = x.mean(dim=1)  # N, C
        if guidance is not None:
            query = query + guidance
        # NOTE(official-code): the authors softmax the scores before top-k; softmax is monotonic,
        # so the selection is identical and we keep the raw cosine for the relevance gate below.
        scores = torch.einsum("nc,nlc->nl", F.normalize(query, dim=-1), F.normalize(x, dim=-1))

        # Top-k, then split positions into kept / dropped, each in ascending (raster) order.
        # NOTE(official-code): their top-k tokens stay in score order and are then reshaped into
        # a grid, scrambling the layout that the next window attention relies on.
        top = scores.topk(self.keep, dim=1).indices  # N, K
        is_kept = torch.zeros_like(scores, dtype=torch.int8).scatter_(1, top, 1)
        order = torch.argsort(is_kept, dim=1, stable=True)  # dropped first, both ascending
        dropped_idx, kept_idx = order[:, : length - self.keep], order[:, length - self.keep :]
        kept = x.gather(1, kept_idx.unsqueeze(-1).expand(-1, -1, c))  # N, K, C
        dropped = x.gather(1, dropped_idx.unsqueeze(-1).expand(-1, -1, c))  # N, L-K, C

        # Relevance gate, straight-through: the value is exactly 1, the gradient is that of
        # multiplying each kept token by its score, so the guidance network learns.
        # NOTE(official-code): top-k indices carry no gradient there and the guidance MLP never
        # receives one.
        kept_scores = scores.gather(1, kept_idx)  # N, K
        kept = kept * (1.0 + (kept_scores - kept_scores.detach())).unsqueeze(-1)

        merged = self._merge(kept, dropped)
        return Compressed(tokens=merged, index=kept_idx, scores=scores)

    def _merge(self, kept: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """kept [N, K, C], dropped [N, D, C] -> kept with matching dropped tokens folded in."""
        sim = F.normalize(dropped, dim=-1) @ F.normalize(kept, dim=-1).transpose(1, 2)  # N, D, K
        match = sim > self.threshold  # N, D, K
        weight = sim.softmax(dim=-1) * match  # contribution of dropped i to kept j
        contribution = weight.transpose(1, 2) @ dropped  # N, K, C, summed over dropped tokens
        # NOTE(official-code): the authors compute this update and then return the unmerged
        # tokens; with several matches per kept token they also overwrite instead of summing.
        updated = self.alpha * kept + (1.0 - self.alpha) * contribution
        return torch.where(match.any(dim=1).unsqueeze(-1), updated, kept)
