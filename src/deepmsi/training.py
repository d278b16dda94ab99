"""Training on a prepared feature cache: AdamW, dev-split model selection, exact resume, DDP.

Exact resume: the data order of epoch ``e`` is a function of (seed, e) (a ``DistributedSampler``
with ``set_epoch``), the torch RNG is re-seeded from (seed, e, rank) at the start of every epoch,
and each checkpoint stores weights, optimizer, scheduler and early-stopping state. A run killed
after epoch ``e`` and resumed therefore computes exactly what the uninterrupted run computes.

Under ``torchrun`` every rank trains on its shard; validation predictions are gathered from all
ranks so the dev metrics (and hence model selection and early stopping) are computed on the whole
split, identically on every rank. Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepmsi import checkpoint as ckpt
from deepmsi.config import ModelConfig, check_field_types, coerce_fields
from deepmsi.data.cache import FeatureCache
from deepmsi.data.records import Utterance
from deepmsi.dialogue import MODES as CONTEXT_MODES
from deepmsi.dialogue import ContextResult, fit_context
from deepmsi.errors import ConfigError, DataError
from deepmsi.labels import LabelSet
from deepmsi.metrics import Metrics, compute_metrics

log = logging.getLogger(__name__)

MODALITY_KEYS = {"t": "text", "a": "audio", "v": "video"}
# Preload every item into memory when the whole split fits in this many bytes of frames.
PRELOAD_LIMIT_BYTES = 2 << 30


# ---- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyper-parameters (the model's live in :class:`deepmsi.config.ModelConfig`).

    ``warmup`` is the fraction of all steps with a linear learning-rate warm-up, followed by a
    cosine decay to zero (``schedule="cosine"``) or a constant rate. ``patience`` stops training
    after that many epochs without a better dev weighted F1 (0: never stop early).
    ``keep_checkpoints`` keeps only the newest N epoch checkpoints (0: all). ``threads`` sets
    torch's threads per process (0: torch's default); on a busy CPU, 1 is often the fastest.
    ``context`` adds a dialogue-context head after the utterance model (see
    :mod:`deepmsi.dialogue`): "online" reads past turns only, "offline" the whole dialogue.
    """

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    schedule: str = "cosine"
    patience: int = 5
    seed: int = 0
    contrastive_weight: float = 0.5
    temperature: float = 0.5
    class_weights: bool = False
    grad_clip: float = 1.0
    eval_batch_size: int = 64
    num_workers: int = 0
    threads: int = 0
    keep_checkpoints: int = 2
    device: str = "auto"
    context: str = "none"

    def __post_init__(self) -> None:
        check_field_types(self, "train config")
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "eval_batch_size": self.eval_batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup": 0 <= self.warmup < 1,
            "schedule": self.schedule in ("cosine", "constant"),
            "patience": self.patience >= 0,
            "contrastive_weight": self.contrastive_weight >= 0,
            "temperature": self.temperature > 0,
            "grad_clip": self.grad_clip >= 0,
            "num_workers": self.num_workers >= 0,
            "threads": self.threads >= 0,
            "keep_checkpoints": self.keep_checkpoints >= 0,
            "device": self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
            "context": self.context in CONTEXT_MODES,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"train config: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls().replace(**data)

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with some fields changed; unknown keys raise ConfigError."""
        return dataclasses.replace(self, **coerce_fields(type(self), overrides, "train config"))


# NOTE(paper): the paper does not publish its optimiser settings beyond AdamW-style training of
# the fusion network on frozen features; "paper" keeps the defaults at a conservative rate.
_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "patience": 0, "eval_batch_size": 16},
    "cpu": {"epochs": 20, "batch_size": 32, "lr": 1e-3, "patience": 5},
    "paper": {"epochs": 40, "batch_size": 32, "lr": 1e-4, "patience": 8},
}


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    """A named training preset ("tiny", "cpu", "paper") with type-checked overrides."""
    if name not in _TRAIN_PRESETS:
        raise ConfigError(f"unknown train preset {name!r}; choose from {', '.join(_TRAIN_PRESETS)}")
    return TrainConfig(**_TRAIN_PRESETS[name]).replace(**overrides)


def resolve_model_config(config: ModelConfig, cache: FeatureCache) -> ModelConfig:
    """The model config with the sizes the cache dictates (classes, feature widths, frames)."""
    manifest = cache.manifest
    sizes: dict[str, Any] = {"num_classes": len(cache.labels)}
    missing = []
    for key, dim in (("t", cache.text_dim), ("a", cache.audio_dim)):
        if dim:
            sizes[f"{MODALITY_KEYS[key]}_dim"] = int(dim)
        elif key in config.modalities:
            missing.append(MODALITY_KEYS[key])
    frames, size = manifest.get("frames"), manifest.get("image_size")
    if frames and size:
        sizes["frames"], sizes["image_size"] = int(frames), int(size)
    elif "v" in config.modalities:
        missing.append("video")
    if missing:
        keep = "".join(m for m in config.modalities if MODALITY_KEYS[m] not in missing)
        hint = f"; train with --modalities {keep}" if keep else ""
        raise ConfigError(f"{cache.path}: the cache has no {' or '.join(missing)} features{hint}")
    return config.replace(**sizes)


# ---- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    """A collated batch. Missing modalities are zeros with ``present[key] == False``.

    text [B, Dt] f32, audio [B, Da] f32, frames [B, F, 3, S, S] f32 in [0, 1], labels [B] int64,
    index [B] int64 (position in the dataset).
    """

    index: torch.Tensor
    labels: torch.Tensor
    text: torch.Tensor | None
    audio: torch.Tensor | None
    frames: torch.Tensor | None
    present: dict[str, torch.Tensor]

    def model_inputs(self, device: torch.device) -> dict[str, Any]:
        """Keyword arguments for ``DeepMSI.forward``."""
        return {
            "text": None if self.text is None else self.text.to(device, non_blocking=True),
            "audio": None if self.audio is None else self.audio.to(device, non_blocking=True),
            "frames": None if self.frames is None else self.frames.to(device, non_blocking=True),
            "present": {k: v.to(device) for k, v in self.present.items()},
        }


class FeatureStore:
    """A feature cache with an optional in-memory copy, shared by the runs of an ablation."""

    def __init__(self, cache: FeatureCache | str | Path) -> None:
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(Path(cache))
        self._memo: dict[str, Any] = {}
        self._ids: set[str] | None = None

    @property
    def labels(self) -> LabelSet:
        return self.cache.labels

    def records(self, split: str | None = None) -> list[Utterance]:
        return [r for r in self.cache.records(split) if r.label is not None]

    def preload(self, ids: Sequence[str]) -> None:
        """Keep these items in memory from now on (cheap to call again)."""
        self._ids = set(ids) if self._ids is None else self._ids | set(ids)

    def load(self, utt_id: str) -> Any:
        hit = self._memo.get(utt_id)
        if hit is not None:
            return hit
        features = self.cache.load(utt_id)
        if self._ids is not None and utt_id in self._ids:
            self._memo[utt_id] = features
        return features


class FeatureDataset(Dataset):
    """Labelled items of a cache for the modalities a model uses.

    Item: (position, class index, text [Dt] | None, audio [Da] | None, frames [F,S,S,3] u8 | None).
    ``targets`` overrides the class indices (scoring a cache with another label set).
    """

    def __init__(
        self,
        store: FeatureStore,
        records: Sequence[Utterance],
        config: ModelConfig,
        targets: Sequence[int] | None = None,
    ) -> None:
        self.store = store
        self.records = list(records)
        self.config = config
        if targets is None:
            targets = [store.labels.index(r.label) for r in self.records]
        self.targets = np.asarray(targets, dtype=np.int64).reshape(len(self.records))
        frame_bytes = config.frames * config.image_size**2 * 3 if "v" in config.modalities else 0
        item_bytes = frame_bytes + 4 * (config.text_dim + config.audio_dim)
        if len(self.records) * item_bytes <= PRELOAD_LIMIT_BYTES:
            store.preload([r.id for r in self.records])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple:
        feats = self.store.load(self.records[i].id)
        mods = self.config.modalities
        return (
            i,
            int(self.targets[i]),
            feats.text if "t" in mods else None,
            feats.audio if "a" in mods else None,
            feats.frames if "v" in mods else None,
        )

    def collate(self, items: list[tuple]) -> Batch:
        cfg = self.config
        mods = cfg.modalities
        index = torch.tensor([it[0] for it in items], dtype=torch.int64)
        labels = torch.tensor([it[1] for it in items], dtype=torch.int64)
        shapes = {
            "t": (cfg.text_dim,),
            "a": (cfg.audio_dim,),
            "v": (cfg.frames, cfg.image_size, cfg.image_size, 3),
        }
        tensors: dict[str, torch.Tensor | None] = {}
        present: dict[str, torch.Tensor] = {}
        for slot, key in enumerate("tav", start=2):
            if key not in mods:
                tensors[key] = None
                continue
            dtype = np.uint8 if key == "v" else np.float32
            arrays, mask = [], []
            for it in items:
                a = it[slot]
                ok = a is not None and tuple(a.shape) == shapes[key]
                if a is not None and not ok:
                    raise DataError(
                        self.store.cache.path,
                        f"item {self.records[it[0]].id}: {MODALITY_KEYS[key]} has shape "
                        f"{tuple(a.shape)}, expected {shapes[key]}",
                    )
                arrays.append(a.astype(dtype, copy=False) if ok else np.zeros(shapes[key], dtype))
                mask.append(ok)
            x = torch.from_numpy(np.stack(arrays))
            if key == "v":
                # [B, F, S, S, 3] uint8 -> [B, F, 3, S, S] float in [0, 1]
                x = x.permute(0, 1, 4, 2, 3).float().div_(255.0)
            tensors[key] = x
            present[MODALITY_KEYS[key]] = torch.tensor(mask, dtype=torch.bool)
        return Batch(index, labels, tensors["t"], tensors["a"], tensors["v"], present)


def input_statistics(dataset: FeatureDataset) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Mean and standard deviation [D] of the text and audio features, over the items that have
    them (one pass over the dataset)."""
    keys = [k for k in "ta" if k in dataset.config.modalities]
    values: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for i in range(len(dataset)):
        item = dataset[i]  # (index, target, text, audio, frames)
        for k in keys:
            x = item[2 + "ta".index(k)]
            if x is not None:
                values[k].append(x)
    stats = {}
    for k, xs in values.items():
        if xs:
            x = np.stack(xs).astype(np.float64)  # N, D
            stats[MODALITY_KEYS[k]] = (torch.from_numpy(x.mean(0)).float(),
                                       torch.from_numpy(x.std(0)).float())  # fmt: skip
    return stats


# ---- distributed helpers ---------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    use_cuda = _want_cuda(device)
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, True)


def _want_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _device(config: TrainConfig, info: DistInfo) -> torch.device:
    if _want_cuda(config.device):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {config.device!r} asked for but CUDA is not available")
        if config.device == "auto" or info.active:
            return torch.device("cuda", info.local_rank)
        return torch.device(config.device)
    return torch.device("cpu")


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


# ---- prediction ------------------------------------------------------------------------------
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
    from tqdm.auto import tqdm

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
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress, unit="batch"):
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


# ---- the loop --------------------------------------------------------------------------------
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

    labels = [r.label for r in records]
    n_dev = max(1, int(round(fraction * len(records))))
    counts = np.unique(labels, return_counts=True)[1]
    strat = labels if counts.min() >= 2 and n_dev >= len(counts) else None
    tr, dv = train_test_split(records, test_size=n_dev, random_state=seed, stratify=strat)
    return list(tr), list(dv)


def _select_records(
    store: FeatureStore,
    split: str,
    ids: Sequence[str] | None,
) -> list[Utterance]:
    if ids is None:
        return store.records(split)
    by_id = {r.id: r for r in store.records()}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(store.cache.path, f"{len(missing)} ids not in the cache, e.g. {missing[0]}")
    return [by_id[i] for i in ids]


def _check_resume(run_dir: Path, config: ckpt.RunConfig) -> None:
    saved = ckpt.read_config(run_dir)
    ignore = {"device", "num_workers", "threads", "keep_checkpoints", "eval_batch_size"}
    diffs = [
        f"model.{k}" for k, v in config.model_config.to_dict().items()
        if saved.model_config.to_dict().get(k) != v
    ] + [
        f"train.{k}" for k, v in config.train_config.to_dict().items()
        if k not in ignore and saved.train_config.to_dict().get(k) != v
    ]  # fmt: skip
    if diffs:
        raise ConfigError(
            f"{run_dir}: cannot resume with a different config ({', '.join(diffs)}); "
            "use the saved settings or another --out"
        )


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
    train_config = train_config or TrainConfig()
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache)
    model_config = resolve_model_config(model_config, store.cache)
    labels = store.labels
    run_dir = Path(out)
    info = setup_distributed(train_config.device)
    try:
        return _train(
            store, run_dir, model_config, train_config, labels, info,
            resume=resume, train_split=train_split, dev_split=dev_split,
            train_ids=train_ids, dev_ids=dev_ids, progress=progress,
        )  # fmt: skip
    finally:
        if info.initialised_here:
            dist.destroy_process_group()


def _train(
    store: FeatureStore,
    run_dir: Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    labels: LabelSet,
    info: DistInfo,
    *,
    resume: bool,
    train_split: str,
    dev_split: str,
    train_ids: Sequence[str] | None,
    dev_ids: Sequence[str] | None,
    progress: bool,
) -> TrainResult:
    from tqdm.auto import tqdm

    from deepmsi.losses import DeepMSILoss

    cfg = train_config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg, info)
    train_recs = _select_records(store, train_split, train_ids)
    dev_recs = _select_records(store, dev_split, dev_ids)
    if not train_recs:
        raise DataError(store.cache.path, f"no labelled utterances in split {train_split!r}")
    if not dev_recs:
        # NOTE(paper): the paper selects on a validation split; caches without one get a
        # stratified slice of training so the test split is never used for selection.
        log.info("no %r split: holding out 10%% of training for model selection", dev_split)
        train_recs, dev_recs = _carve_dev(train_recs, cfg.seed)

    run_config = ckpt.RunConfig(
        model_config, cfg, labels, dict(store.cache.manifest), str(store.cache.path)
    )
    done = ckpt.completed_epochs(run_dir)
    if done and not resume:
        raise ConfigError(
            f"{run_dir} already holds a training run (epoch {done[-1]}); pass --resume to "
            "continue it or choose another --out"
        )
    if done:
        _check_resume(run_dir, run_config)
    elif info.is_main:
        ckpt.write_config(run_dir, run_config)
        _write_splits(run_dir, train_recs, dev_recs)

    train_ds = FeatureDataset(store, train_recs, model_config)
    dev_ds = FeatureDataset(store, dev_recs, model_config)

    torch.manual_seed(cfg.seed)
    model = ckpt.build_model(model_config)
    model.set_input_stats(input_statistics(train_ds))  # a resumed run restores the same values
    model.to(device)
    weights = (
        _class_weights(train_ds.targets, len(labels)).to(device) if cfg.class_weights else None
    )
    criterion = DeepMSILoss(
        contrastive_weight=cfg.contrastive_weight,
        temperature=cfg.temperature,
        **({"class_weights": weights} if weights is not None else {}),
    )
    sampler = torch.utils.data.DistributedSampler(
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(cfg, cfg.epochs * len(loader))
    )

    state: dict[str, Any] = {
        "epoch": 0, "best_epoch": 0, "best_score": -1.0, "best_dev": {}, "bad_epochs": 0,
        "stopped_early": False, "history": [],
    }  # fmt: skip
    if done:
        state = _restore(run_dir, done[-1], model, optimizer, scheduler, info)
        log.info("resuming %s after epoch %d", run_dir, state["epoch"])

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
            model_config.modalities, len(train_ds), len(dev_ds), cfg.epochs, len(loader),
            info.world_size, device,
        )  # fmt: skip
    epoch = state["epoch"]
    while epoch < cfg.epochs and not state["stopped_early"]:
        epoch += 1
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        torch.manual_seed(_epoch_seed(cfg.seed, epoch, info.rank))
        net.train()
        sums = np.zeros(3)
        n_seen = 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            unit="batch",
            disable=not (progress and info.is_main),
        )
        for batch in bar:
            out = net(**batch.model_inputs(device))
            loss = criterion(out, batch.labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            b = len(batch.labels)
            parts = (loss.total, loss.ce, loss.contrastive)
            sums += b * np.array([float(x.detach()) for x in parts])
            n_seen += b
            bar.set_postfix(loss=f"{sums[0] / n_seen:.3f}")
        bar.close()
        if info.active:  # mean training loss over all ranks' samples
            t = torch.tensor([*sums, n_seen], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            sums, n_seen = t[:3].cpu().numpy(), int(t[3])
            # Each rank's BatchNorm statistics saw its own last batch; score every shard with
            # rank 0's, the ones the checkpoint saves.
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)
        dev = evaluate_split(
            model, dev_ds, labels, batch_size=cfg.eval_batch_size, device=device, info=info
        )
        seconds = time.perf_counter() - t0
        improved = dev.weighted_f1 > state["best_score"]
        if improved:
            state.update(best_epoch=epoch, best_score=dev.weighted_f1, best_dev=dev.to_dict())
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
        row = {
            "epoch": epoch,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "train_loss": float(sums[0] / max(1, n_seen)),
            "train_ce": float(sums[1] / max(1, n_seen)),
            "train_contrastive": float(sums[2] / max(1, n_seen)),
            "dev_accuracy": dev.accuracy,
            "dev_weighted_f1": dev.weighted_f1,
            "dev_macro_f1": dev.macro_f1,
            "dev_utterances": dev.utterances,
            "seconds": seconds,
            "best": improved,
        }
        state["history"].append(row)
        state["epoch"] = epoch
        if cfg.patience and state["bad_epochs"] >= cfg.patience and epoch < cfg.epochs:
            state["stopped_early"] = True
        if info.is_main:
            if improved:
                ckpt.save_weights(model, run_dir / ckpt.BEST_FILE, epoch=epoch)
            ckpt.save_checkpoint(
                run_dir, epoch, model, _snapshot(state, optimizer, scheduler, info),
                keep=cfg.keep_checkpoints,
            )  # fmt: skip
            ckpt.write_metrics(run_dir, state["history"])
            log.info(
                "epoch %d/%d loss %.4f (ce %.4f, contrastive %.4f) dev acc %.2f wF1 %.2f%s "
                "%.1f s",
                epoch, cfg.epochs, row["train_loss"], row["train_ce"], row["train_contrastive"],
                100 * dev.accuracy, 100 * dev.weighted_f1, " [best]" if improved else "", seconds,
            )  # fmt: skip
            if state["stopped_early"]:
                log.info(
                    "early stop: no better dev weighted F1 for %d epochs (best epoch %d)",
                    cfg.patience, state["best_epoch"],
                )  # fmt: skip
    context = None
    if cfg.context != "none":
        context = _context_stage(run_dir, model_config, cfg, train_ds, dev_ds, labels, weights,
                                 device, info, state, progress)  # fmt: skip
    history = state["history"]
    return TrainResult(
        run_dir=run_dir,
        best_epoch=state["best_epoch"],
        best_dev=state["best_dev"],
        epochs_run=state["epoch"],
        stopped_early=state["stopped_early"],
        seconds_per_epoch=float(np.mean([h["seconds"] for h in history])) if history else 0.0,
        history=list(history),
        context_epoch=None if context is None else context.best_epoch,
        context_dev=None if context is None else context.best_dev,
    )


def _context_stage(
    run_dir: Path,
    model_config: ModelConfig,
    cfg: TrainConfig,
    train_ds: FeatureDataset,
    dev_ds: FeatureDataset,
    labels: LabelSet,
    weights: torch.Tensor | None,
    device: torch.device,
    info: DistInfo,
    state: dict[str, Any],
    progress: bool,
) -> ContextResult | None:
    """Fit and save the dialogue-context head on the best epoch's utterance vectors (all ranks
    embed, rank 0 fits and saves; None on the other ranks)."""
    if info.active:
        dist.barrier()  # rank 0 has written best.safetensors
    best = ckpt.build_model(model_config)
    ckpt.load_weights(best, run_dir / ckpt.BEST_FILE)
    best.to(device).eval()
    result = fit_context(
        best, train_ds, dev_ds, labels.names, mode=cfg.context, seed=cfg.seed,
        batch_size=cfg.eval_batch_size, class_weights=weights, device=device, info=info,
        progress=progress and info.is_main,
    )  # fmt: skip
    if result is None:  # not rank 0
        return None
    ckpt.save_context(run_dir, result.head, epoch=result.best_epoch,
                      utterance_epoch=state["best_epoch"], dev=result.best_dev)  # fmt: skip
    log.info(
        "context head (%s): best epoch %d, dev acc %.2f wF1 %.2f (utterance model: wF1 %.2f)",
        cfg.context, result.best_epoch, 100 * result.best_dev["accuracy"],
        100 * result.best_dev["weighted_f1"], 100 * state["best_score"],
    )  # fmt: skip
    return result


def _snapshot(state: dict, optimizer, scheduler, info: DistInfo) -> dict:
    snap = dict(state)
    snap.update(
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng_torch=torch.get_rng_state(),
        world_size=info.world_size,
    )
    return snap


def _restore(run_dir: Path, epoch: int, model, optimizer, scheduler, info: DistInfo) -> dict:
    """Load an epoch checkpoint into model/optimizer/scheduler; returns the loop state."""
    saved = ckpt.load_state(run_dir, epoch)
    ckpt.load_weights(model, ckpt.checkpoint_paths(run_dir, epoch)[0])
    optimizer.load_state_dict(saved.pop("optimizer"))
    scheduler.load_state_dict(saved.pop("scheduler"))
    torch.set_rng_state(saved.pop("rng_torch"))  # re-seeded per epoch anyway
    world = saved.pop("world_size", 1)
    if world != info.world_size:
        log.warning(
            "resuming a %d-process run with %d processes: data order differs from an "
            "uninterrupted run", world, info.world_size,
        )  # fmt: skip
    return saved


def _write_splits(run_dir: Path, train_recs: list[Utterance], dev_recs: list[Utterance]) -> None:
    """``splits.json``: which utterances trained the model and which chose its epoch."""
    import json

    data = {"train": [r.id for r in train_recs], "dev": [r.id for r in dev_recs]}
    (run_dir / "splits.json").write_text(json.dumps(data) + "\n")
