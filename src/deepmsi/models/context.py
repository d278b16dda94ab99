"""Dialogue context over utterance embeddings: the emotion of a turn depends on the turns around it.

The paper's model classifies each utterance on its own. Emotion-recognition-in-conversation
systems (DialogueRNN, COGMEN, SDT) gain several points by reading the dialogue: emotions persist
within a speaker and answer each other across speakers. ``DialogueContext`` is the small version of
that idea: utterance embeddings of one dialogue (from any encoder), plus a learned embedding of who
speaks, pass through a GRU or a transformer over turns, and each turn is classified from its own
embedding joined with its context state.

Two modes, the choice a deployment must make:

* ``causal=True`` ("online"): turn t sees turns 0..t only, so it can label a live conversation.
  The GRU runs forwards only; the transformer uses a causal attention mask.
* ``causal=False`` ("offline"): every turn sees the whole dialogue (bidirectional GRU, unmasked
  attention). Only valid when the full dialogue is available before labelling.

NOTE(paper): DeepMSI-MER is utterance-level; this module is an optional extension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from deepmsi.config import Options, check_at_least
from deepmsi.errors import ConfigError

KINDS = ("gru", "transformer")


@dataclass(frozen=True)
class ContextConfig(Options):
    """Hyper-parameters of :class:`DialogueContext`.

    ``input_dim`` is the utterance embedding size D; ``max_speakers`` bounds the per-dialogue
    speaker index (speakers beyond it share the last slot).
    """

    what: ClassVar[str] = "context config"

    input_dim: int
    num_classes: int
    hidden: int = 128
    kind: str = "gru"
    causal: bool = False
    layers: int = 1
    heads: int = 4
    max_speakers: int = 9
    dropout: float = 0.3

    def check(self) -> None:
        check_at_least(self, 1, "input_dim", "hidden", "layers", "heads", "max_speakers")
        check_at_least(self, 2, "num_classes")
        if self.kind not in KINDS:
            raise ConfigError(f"context kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "transformer" and self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")


def speaker_indices(speakers: Sequence[str], max_speakers: int = 9) -> list[int]:
    """Per-dialogue speaker ids in order of first appearance: ["B", "A", "B"] -> [0, 1, 0].

    Names do not generalise across dialogues (MELD has hundreds); who-spoke-first does.
    """
    seen: dict[str, int] = {}
    out = []
    for s in speakers:
        if s not in seen:
            seen[s] = len(seen)
        out.append(min(seen[s], max_speakers - 1))
    return out


def _sinusoid(length: int, dim: int, device: torch.device) -> Tensor:
    """Sinusoidal position table [T, dim] (no maximum dialogue length to learn)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)  # [T, 1]
    freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


class DialogueContext(nn.Module):
    """Classify every turn of a batch of dialogues from its embedding and its dialogue context.

    ``forward(x, speakers, mask)``:
      * x [B, T, D] float utterance embeddings (dialogues padded to T turns)
      * speakers [B, T] long per-dialogue speaker ids (see :func:`speaker_indices`)
      * mask [B, T] bool, True on real turns (padding is ignored and gets arbitrary logits)
      * returns logits [B, T, K]
    """

    def __init__(self, cfg: ContextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.input_drop = nn.Dropout(cfg.dropout)
        self.proj = nn.Sequential(nn.Linear(cfg.input_dim, h), nn.GELU())
        self.speaker = nn.Embedding(cfg.max_speakers, h)
        if cfg.kind == "gru":
            self.gru = nn.GRU(
                h,
                h,
                num_layers=cfg.layers,
                batch_first=True,
                bidirectional=not cfg.causal,
                dropout=cfg.dropout if cfg.layers > 1 else 0.0,
            )
            ctx_dim = h if cfg.causal else 2 * h
        else:
            layer = nn.TransformerEncoderLayer(
                h, cfg.heads, 2 * h, cfg.dropout, activation="gelu", batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
            ctx_dim = h
        self.head = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(h + ctx_dim, h),
            nn.GELU(),
            nn.Linear(h, cfg.num_classes),
        )

    def forward(self, x: Tensor, speakers: Tensor, mask: Tensor) -> Tensor:
        u = self.proj(self.input_drop(x))  # [B, T, h]
        z = u + self.speaker(speakers.clamp(0, self.cfg.max_speakers - 1))  # [B, T, h]
        ctx = self._gru(z, mask) if self.cfg.kind == "gru" else self._transformer(z, mask)
        return self.head(torch.cat([u, ctx], dim=-1))  # [B, T, K]

    def _gru(self, z: Tensor, mask: Tensor) -> Tensor:
        # Packed so the backward direction starts at each dialogue's last real turn, not padding.
        lengths = mask.sum(1).clamp(min=1).cpu()  # [B]
        packed = nn.utils.rnn.pack_padded_sequence(
            z, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=z.shape[1])
        return out  # [B, T, h or 2h]

    def _transformer(self, z: Tensor, mask: Tensor) -> Tensor:
        t = z.shape[1]
        z = z + _sinusoid(t, z.shape[-1], z.device)  # [B, T, h]
        attn_mask = None
        if self.cfg.causal:
            # True above the diagonal = turn t may not attend to turns after t.
            attn_mask = torch.ones(t, t, dtype=torch.bool, device=z.device).triu(1)  # [T, T]
        return self.encoder(z, mask=attn_mask, src_key_padding_mask=~mask)  # [B, T, h]


def pad_dialogues(
    embeddings: Sequence[Tensor], speakers: Sequence[Sequence[int]]
) -> tuple[Tensor, Tensor, Tensor]:
    """Stack dialogues of T_i turns: [T_i, D] each -> x [B, T, D], speakers [B, T], mask [B, T]."""
    b, t = len(embeddings), max(e.shape[0] for e in embeddings)
    d = embeddings[0].shape[1]
    x = embeddings[0].new_zeros(b, t, d)
    spk = torch.zeros(b, t, dtype=torch.long)
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i, (e, s) in enumerate(zip(embeddings, speakers, strict=True)):
        n = e.shape[0]
        x[i, :n] = e
        spk[i, :n] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, :n] = True
    return x, spk, mask
