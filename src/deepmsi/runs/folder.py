"""Run folders: everything needed to resume training or to use a trained model.

Layout of a run folder::

    config.json                   resolved model + train config, label set, cache manifest
    metrics.jsonl                 one JSON line per finished epoch
    best.safetensors              weights of the epoch chosen on the validation split
    checkpoints/epoch_XXX.safetensors   weights after epoch XXX
    checkpoints/epoch_XXX.state.pt      optimizer, scheduler, RNG, early-stopping state, history
    context.json, context.safetensors   optional dialogue-context head (``--context``): its
                                        ContextConfig, and weights fitted on best.safetensors

Every file is written to a temporary name and renamed, so a killed run never leaves a
half-written checkpoint; the state file is written last and marks an epoch as complete.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepmsi.atomic import atomic_path, atomic_write_text
from deepmsi.config import ModelConfig, TrainConfig
from deepmsi.errors import ConfigError, DataError
from deepmsi.labels import LabelSet

if TYPE_CHECKING:
    import torch

    from deepmsi.models.context import DialogueContext
    from deepmsi.models.deepmsi import DeepMSI

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.safetensors"
CONTEXT_CONFIG_FILE = "context.json"
CONTEXT_FILE = "context.safetensors"
CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 1
_EPOCH_RE = re.compile(r"^epoch_(\d{3,})\.state\.pt$")


@dataclass(frozen=True)
class RunConfig:
    """What ``config.json`` holds: enough to rebuild the model and to re-prepare new data."""

    model_config: ModelConfig
    train_config: TrainConfig
    labels: LabelSet
    cache_manifest: dict
    cache_path: str | None = None

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "model": self.model_config.to_dict(),
            "train": self.train_config.to_dict(),
            "labels": self.labels.to_dict(),
            "cache": {"path": self.cache_path, "manifest": self.cache_manifest},
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        cache = d.get("cache") or {}
        return cls(
            model_config=ModelConfig.from_dict(d["model"]),
            train_config=TrainConfig.from_dict(d["train"]),
            labels=LabelSet.from_dict(d["labels"]),
            cache_manifest=dict(cache.get("manifest") or {}),
            cache_path=cache.get("path"),
        )


@dataclass
class Run:
    """A trained model loaded from a run folder, in eval mode on ``device``."""

    path: Path
    model: DeepMSI
    model_config: ModelConfig
    train_config: TrainConfig
    labels: LabelSet
    cache_manifest: dict
    cache_path: str | None
    epoch: int | None  # the epoch whose weights were loaded (None when unknown)
    context: DialogueContext | None = None  # the dialogue-context head, when the run has one

    @property
    def context_mode(self) -> str:
        """How predictions read the dialogue: "online", "offline" or "none"."""
        return mode_of(self.context)


def mode_of(head: DialogueContext | None) -> str:
    """A context head's mode: "online" (causal), "offline" or "none" (no head)."""
    if head is None:
        return "none"
    return "online" if head.cfg.causal else "offline"


def write_config(run_dir: Path, config: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")


def read_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise DataError(run_dir, f"not a run folder (no {CONFIG_FILE})")
    data = read_json_object(path, "run config")
    try:
        return RunConfig.from_dict(data)
    except KeyError as err:
        raise DataError(path, f"malformed run config: no {err} entry") from None
    except (AttributeError, TypeError, ValueError) as err:
        raise DataError(path, f"malformed run config: {err}") from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object; anything else (truncated, not UTF-8, a list,
    null) is a one-line ``DataError`` naming the file."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise DataError(path, f"cannot read {what}: {err.strerror or err}") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise DataError(path, f"malformed {what}: {err}") from None
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), type(data).__name__)
        raise DataError(path, f"malformed {what}: {kind} instead of a JSON object")
    return data


_JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number"}
_JSON_KINDS.update({bool: "a boolean", type(None): "null"})


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` from the history (so a resumed run never duplicates lines)."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_text(run_dir / METRICS_FILE, text)


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_weights(model: torch.nn.Module, path: Path, *, epoch: int) -> None:
    """Model weights as safetensors (tied tensors handled by ``save_model``), atomically."""
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={"epoch": str(epoch)})


def load_weights(model: torch.nn.Module, path: Path) -> int | None:
    """Load safetensors weights into ``model`` (strict); returns the epoch stored with them."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    if not path.is_file():
        raise DataError(path, "weights file not found")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as err:  # safetensors raises several types on corrupt/mismatched files
        raise DataError(path, f"cannot load weights: {_short(err)}") from None
    if missing or unexpected:
        raise DataError(
            path,
            f"weights do not match the model (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})",
        )
    with safe_open(str(path), framework="pt") as f:
        epoch = (f.metadata() or {}).get("epoch")
    return int(epoch) if epoch is not None else None


def checkpoint_paths(run_dir: str | Path, epoch: int) -> tuple[Path, Path]:
    """(weights, state) paths of an epoch's checkpoint."""
    base = Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:03d}"
    return base.with_suffix(".safetensors"), base.with_suffix(".state.pt")


def save_checkpoint(
    run_dir: Path, epoch: int, model: torch.nn.Module, state: dict[str, Any], *, keep: int = 0
) -> None:
    """Weights then state for ``epoch`` (the state file marks it complete); prune old ones.

    ``keep`` > 0 keeps only the newest ``keep`` epochs; 0 keeps all.
    """
    import torch

    weights, state_path = checkpoint_paths(run_dir, epoch)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, weights, epoch=epoch)
    with atomic_path(state_path) as tmp:
        torch.save(state, tmp)
    if keep > 0:
        for old in completed_epochs(run_dir)[:-keep]:
            for p in checkpoint_paths(run_dir, old):
                p.unlink(missing_ok=True)


def completed_epochs(run_dir: str | Path) -> list[int]:
    """Epochs with a complete checkpoint (weights and state), ascending."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    epochs = []
    for p in folder.iterdir():
        m = _EPOCH_RE.match(p.name)
        if m and checkpoint_paths(run_dir, int(m.group(1)))[0].is_file():
            epochs.append(int(m.group(1)))
    return sorted(epochs)


def load_state(run_dir: Path, epoch: int) -> dict[str, Any]:
    import torch

    path = checkpoint_paths(run_dir, epoch)[1]
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors on a damaged file
        raise DataError(path, f"cannot read training state: {_short(err)}") from None


def _short(err: Exception) -> str:
    """An exception's first sentence (torch appends a paragraph of advice), or its type."""
    text = str(err).strip().split(". ", 1)[0].rstrip(".")
    return text or f"{type(err).__name__} (empty or damaged file)"


def save_context(
    run_dir: Path,
    head: DialogueContext,
    *,
    epoch: int,
    utterance_epoch: int,
    dev: dict[str, Any] | None = None,
) -> None:
    """The head's ContextConfig (JSON, with its epoch and dev report for people and scripts)
    then its weights, each atomically; the weights record the head's epoch and the
    utterance-model epoch whose vectors it was fitted on."""
    from safetensors.torch import save_model

    data = {
        "format": FORMAT_VERSION,
        "context": head.cfg.to_dict(),
        "epoch": epoch,
        "utterance_epoch": utterance_epoch,
        "dev": dev,
    }
    atomic_write_text(run_dir / CONTEXT_CONFIG_FILE, json.dumps(data, indent=2) + "\n")
    meta = {"epoch": str(epoch), "utterance_epoch": str(utterance_epoch)}
    with atomic_path(run_dir / CONTEXT_FILE) as tmp:
        save_model(head, str(tmp), metadata=meta)


def load_context(
    run_dir: str | Path, *, utterance_epoch: int | None, device: str = "cpu"
) -> DialogueContext | None:
    """The run's dialogue-context head in eval mode, or None when it has none or when the loaded
    utterance weights (``utterance_epoch``) are not the ones the head was fitted on."""
    from safetensors import safe_open

    from deepmsi.models.context import ContextConfig, DialogueContext

    run_dir = Path(run_dir)
    path, cfg_path = run_dir / CONTEXT_FILE, run_dir / CONTEXT_CONFIG_FILE
    if not path.is_file():
        return None
    if not cfg_path.is_file():
        raise DataError(cfg_path, f"missing (the run has {CONTEXT_FILE} without its config)")
    data = read_json_object(cfg_path, "context config")
    try:
        cfg = ContextConfig.from_dict(data["context"])
    except KeyError as err:
        raise DataError(cfg_path, f"malformed context config: no {err} entry") from None
    except (AttributeError, TypeError, ValueError) as err:
        raise DataError(cfg_path, f"malformed context config: {err}") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            fitted_on = (f.metadata() or {}).get("utterance_epoch")
    except Exception as err:  # safetensors raises several types on a damaged file
        raise DataError(path, f"cannot load weights: {err}") from None
    if utterance_epoch is not None and fitted_on is not None and int(fitted_on) != utterance_epoch:
        log.warning(
            "%s: the context head was fitted on epoch %s's vectors, not epoch %d's; "
            "predicting utterance by utterance",
            run_dir,
            fitted_on,
            utterance_epoch,
        )
        return None
    head = DialogueContext(cfg)
    load_weights(head, path)
    return head.to(device).eval()


def build_model(config: ModelConfig) -> DeepMSI:
    from deepmsi.models import DeepMSI

    return DeepMSI(config)


def load_run(path: str | Path, *, checkpoint: str | int = "best", device: str = "cpu") -> Run:
    """A trained model from a run folder, ready for inference.

    ``checkpoint`` is "best" (the epoch chosen on the validation split), "last" (the newest
    complete epoch) or an epoch number.
    """
    run_dir = Path(path)
    config = read_config(run_dir)
    model = build_model(config.model_config)
    if checkpoint == "best":
        weights = run_dir / BEST_FILE
    else:
        epochs = completed_epochs(run_dir)
        if not epochs:
            raise DataError(run_dir, "run has no complete checkpoint")
        epoch = epochs[-1] if checkpoint == "last" else int(checkpoint)
        if epoch not in epochs:
            raise ConfigError(f"{run_dir}: no checkpoint for epoch {epoch} (have {epochs})")
        weights = checkpoint_paths(run_dir, epoch)[0]
    loaded_epoch = load_weights(model, weights)
    model.to(device).eval()
    context = load_context(run_dir, utterance_epoch=loaded_epoch, device=device)
    if context is None and config.train_config.context != "none":
        log.warning(
            "%s: trained with --context %s but has no usable context head",
            run_dir,
            config.train_config.context,
        )
    return Run(
        path=run_dir,
        model=model,
        model_config=config.model_config,
        train_config=config.train_config,
        labels=config.labels,
        cache_manifest=config.cache_manifest,
        cache_path=config.cache_path,
        epoch=loaded_epoch,
        context=context,
    )
