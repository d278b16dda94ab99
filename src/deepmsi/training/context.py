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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from deepmsi.config import Options, check_at_least
from deepmsi.data.dataset import FeatureDataset
from deepmsi.distributed import DistInfo
from deepmsi.errors import ConfigError
from deepmsi.metrics import compute_metrics
from deepmsi.models.context import KINDS, ContextConfig, DialogueContext, pad_dialogues
from deepmsi.runs.predict import Dialogue, group_dialogues, predict_dataset, predict_dialogues
from deepmsi.selection import BestOnDev

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContextRecipe(Options):
    """How the head is trained: AdamW, mini-batches of whole dialogues, best dev epoch kept."""

    what: ClassVar[str] = "context recipe"

    epochs: int = 40
    batch_size: int = 8  # dialogues
    lr: float = 1e-3
    weight_decay: float = 1e-2
    hidden: int = 128
    dropout: float = 0.3
    kind: str = "gru"

    def check(self) -> None:
        check_at_least(self, 1, "epochs", "batch_size", "hidden")
        if self.kind not in KINDS:
            raise ConfigError(f"context recipe: kind must be one of {KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class ContextResult:
    """A trained head, the epoch chosen on dev and its dev report (``Metrics.to_dict``)."""

    head: DialogueContext
    mode: str
    best_epoch: int
    best_dev: dict
    history: list[dict] = field(default_factory=list)


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
    from deepmsi.progress import progress as progress_bar

    if mode not in ("online", "offline"):
        raise ValueError(f"context mode must be online or offline, got {mode!r}")
    recipe = recipe or ContextRecipe()
    device = torch.device(device)
    x_dev, y_dev, d_dev = dev
    cfg = ContextConfig(
        input_dim=int(train[0].shape[1]),
        num_classes=len(labels),
        hidden=recipe.hidden,
        kind=recipe.kind,
        causal=mode == "online",
        dropout=recipe.dropout,
    )
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = DialogueContext(cfg).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    weight = None if class_weights is None else class_weights.to(device)
    selection = BestOnDev(keep_weights=True)
    history = []
    epochs = range(1, recipe.epochs + 1)
    bar = progress_bar(
        epochs, desc=f"context ({mode})", unit="epoch", enabled=progress, transient=True
    )
    for epoch in bar:
        order = rng.permutation(len(train[2]))
        loss = _head_epoch(
            head,
            opt,
            train,
            order=order,
            batch_size=recipe.batch_size,
            weight=weight,
            device=device,
        )
        probs = predict_dialogues(head, x_dev, d_dev)
        rows = np.concatenate([d.rows for d in d_dev])
        m = compute_metrics(np.asarray(y_dev)[rows], probs[rows].argmax(1), labels)
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss,
                "dev_accuracy": m.accuracy,
                "dev_weighted_f1": m.weighted_f1,
            }
        )
        selection.update(epoch, m.weighted_f1, m.to_dict(), head)
        bar.set_postfix(dev_wf1=f"{100 * m.weighted_f1:.1f}")
    bar.close()
    selection.restore(head)
    head.eval()
    return ContextResult(head, mode, selection.best_epoch, selection.best_report, history)


def _head_epoch(
    head: DialogueContext,
    opt: torch.optim.Optimizer,
    train: tuple[Tensor, np.ndarray, Sequence[Dialogue]],
    *,
    order: np.ndarray,
    batch_size: int,
    weight: Tensor | None,
    device: torch.device,
) -> float:
    """One pass over the training dialogues in ``order``; the mean loss per turn."""
    x_train, y_train, d_train = train
    targets = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    head.train()
    total, count = 0.0, 0
    for lo in range(0, len(order), batch_size):
        batch = [d_train[j] for j in order[lo : lo + batch_size]]
        x, spk, mask = pad_dialogues(
            [x_train[list(d.rows)] for d in batch], [d.speakers for d in batch]
        )
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
    return total / max(1, count)


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
    parts = []
    for ds in (train_ds, dev_ds):
        pred = predict_dataset(
            model,
            ds,
            batch_size=batch_size,
            device=device,
            info=info,
            progress=progress,
            joint=True,
        )
        parts.append((torch.from_numpy(pred.joint), ds.targets, group_dialogues(ds.records)))
    if info is not None and not info.is_main:
        return None
    log.info(
        "context stage (%s): %d train dialogues, %d dev dialogues, %d-d utterance vectors",
        mode,
        len(parts[0][2]),
        len(parts[1][2]),
        parts[0][0].shape[1],
    )
    return train_head(
        parts[0],
        parts[1],
        labels,
        mode=mode,
        seed=seed,
        class_weights=class_weights,
        device=device,
        progress=progress,
    )
