"""Training-ready views of a feature cache: a store with an in-memory copy, a labelled
dataset for the modalities a model uses, its collated batches and input statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deepmsi.config import ModelConfig
from deepmsi.data.cache import FeatureCache
from deepmsi.data.records import Utterance
from deepmsi.errors import DataError
from deepmsi.labels import LabelSet
from deepmsi.modalities import NAME_OF, frames_to_float

# Preload every item into memory when the whole split fits in this many bytes of frames.
PRELOAD_LIMIT_BYTES = 2 << 30


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
            targets = [store.labels.index(r.known_label) for r in self.records]
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
                        f"item {self.records[it[0]].id}: {NAME_OF[key]} has shape "
                        f"{tuple(a.shape)}, expected {shapes[key]}",
                    )
                arrays.append(a.astype(dtype, copy=False) if ok else np.zeros(shapes[key], dtype))
                mask.append(ok)
            stacked = np.stack(arrays)
            tensors[key] = frames_to_float(stacked) if key == "v" else torch.from_numpy(stacked)
            present[NAME_OF[key]] = torch.tensor(mask, dtype=torch.bool)
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
            mean, std = torch.from_numpy(x.mean(0)).float(), torch.from_numpy(x.std(0)).float()
            stats[NAME_OF[k]] = (mean, std)
    return stats
