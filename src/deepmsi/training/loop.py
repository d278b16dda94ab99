"""Training on a prepared feature cache: AdamW, dev-split model selection, exact resume, DDP.

The loop reads top to bottom: :func:`train` sets up a :class:`_Session` (data, model, optimiser,
run folder), then for each epoch :func:`_train_epoch` optimises and :func:`_end_epoch` scores
dev, keeps the best epoch (:class:`~deepmsi.selection.BestOnDev`) and checkpoints; an
optional dialogue-context stage follows (:mod:`deepmsi.training.context`).

Exact resume: the data order of epoch ``e`` is a function of (seed, e) (a ``DistributedSampler``
with ``set_epoch``), the torch RNG is re-seeded from (seed, e, rank) at the start of every epoch,
and each checkpoint stores weights, optimizer, scheduler and the loop state. A run killed after
epoch ``e`` and resumed therefore computes exactly what the uninterrupted run computes.

Under ``torchrun`` every rank trains on its shard; validation predictions are gathered from all
ranks so the dev metrics (and hence model selection and early stopping) are computed on the whole
split, identically on every rank. Only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from deepmsi.atomic import atomic_write_text, remove_stale_temporaries
from deepmsi.config import ModelConfig, TrainConfig
from deepmsi.data.cache import FeatureCache
from deepmsi.data.dataset import FeatureDataset, FeatureStore, input_statistics
from deepmsi.data.records import Utterance
from deepmsi.distributed import DistInfo, pick_device, setup_distributed
from deepmsi.errors import ConfigError, DataError
from deepmsi.labels import LabelSet
from deepmsi.losses import DeepMSILoss
from deepmsi.metrics import Metrics, compute_metrics
from deepmsi.modalities import NAME_OF
from deepmsi.models.swin_v2 import set_precision
from deepmsi.models.swin_v2_hf import adapt_config, load_hf_weights
from deepmsi.nn.autocast import autocast
from deepmsi.nn.precise_bn import recompute_batchnorm
from deepmsi.pretrained import PretrainedWeights, read_pretrained
from deepmsi.runs import folder as runs
from deepmsi.runs.card import current_command, refresh_card
from deepmsi.runs.predict import predict_dataset
from deepmsi.selection import BestOnDev
from deepmsi.training.context import ContextResult, fit_context

log = logging.getLogger(__name__)


def resolve_model_config(config: ModelConfig, cache: FeatureCache) -> ModelConfig:
    """The model config with the sizes the cache dictates (classes, feature widths, frames)."""
    manifest = cache.manifest
    sizes: dict[str, Any] = {"num_classes": len(cache.labels)}
    missing = []
    for key, dim in (("t", cache.text_dim), ("a", cache.audio_dim)):
        if dim:
            sizes[f"{NAME_OF[key]}_dim"] = int(dim)
        elif key in config.modalities:
            missing.append(NAME_OF[key])
    frames, size = manifest.get("frames"), manifest.get("image_size")
    if frames and size:
        sizes["frames"], sizes["image_size"] = int(frames), int(size)
    elif "v" in config.modalities:
        missing.append("video")
    if missing:
        keep = "".join(m for m in config.modalities if NAME_OF[m] not in missing)
        hint = f"; train with --modalities {keep}" if keep else ""
        raise ConfigError(f"{cache.path}: the cache has no {' or '.join(missing)} features{hint}")
    return config.replace(**sizes)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a training run; ``best_dev`` is the dev-split report of the chosen epoch.

    With a dialogue-context stage, ``context_epoch`` and ``context_dev`` are the head's chosen
    epoch and its dev report (on rank 0 only; None elsewhere and without context).
    """

    run_dir: Path
    best_epoch: int
    best_dev: dict
    epochs_run: int
    stopped_early: bool
    seconds_per_epoch: float
    history: list[dict]
    context_epoch: int | None = None
    context_dev: dict | None = None


# ---- the loop state ----------------------------------------------------------------------------
@dataclass
class LoopState:
    """What the loop carries from one epoch to the next, and what a checkpoint restores."""

    selection: BestOnDev
    epoch: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        """The checkpoint's loop part (flat keys, as run folders have always stored them)."""
        return {
            "epoch": self.epoch,
            **self.selection.state(),
            "stopped_early": self.stopped_early,
            "history": list(self.history),
        }

    @classmethod
    def from_snapshot(cls, saved: dict[str, Any], patience: int) -> LoopState:
        return cls(
            selection=BestOnDev.from_state(saved, patience),
            epoch=int(saved["epoch"]),
            stopped_early=bool(saved["stopped_early"]),
            history=list(saved["history"]),
        )


@dataclass
class _Session:
    """Everything one training run holds while it runs (built once by :func:`_setup`)."""

    cfg: TrainConfig
    model_config: ModelConfig
    labels: LabelSet
    info: DistInfo
    device: torch.device
    run_dir: Path
    train_ds: FeatureDataset
    dev_ds: FeatureDataset
    model: nn.Module
    net: nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    criterion: DeepMSILoss
    class_weights: torch.Tensor | None
    sampler: torch.utils.data.DistributedSampler
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    progress: bool


def train(
    cache: FeatureCache | FeatureStore | str | Path,
    out: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig | None = None,
    *,
    resume: bool = False,
    train_split: str = "train",
    dev_split: str = "dev",
    train_ids: Sequence[str] | None = None,
    dev_ids: Sequence[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train DeepMSI on a feature cache and write a run folder at ``out``.

    The model config's sizes (classes, feature widths, frames, image size) are taken from the
    cache. ``train_ids``/``dev_ids`` override the cache's splits (used by the k-fold protocol);
    without a dev split a stratified 10% of training is held out. With ``resume`` an existing run
    continues from its newest complete checkpoint.
    """
    cfg = train_config or TrainConfig()
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache)
    model_config = resolve_model_config(model_config, store.cache)
    info = setup_distributed(cfg.device)
    try:
        records = _split_records(store, (train_split, dev_split), train_ids, dev_ids, seed=cfg.seed)
        session, state = _setup(
            store,
            Path(out),
            model_config,
            cfg,
            info,
            records=records,
            resume=resume,
            progress=progress,
        )
        while state.epoch < cfg.epochs and not state.stopped_early:
            epoch = state.epoch + 1
            t0 = time.perf_counter()
            losses = _train_epoch(session, epoch)
            _end_epoch(session, state, epoch, losses, time.perf_counter() - t0)
        context = _context_stage(session, state) if cfg.context != "none" else None
        if info.is_main:
            refresh_card(session.run_dir, command=current_command("python: deepmsi.train(...)"))
        return _result(session.run_dir, state, context)
    finally:
        if info.initialised_here:
            dist.destroy_process_group()


def _setup(
    store: FeatureStore,
    run_dir: Path,
    model_config: ModelConfig,
    cfg: TrainConfig,
    info: DistInfo,
    *,
    records: tuple[list[Utterance], list[Utterance]],
    resume: bool,
    progress: bool,
) -> tuple[_Session, LoopState]:
    """Run folder (new, or checked for a resume), data, model, loss, optimiser, loop state."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device, info)
    model_config, backbone = _video_backbone(run_dir, model_config, cfg, resume)
    train_recs, dev_recs = records
    run_config = runs.RunConfig(
        model_config, cfg, store.labels, dict(store.cache.manifest), str(store.cache.path)
    )
    done = _open_run_folder(run_dir, run_config, records, resume, info)
    train_ds = FeatureDataset(store, train_recs, model_config)
    dev_ds = FeatureDataset(store, dev_recs, model_config)
    if cfg.unimodal_weight > 0 and not model_config.unimodal_heads:
        raise ConfigError("unimodal_weight > 0 needs a model with unimodal_heads=True")
    torch.manual_seed(cfg.seed)
    model = runs.build_model(model_config)
    if backbone is not None and model.video is not None:
        load_hf_weights(model.video.backbone, backbone.state, cfg.video_backbone)
    model.set_input_stats(input_statistics(train_ds))  # a resumed run restores the same values
    model.to(device)
    set_precision(model, cfg.precision)  # dev is scored in the arithmetic training uses
    criterion, weights = _criterion(cfg, train_ds, len(store.labels), device)
    sampler, loader = _loader(train_ds, cfg, info, device)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(cfg, cfg.epochs * len(loader))
    )
    state = LoopState(selection=BestOnDev(patience=cfg.patience))
    if done:
        state = _restore(
            run_dir, done[-1], model, (optimizer, scheduler), info, patience=cfg.patience
        )
        log.info("resuming %s after epoch %d", run_dir, state.epoch)
        if info.is_main:  # a run killed between its checkpoint and metrics.jsonl
            runs.write_metrics(run_dir, state.history)
    net: nn.Module = model
    if info.active:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # placeholders and absent branches are unused
        )
    if info.is_main:
        log.info(
            "training %s on %d utterances (dev %d), %d epochs, %d batches/epoch/rank, "
            "%d process(es), device %s",
            *(model_config.modalities, len(train_ds), len(dev_ds), cfg.epochs, len(loader)),
            *(info.world_size, device),
        )
    session = _Session(
        cfg,
        model_config,
        store.labels,
        info,
        device,
        run_dir,
        train_ds,
        dev_ds,
        model,
        net,
        criterion,
        weights,
        sampler,
        loader,
        optimizer,
        scheduler,
        progress,
    )
    return session, state


def _criterion(
    cfg: TrainConfig, train_ds: FeatureDataset, num_labels: int, device: torch.device
) -> tuple[DeepMSILoss, torch.Tensor | None]:
    """The loss, and its class weights when ``cfg.class_weights`` asks for them."""
    weights = None
    if cfg.class_weights:
        weights = _class_weights(train_ds.targets, num_labels).to(device)
    criterion = DeepMSILoss(
        contrastive_weight=cfg.contrastive_weight,
        temperature=cfg.temperature,
        unimodal_weight=cfg.unimodal_weight,
        class_weights=weights,
    )
    return criterion, weights


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The video branch at ``video_lr_scale`` x the learning rate, everything else at it (one
    group when the scale is 1, as runs before the option had: they still resume)."""
    params = dict(model.named_parameters())
    video = [p for n, p in params.items() if n.startswith("video.")]
    if cfg.video_lr_scale == 1.0 or not video:
        return [{"params": list(params.values()), "lr": cfg.lr}]
    rest = [p for n, p in params.items() if not n.startswith("video.")]
    return [{"params": rest, "lr": cfg.lr}, {"params": video, "lr": cfg.lr * cfg.video_lr_scale}]


def _open_run_folder(
    run_dir: Path,
    run_config: runs.RunConfig,
    records: tuple[list[Utterance], list[Utterance]],
    resume: bool,
    info: DistInfo,
) -> list[int]:
    """The completed epochs of a run to resume (checked against ``run_config``), or [] after
    writing a new run folder's config and splits. Temporary files a SIGKILLed run left are
    removed first."""
    if info.is_main:
        for folder in (run_dir, run_dir / runs.CHECKPOINT_DIR):
            remove_stale_temporaries(folder)
    done = runs.completed_epochs(run_dir)
    if done and not resume:
        raise ConfigError(
            f"{run_dir} already holds a training run (epoch {done[-1]}); pass --resume to "
            "continue it or choose another --out"
        )
    if done:
        _check_resume(run_dir, run_config)
    elif info.is_main:
        runs.write_config(run_dir, run_config)
        _write_splits(run_dir, *records)
    return done


def _video_backbone(
    run_dir: Path, model_config: ModelConfig, cfg: TrainConfig, resume: bool
) -> tuple[ModelConfig, PretrainedWeights | None]:
    """With ``video_backbone`` set, a new run reads those weights and records their windows in
    its model config; a resumed run takes the windows from its config and the weights from its
    checkpoint (the source need not be reachable any more)."""
    if not cfg.video_backbone or "v" not in model_config.modalities:
        return model_config, None
    if resume and runs.completed_epochs(run_dir):
        saved = runs.read_config(run_dir).model_config
        return model_config.replace(pretrained_window=saved.pretrained_window), None
    weights = read_pretrained(cfg.video_backbone)
    model_config = adapt_config(model_config, weights.config, cfg.video_backbone)
    log.info("video backbone initialised from %s", cfg.video_backbone)
    return model_config, weights


def _loader(
    train_ds: FeatureDataset, cfg: TrainConfig, info: DistInfo, device: torch.device
) -> tuple[torch.utils.data.DistributedSampler, DataLoader]:
    sampler: torch.utils.data.DistributedSampler = torch.utils.data.DistributedSampler(
        train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
    )
    per_rank = len(sampler)
    loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=train_ds.collate,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=device.type == "cuda",
        # a batch of one breaks batch statistics and the contrastive loss
        drop_last=per_rank % cfg.batch_size == 1 and per_rank > 1,
    )
    return sampler, loader


def _train_epoch(s: _Session, epoch: int) -> np.ndarray:
    """One optimisation pass; returns the mean (total, ce, contrastive, unimodal) training loss
    over all ranks' samples."""
    from deepmsi.progress import progress

    s.sampler.set_epoch(epoch)
    torch.manual_seed(_epoch_seed(s.cfg.seed, epoch, s.info.rank))
    s.net.train()
    sums = np.zeros(4)
    n_seen = 0
    bar = progress(
        s.loader,
        desc=f"epoch {epoch}/{s.cfg.epochs}",
        unit="batch",
        enabled=s.progress and s.info.is_main,
        transient=True,
        lines=False,  # the loop logs one line per epoch
    )
    for batch in bar:
        with autocast(s.cfg.precision, s.device):
            out = s.net(**batch.model_inputs(s.device))
            loss = s.criterion(out, batch.labels.to(s.device))
        s.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        if s.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(s.model.parameters(), s.cfg.grad_clip)
        s.optimizer.step()
        s.scheduler.step()
        b = len(batch.labels)
        parts = (loss.total, loss.ce, loss.contrastive, loss.unimodal)
        sums += b * np.array([float(x.detach()) for x in parts])
        n_seen += b
        bar.set_postfix(loss=f"{sums[0] / n_seen:.3f}")
    bar.close()
    if s.cfg.precise_bn:  # BatchNorm statistics of this epoch's final weights, for scoring
        recompute_batchnorm(s.model, s.loader, lambda m, b: m(**b.model_inputs(s.device)))
    if s.info.active:  # mean training loss over all ranks' samples
        t = torch.tensor([*sums, n_seen], dtype=torch.float64, device=s.device)
        dist.all_reduce(t)
        sums, n_seen = t[:4].cpu().numpy(), int(t[4])
        # Each rank's BatchNorm statistics saw its own last batch; score every shard with
        # rank 0's, the ones the checkpoint saves.
        for buffer in s.model.buffers():
            dist.broadcast(buffer, src=0)
    return sums / max(1, n_seen)


def _end_epoch(
    s: _Session, state: LoopState, epoch: int, losses: np.ndarray, train_seconds: float
) -> None:
    """Score dev, keep the best epoch, decide on early stopping, checkpoint and log."""
    t0 = time.perf_counter()
    dev = evaluate_split(
        s.model, s.dev_ds, s.labels, batch_size=s.cfg.eval_batch_size, device=s.device, info=s.info
    )
    seconds = train_seconds + time.perf_counter() - t0
    improved = state.selection.update(epoch, dev.weighted_f1, dev.to_dict())
    row = {
        "epoch": epoch,
        "lr": float(s.optimizer.param_groups[0]["lr"]),
        "train_loss": float(losses[0]),
        "train_ce": float(losses[1]),
        "train_contrastive": float(losses[2]),
        "train_unimodal": float(losses[3]),
        "dev_accuracy": dev.accuracy,
        "dev_weighted_f1": dev.weighted_f1,
        "dev_macro_f1": dev.macro_f1,
        "dev_utterances": dev.utterances,
        "seconds": seconds,
        "best": improved,
    }
    state.history.append(row)
    state.epoch = epoch
    state.stopped_early = state.selection.exhausted and epoch < s.cfg.epochs
    if not s.info.is_main:
        return
    if improved:
        runs.save_weights(s.model, s.run_dir / runs.BEST_FILE, epoch=epoch)
    runs.save_checkpoint(
        s.run_dir, epoch, s.model, _snapshot(s, state), keep=s.cfg.keep_checkpoints
    )
    runs.write_metrics(s.run_dir, state.history)
    unimodal = f", unimodal {row['train_unimodal']:.4f}" if s.cfg.unimodal_weight else ""
    log.info(
        "epoch %d/%d loss %.4f (ce %.4f, contrastive %.4f%s) dev acc %.2f wF1 %.2f%s %.1f s",
        epoch,
        s.cfg.epochs,
        row["train_loss"],
        row["train_ce"],
        row["train_contrastive"],
        unimodal,
        100 * dev.accuracy,
        100 * dev.weighted_f1,
        " [best]" if improved else "",
        seconds,
    )
    if state.stopped_early:
        log.info(
            "early stop: no better dev weighted F1 for %d epochs (best epoch %d)",
            s.cfg.patience,
            state.selection.best_epoch,
        )


def _result(run_dir: Path, state: LoopState, context: ContextResult | None) -> TrainResult:
    history = state.history
    return TrainResult(
        run_dir=run_dir,
        best_epoch=state.selection.best_epoch,
        best_dev=state.selection.best_report,
        epochs_run=state.epoch,
        stopped_early=state.stopped_early,
        seconds_per_epoch=float(np.mean([h["seconds"] for h in history])) if history else 0.0,
        history=list(history),
        context_epoch=None if context is None else context.best_epoch,
        context_dev=None if context is None else context.best_dev,
    )


def _context_stage(s: _Session, state: LoopState) -> ContextResult | None:
    """Fit and save the dialogue-context head on the best epoch's utterance vectors (all ranks
    embed, rank 0 fits and saves; None on the other ranks)."""
    if s.info.active:
        dist.barrier()  # rank 0 has written best.safetensors
    best = runs.build_model(s.model_config)
    runs.load_weights(best, s.run_dir / runs.BEST_FILE)
    best.to(s.device).eval()
    result = fit_context(
        best,
        s.train_ds,
        s.dev_ds,
        s.labels.names,
        mode=s.cfg.context,
        seed=s.cfg.seed,
        batch_size=s.cfg.eval_batch_size,
        class_weights=s.class_weights,
        device=s.device,
        info=s.info,
        progress=s.progress and s.info.is_main,
    )
    if result is None:  # not rank 0
        return None
    runs.save_context(
        s.run_dir,
        result.head,
        epoch=result.best_epoch,
        utterance_epoch=state.selection.best_epoch,
        dev=result.best_dev,
    )
    log.info(
        "context head (%s): best epoch %d, dev acc %.2f wF1 %.2f (utterance model: wF1 %.2f)",
        s.cfg.context,
        result.best_epoch,
        100 * result.best_dev["accuracy"],
        100 * result.best_dev["weighted_f1"],
        100 * state.selection.best_score,
    )
    return result


# ---- checkpoints --------------------------------------------------------------------------------
def _snapshot(s: _Session, state: LoopState) -> dict:
    snap = state.snapshot()
    snap.update(
        optimizer=s.optimizer.state_dict(),
        scheduler=s.scheduler.state_dict(),
        rng_torch=torch.get_rng_state(),
        world_size=s.info.world_size,
    )
    return snap


def _restore(
    run_dir: Path,
    epoch: int,
    model: nn.Module,
    optimisation: tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR],
    info: DistInfo,
    *,
    patience: int,
) -> LoopState:
    """Load an epoch checkpoint into the model and ``optimisation`` = (optimizer, scheduler);
    returns the loop state."""
    optimizer, scheduler = optimisation
    saved = runs.load_state(run_dir, epoch)
    runs.load_weights(model, runs.checkpoint_paths(run_dir, epoch)[0])
    optimizer.load_state_dict(saved.pop("optimizer"))
    scheduler.load_state_dict(saved.pop("scheduler"))
    torch.set_rng_state(saved.pop("rng_torch"))  # re-seeded per epoch anyway
    world = saved.pop("world_size", 1)
    if world != info.world_size:
        log.warning(
            "resuming a %d-process run with %d processes: data order differs from an "
            "uninterrupted run",
            world,
            info.world_size,
        )
    return LoopState.from_snapshot(saved, patience)


def _check_resume(run_dir: Path, config: runs.RunConfig) -> None:
    saved = runs.read_config(run_dir)
    ignore = {"device", "num_workers", "threads", "keep_checkpoints", "eval_batch_size"}
    old_model, old_train = saved.model_config.to_dict(), saved.train_config.to_dict()
    diffs = [
        f"model.{k}" for k, v in config.model_config.to_dict().items() if old_model.get(k) != v
    ]
    diffs += [
        f"train.{k}"
        for k, v in config.train_config.to_dict().items()
        if k not in ignore and old_train.get(k) != v
    ]
    if diffs:
        raise ConfigError(
            f"{run_dir}: cannot resume with a different config ({', '.join(diffs)}); "
            "use the saved settings or another --out"
        )


# ---- data and optimisation helpers -------------------------------------------------------------
def _split_records(
    store: FeatureStore,
    splits: tuple[str, str],
    train_ids: Sequence[str] | None,
    dev_ids: Sequence[str] | None,
    *,
    seed: int,
) -> tuple[list[Utterance], list[Utterance]]:
    """(train, dev) records: the named ``splits`` or id lists; dev carved from train if empty."""
    train_split, dev_split = splits
    train_recs = _select_records(store, train_split, train_ids)
    dev_recs = _select_records(store, dev_split, dev_ids)
    if not train_recs:
        raise DataError(store.cache.path, f"no labelled utterances in split {train_split!r}")
    if not dev_recs:
        # NOTE(paper): the paper selects on a validation split; caches without one get a
        # stratified slice of training so the test split is never used for selection.
        log.info("no %r split: holding out 10%% of training for model selection", dev_split)
        train_recs, dev_recs = _carve_dev(train_recs, seed)
    return train_recs, dev_recs


def _class_weights(targets: np.ndarray, k: int) -> torch.Tensor:
    """Inverse-frequency weights N / (K * n_k), 1 for classes absent from training."""
    counts = np.bincount(targets, minlength=k).astype(np.float64)
    w = np.where(counts > 0, len(targets) / (k * np.maximum(counts, 1)), 1.0)
    return torch.tensor(w, dtype=torch.float32)


def _lr_lambda(config: TrainConfig, total_steps: int):
    warm = int(round(config.warmup * total_steps))

    def fn(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if config.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + float(np.cos(np.pi * min(1.0, progress))))

    return fn


def _carve_dev(records: list[Utterance], seed: int, fraction: float = 0.1):
    """A stratified dev split taken from training records when the cache has none."""
    from sklearn.model_selection import train_test_split

    labels = [r.known_label for r in records]
    n_dev = max(1, int(round(fraction * len(records))))
    counts = np.unique(labels, return_counts=True)[1]
    strat = labels if counts.min() >= 2 and n_dev >= len(counts) else None
    tr, dv = train_test_split(records, test_size=n_dev, random_state=seed, stratify=strat)
    return list(tr), list(dv)


def _select_records(store: FeatureStore, split: str, ids: Sequence[str] | None) -> list[Utterance]:
    if ids is None:
        return store.records(split)
    by_id = {r.id: r for r in store.records()}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(store.cache.path, f"{len(missing)} ids not in the cache, e.g. {missing[0]}")
    return [by_id[i] for i in ids]


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def evaluate_split(
    model: nn.Module,
    dataset: FeatureDataset,
    labels: LabelSet,
    *,
    batch_size: int,
    device: torch.device,
    info: DistInfo,
) -> Metrics:
    """Dev-split scores used for model selection (one call per epoch)."""
    pred = predict_dataset(model, dataset, batch_size=batch_size, device=device, info=info)
    return compute_metrics(pred.y_true, pred.y_pred, labels.names)


def _write_splits(run_dir: Path, train_recs: list[Utterance], dev_recs: list[Utterance]) -> None:
    """``splits.json``: which utterances trained the model and which chose its epoch."""
    data = {"train": [r.id for r in train_recs], "dev": [r.id for r in dev_recs]}
    atomic_write_text(run_dir / "splits.json", json.dumps(data) + "\n")
