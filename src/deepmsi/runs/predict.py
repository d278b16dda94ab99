"""A trained run's models applied to features: the utterance model over a dataset, and the
dialogue-context head over the dialogues of a record list.

Shared by training (dev scores, the context stage), evaluation and inference, so every path
computes a prediction the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from deepmsi.data.dataset import FeatureDataset
from deepmsi.data.records import Utterance
from deepmsi.distributed import DistInfo
from deepmsi.models.context import DialogueContext, pad_dialogues, speaker_indices

PREDICT_DIALOGUES = 32  # dialogues per forward pass when predicting


@dataclass(frozen=True)
class Predictions:
    """Model outputs over a dataset, in dataset order: y_true [N], y_pred [N], probs [N, K];
    joint [N, M*P], the vectors the classifier read (only when asked for)."""

    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray
    joint: np.ndarray | None = None


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset: FeatureDataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    info: DistInfo | None = None,
    progress: bool = False,
    joint: bool = False,
) -> Predictions:
    """Class probabilities (and with ``joint`` the classifier's input vectors) for every item;
    under DDP each rank scores a strided shard and the shards are gathered, so every rank
    returns the predictions of the whole dataset."""
    from deepmsi.progress import progress as progress_bar

    info = info or DistInfo()
    device = torch.device(device)
    shard = list(range(info.rank, len(dataset), info.world_size))
    loader = DataLoader(
        torch.utils.data.Subset(dataset, shard),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=dataset.collate,
    )
    was_training = model.training
    model.eval()
    index, probs, vectors = [], [], []
    bar = progress_bar(loader, desc="eval", unit="batch", enabled=progress, transient=True)
    for batch in bar:
        out = model(**batch.model_inputs(device))
        probs.append(torch.softmax(out.logits.float(), dim=-1).cpu().numpy())
        if joint:
            vectors.append(out.joint.float().cpu().numpy())
        index.append(batch.index.numpy())
    model.train(was_training)
    k = dataset.config.num_classes
    idx = np.concatenate(index) if index else np.zeros(0, np.int64)
    p = np.concatenate(probs) if probs else np.zeros((0, k), np.float32)
    v = np.concatenate(vectors) if vectors else None
    if info.active:
        gathered: list[Any] = [None] * info.world_size
        dist.all_gather_object(gathered, (idx, p, v))
        idx = np.concatenate([g[0] for g in gathered])
        p = np.concatenate([g[1] for g in gathered])
        v = np.concatenate([g[2] for g in gathered if g[2] is not None]) if joint else None
    full = np.zeros((len(dataset), k), dtype=np.float32)
    full[idx] = p
    full_joint = None
    if joint:
        full_joint = np.zeros((len(dataset), 0 if v is None else v.shape[1]), dtype=np.float32)
        if v is not None:
            full_joint[idx] = v
    return Predictions(dataset.targets.copy(), full.argmax(axis=1), full, full_joint)


# ---- dialogues ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dialogue:
    """One dialogue of a record list: ``rows`` index that list in turn order; ``speakers`` are
    per-dialogue speaker ids (:func:`speaker_indices`) of those rows."""

    key: tuple[str, str]  # (split, dialogue_id): ids may repeat across splits
    rows: tuple[int, ...]
    speakers: tuple[int, ...]


def group_dialogues(records: Sequence[Utterance], max_speakers: int = 9) -> list[Dialogue]:
    """The records' dialogues, each ordered by turn (ties keep record order).

    Only the records given are used: scoring a split never lets a turn see another split.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.split, r.dialogue_id), []).append(i)
    out = []
    for key, rows in groups.items():
        rows.sort(key=lambda i: records[i].turn)
        speakers = speaker_indices([records[i].speaker for i in rows], max_speakers)
        out.append(Dialogue(key, tuple(rows), tuple(speakers)))
    return out


@torch.no_grad()
def predict_dialogues(
    head: DialogueContext, vectors: Tensor, dialogues: Sequence[Dialogue]
) -> np.ndarray:
    """Class probabilities [N, K] of every row of ``vectors`` [N, D] that a dialogue covers.

    Rows no dialogue covers stay zero. Each dialogue is classified on its own, so the batching
    does not change the numbers.
    """
    was_training = head.training
    head.eval()
    device = next(head.parameters()).device
    probs = np.zeros((vectors.shape[0], head.cfg.num_classes), np.float32)
    for lo in range(0, len(dialogues), PREDICT_DIALOGUES):
        chunk = dialogues[lo : lo + PREDICT_DIALOGUES]
        x, spk, mask = pad_dialogues(
            [vectors[list(d.rows)] for d in chunk], [d.speakers for d in chunk]
        )
        logits = head(x.to(device), spk.to(device), mask.to(device))  # [B, T, K]
        p = torch.softmax(logits.float(), dim=-1)[mask.to(device)].cpu().numpy()  # [sum T_i, K]
        probs[np.concatenate([d.rows for d in chunk])] = p
    head.train(was_training)
    return probs


def context_probabilities(
    model: torch.nn.Module,
    head: DialogueContext,
    dataset: FeatureDataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Probabilities [N, K] of a ``FeatureDataset``'s records, each dialogue (made of those
    records only) read by ``head`` over the utterance model's joint vectors."""
    pred = predict_dataset(
        model, dataset, batch_size=batch_size, device=device, progress=progress, joint=True
    )
    return predict_dialogues(head, torch.from_numpy(pred.joint), group_dialogues(dataset.records))
