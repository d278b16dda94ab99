"""The dialogue-context stage: a :class:`DialogueContext` head over the utterance model's vectors.

NOTE(paper): DeepMSI-MER classifies every utterance on its own. With ``TrainConfig.context`` set,
training adds a second stage once the utterance model is chosen on dev: that model (frozen, eval
mode) turns each train and dev utterance into its joint vector [M*P] (the concatenated
projections its classifier reads), the vectors are grouped into dialogues in turn order, and a
small GRU over turns learns to classify each turn from its vector and its dialogue context, its
epoch again chosen on dev weighted F1. The utterance model itself is untouched, so a context run
still holds the paper's model; the head is an extra pair of files in the run folder.

Modes: "online" heads are causal (turn t sees turns 0..t, so they can label a live
conversation); "offline" heads read the whole dialogue, valid only when it is complete before
labelling. The recipe is benchmarks/text_erc.py's ``context`` stage (about +5 weighted F1 over
utterance-level text vectors on IEMOCAP).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from deepmsi.data.records import Utterance
from deepmsi.metrics import compute_metrics
from deepmsi.models.context import ContextConfig, DialogueContext, pad_dialogues, speaker_indices

if TYPE_CHECKING:
    from deepmsi.training import DistInfo, FeatureDataset

log = logging.getLogger(__name__)

MODES = ("none", "online", "offline")
PREDICT_DIALOGUES = 32  # dialogues per forward pass when predicting


@dataclass(frozen=True)
class ContextRecipe:
    """How the head is trained: AdamW, mini-batches of whole dialogues, best dev epoch kept."""

    epochs: int = 40
    batch_size: int = 8  # dialogues
    lr: float = 1e-3
    weight_decay: float = 1e-2
    hidden: int = 128
    dropout: float = 0.3
    kind: str = "gru"


@dataclass(frozen=True)
class Dialogue:
    """One dialogue of a record list: ``rows`` index that list in turn order; ``speakers`` are
    per-dialogue speaker ids (:func:`speaker_indices`) of those rows."""

    key: tuple[str, str]  # (split, dialogue_id): ids may repeat across splits
    rows: tuple[int, ...]
    speakers: tuple[int, ...]


@dataclass(frozen=True)
class ContextResult:
    """A trained head, the epoch chosen on dev and its dev report (``Metrics.to_dict``)."""

    head: DialogueContext
    mode: str
    best_epoch: int
    best_dev: dict
    history: list[dict] = field(default_factory=list)


def mode_of(head: DialogueContext | None) -> str:
    """The head's mode: "online" (causal), "offline" or "none" (no head)."""
    if head is None:
        return "none"
    return "online" if head.cfg.causal else "offline"


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
        x, spk, mask = pad_dialogues([vectors[list(d.rows)] for d in chunk],
                                     [d.speakers for d in chunk])  # fmt: skip
        logits = head(x.to(device), spk.to(device), mask.to(device))  # [B, T, K]
        p = torch.softmax(logits.float(), dim=-1)[mask.to(device)].cpu().numpy()  # [sum T_i, K]
        probs[np.concatenate([d.rows for d in chunk])] = p
    head.train(was_training)
    return probs


def train_head(
    train: tuple[Tensor, np.ndarray, Sequence[Dialogue]],
    dev: tuple[Tensor, np.ndarray, Sequence[Dialogue]],
    labels: Sequence[str],
    *,
    mode: str,
    seed: int = 0,
    recipe: ContextRecipe | None = None,
    class_weights: Tensor | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> ContextResult:
    """Fit a head on (vectors [N, D], targets [N], dialogues) of train; choose the epoch on dev.

    Deterministic on CPU for a given ``seed``.
    """
    from tqdm.auto import tqdm

    if mode not in ("online", "offline"):
        raise ValueError(f"context mode must be online or offline, got {mode!r}")
    recipe = recipe or ContextRecipe()
    device = torch.device(device)
    x_train, y_train, d_train = train
    x_dev, y_dev, d_dev = dev
    cfg = ContextConfig(
        input_dim=int(x_train.shape[1]), num_classes=len(labels), hidden=recipe.hidden,
        kind=recipe.kind, causal=mode == "online", dropout=recipe.dropout,
    )  # fmt: skip
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = DialogueContext(cfg).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    weight = None if class_weights is None else class_weights.to(device)
    targets = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    best: tuple[float, int, dict, dict] = (-1.0, 0, {}, {})
    history = []
    bar = tqdm(range(1, recipe.epochs + 1), desc=f"context ({mode})", leave=False,
               unit="epoch", disable=not progress)  # fmt: skip
    for epoch in bar:
        head.train()
        order = rng.permutation(len(d_train))
        total, count = 0.0, 0
        for lo in range(0, len(order), recipe.batch_size):
            batch = [d_train[j] for j in order[lo : lo + recipe.batch_size]]
            x, spk, mask = pad_dialogues([x_train[list(d.rows)] for d in batch],
                                         [d.speakers for d in batch])  # fmt: skip
            y = torch.full(mask.shape, -100, dtype=torch.long)  # [B, T], padding ignored
            for k, d in enumerate(batch):
                y[k, : len(d.rows)] = targets[list(d.rows)]
            logits = head(x.to(device), spk.to(device), mask.to(device))  # [B, T, K]
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), y.flatten().to(device), weight=weight, ignore_index=-100
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = int(mask.sum())
            total += float(loss.detach()) * n
            count += n
        probs = predict_dialogues(head, x_dev, d_dev)
        rows = np.concatenate([d.rows for d in d_dev])
        m = compute_metrics(np.asarray(y_dev)[rows], probs[rows].argmax(1), labels)
        history.append({"epoch": epoch, "train_loss": total / max(1, count),
                        "dev_accuracy": m.accuracy, "dev_weighted_f1": m.weighted_f1})  # fmt: skip
        if m.weighted_f1 > best[0]:
            best = (m.weighted_f1, epoch, copy.deepcopy(head.state_dict()), m.to_dict())
        bar.set_postfix(dev_wf1=f"{100 * m.weighted_f1:.1f}")
    bar.close()
    head.load_state_dict(best[2])
    head.eval()
    return ContextResult(head, mode, best[1], best[3], history)


def fit_context(
    model: torch.nn.Module,
    train_ds: FeatureDataset,
    dev_ds: FeatureDataset,
    labels: Sequence[str],
    *,
    mode: str,
    seed: int = 0,
    batch_size: int = 64,
    class_weights: Tensor | None = None,
    device: torch.device | str = "cpu",
    info: DistInfo | None = None,
    progress: bool = False,
) -> ContextResult | None:
    """The second training stage: joint vectors of ``train_ds``/``dev_ds`` (``FeatureDataset``)
    from the frozen utterance ``model``, then :func:`train_head`.

    Under DDP every rank embeds a shard (gathered, as in ``predict_dataset``) and only rank 0
    fits the head; the other ranks return None.
    """
    from deepmsi.training import predict_dataset

    parts = []
    for ds in (train_ds, dev_ds):
        pred = predict_dataset(model, ds, batch_size=batch_size, device=device, info=info,
                               progress=progress, joint=True)  # fmt: skip
        parts.append((torch.from_numpy(pred.joint), ds.targets, group_dialogues(ds.records)))
    if info is not None and not info.is_main:
        return None
    log.info(
        "context stage (%s): %d train dialogues, %d dev dialogues, %d-d utterance vectors",
        mode, len(parts[0][2]), len(parts[1][2]), parts[0][0].shape[1],
    )  # fmt: skip
    return train_head(parts[0], parts[1], labels, mode=mode, seed=seed,
                      class_weights=class_weights, device=device, progress=progress)  # fmt: skip


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
    from deepmsi.training import predict_dataset

    pred = predict_dataset(model, dataset, batch_size=batch_size, device=device,
                           progress=progress, joint=True)  # fmt: skip
    return predict_dialogues(head, torch.from_numpy(pred.joint), group_dialogues(dataset.records))
