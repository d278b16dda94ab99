"""Training objective: cross-entropy + supervised cross-modal contrastive loss (video anchors).

Computed outside ``forward`` so inference never carries training state::

    out = model(text=t, audio=a, frames=f)
    loss = DeepMSILoss()(out, labels)   # LossOutput(total, ce, contrastive)
    loss.total.backward()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from deepmsi.models.deepmsi import DeepMSIOutput

ANCHOR = "video"
PARTNERS = ("text", "audio")


@dataclass
class LossOutput:
    """total = ce + contrastive_weight * contrastive + unimodal_weight * unimodal (scalars)."""

    total: torch.Tensor
    ce: torch.Tensor
    contrastive: torch.Tensor
    unimodal: torch.Tensor


def cross_modal_supcon(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.5,
    *,
    candidate_labels: torch.Tensor | None = None,
    anchor_valid: torch.Tensor | None = None,
    candidate_valid: torch.Tensor | None = None,
    self_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Supervised contrastive loss of anchors [B, P] against candidates of another modality [M, P].

    With s_ij = cos(a_i, c_j) / temperature, positives P(i) = {j != i : y_j = y_i} and negatives
    N(i) = {j : y_j != y_i}:

        l_i = mean_{p in P(i)} -log( exp(s_ip) / (exp(s_ip) + sum_{n in N(i)} exp(s_in)) )

    and the loss is the mean of l_i over anchors with at least one positive. Candidate j is the
    same sample as anchor i when ``j == self_index[i]`` (default: the diagonal) and is neither a
    positive nor a negative. Invalid anchors/candidates (missing modality) are left out. Returns
    (loss, number of anchors used); the loss is 0 (with a graph) when no anchor has a positive.

    NOTE(official-code): the authors divide each anchor's sum by B - 1 rather than by its number
    of positives, and count anchors without positives as zeros in the mean.
    """
    b, m = anchors.shape[0], candidates.shape[0]
    candidate_labels = labels if candidate_labels is None else candidate_labels
    if self_index is None:
        self_index = torch.arange(b, device=anchors.device)
    a = F.normalize(anchors, dim=-1)
    c = F.normalize(candidates, dim=-1)
    sim = a @ c.T / temperature  # B, M
    same = labels[:, None] == candidate_labels[None, :]  # B, M
    not_self = torch.arange(m, device=anchors.device)[None, :] != self_index[:, None]
    valid = torch.ones(b, m, dtype=torch.bool, device=anchors.device)
    if anchor_valid is not None:
        valid &= anchor_valid[:, None]
    if candidate_valid is not None:
        valid &= candidate_valid[None, :]
    pos = same & not_self & valid
    neg = ~same & valid
    # log( e^s_ip / (e^s_ip + S_i) ) with S_i = sum over negatives, done in log space.
    neg_lse = torch.logsumexp(sim.masked_fill(~neg, float("-inf")), dim=1, keepdim=True)  # B, 1
    log_ratio = sim - torch.logaddexp(sim, neg_lse)  # B, M (finite even with no negatives)
    n_pos = pos.sum(dim=1)  # B
    per_anchor = -(log_ratio * pos).sum(dim=1) / n_pos.clamp(min=1)
    used = n_pos > 0
    n_used = int(used.sum())
    if n_used == 0:
        return sim.sum() * 0.0, 0
    return per_anchor[used].mean(), n_used


class DeepMSILoss(nn.Module):
    """cross-entropy + ``contrastive_weight`` x mean(video->text, video->audio) SupCon
    (+ ``unimodal_weight`` x the unimodal heads' mean cross-entropy, when the model has them).

    Only pairs whose two modalities the model has count (a model without video has no
    contrastive term). Under DDP the embeddings, labels and presence masks of every rank are
    gathered (with gradient) so each rank's anchors meet negatives from the global batch.
    """

    class_weights: torch.Tensor | None

    def __init__(
        self,
        contrastive_weight: float = 0.5,
        temperature: float = 0.5,
        class_weights: torch.Tensor | None = None,
        unimodal_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.contrastive_weight = contrastive_weight
        self.unimodal_weight = unimodal_weight
        self.temperature = temperature
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, output: DeepMSIOutput, labels: torch.Tensor) -> LossOutput:
        """output.logits [B, K], output.embeddings name -> [B, P]; labels [B] int64."""
        ce = F.cross_entropy(output.logits, labels, weight=self.class_weights)
        contrastive = self.contrastive(output, labels)
        unimodal = self.unimodal(output, labels)
        total = ce + self.contrastive_weight * contrastive + self.unimodal_weight * unimodal
        return LossOutput(total, ce, contrastive, unimodal)

    def unimodal(self, output: DeepMSIOutput, labels: torch.Tensor) -> torch.Tensor:
        """Mean over modalities of each unimodal head's cross-entropy on the samples that have
        that modality (a placeholder teaches its head nothing)."""
        terms = []
        for name, logits in output.unimodal.items():
            present = output.present.get(name)
            if present is not None:
                logits, targets = logits[present], labels[present]
            else:
                targets = labels
            if len(targets):
                terms.append(F.cross_entropy(logits, targets, weight=self.class_weights))
        return torch.stack(terms).mean() if terms else output.logits.sum() * 0.0

    def contrastive(self, output: DeepMSIOutput, labels: torch.Tensor) -> torch.Tensor:
        emb = output.embeddings
        zero = output.logits.sum() * 0.0
        if ANCHOR not in emb or not any(p in emb for p in PARTNERS):
            return zero
        b = labels.shape[0]
        ones = torch.ones(b, dtype=torch.bool, device=labels.device)
        present = {n: output.present.get(n, ones) for n in emb}
        offset, all_labels = 0, labels
        gathered: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if _distributed():
            sizes = _all_gather_sizes(b, labels.device)
            offset = sum(sizes[: torch.distributed.get_rank()])
            all_labels = _gather(labels, sizes)
            for n in PARTNERS:
                if n in emb:
                    gathered[n] = (_gather(emb[n], sizes), _gather(present[n], sizes))
        else:
            gathered = {n: (emb[n], present[n]) for n in PARTNERS if n in emb}
        self_index = torch.arange(b, device=labels.device) + offset
        terms = []
        for cands, cand_valid in gathered.values():
            loss, used = cross_modal_supcon(
                emb[ANCHOR],
                cands,
                labels,
                self.temperature,
                candidate_labels=all_labels,
                anchor_valid=present[ANCHOR],
                candidate_valid=cand_valid,
                self_index=self_index,
            )
            if used:
                terms.append(loss)
        # NOTE(paper): a pair with no usable anchor (e.g. every video missing) is left out of the
        # average instead of counting as zero.
        return torch.stack(terms).mean() if terms else zero


# ---- DDP helpers ------------------------------------------------------------------------------
def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_gather_sizes(b: int, device: torch.device) -> list[int]:
    import torch.distributed as dist

    local = torch.tensor([b], device=device)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def _gather(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate x [b_r, ...] from every rank (padded to the largest b) -> [sum b_r, ...].

    Float tensors keep their gradient (torch.distributed.nn all_gather sends each rank's part of
    the gradient back); integer/bool tensors are gathered without one.
    """
    import torch.distributed as dist

    top = max(sizes)
    pad = top - x.shape[0]
    padded = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x
    if x.is_floating_point():
        from torch.distributed.nn.functional import all_gather

        parts = list(all_gather(padded))
    else:
        as_int = padded.to(torch.int64).contiguous()  # some backends cannot gather bool
        parts = [torch.empty_like(as_int) for _ in sizes]
        dist.all_gather(parts, as_int)
        parts = [p.to(x.dtype) for p in parts]
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])
