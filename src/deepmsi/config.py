"""Configuration: the model, the training recipe, their presets, and one strict options base.

``model_preset("cpu", num_classes=7)`` is the usual entry point. ``ModelConfig()`` is the paper's
model; the other presets are deltas from it. Every options dataclass of the package derives from
:class:`Options`: a field of the wrong type or an unknown key raises
:class:`deepmsi.errors.ConfigError` instead of being silently accepted. The resolved configs are
saved with every run (``to_dict``) and read back with ``from_dict``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Self

from deepmsi.errors import ConfigError
from deepmsi.modalities import names_of, parse_modalities

VSC_STAGE = 2  # VSC runs in the third Swin stage, as in the paper.
PRECISIONS = ("fp32", "bf16")  # arithmetic of the model's matmuls (bf16: autocast)
CONTEXT_MODES = ("none", "online", "offline")


class Options:
    """Base of the frozen options dataclasses: typed fields, strict keys, JSON round trip.

    Subclasses are ``@dataclass(frozen=True)``, set ``what`` (how errors name them) and put
    value checks in :meth:`check`. Ints are accepted (and converted) for float fields; bools are
    not ints; JSON lists become tuples for tuple fields.
    """

    what: ClassVar[str] = "options"

    def __post_init__(self) -> None:
        check_field_types(self, self.what)
        self.check()

    def check(self) -> None:
        """Value checks beyond the types (raise ConfigError)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists; nested options become dicts)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Options):
                value = value.to_dict()
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys or wrong types raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.what} must be a mapping, got {type(data).__name__}")
        return cls(**coerce_fields(cls, dict(data), cls.what))

    def replace(self, **overrides: Any) -> Self:
        """A copy with some fields changed (type-checked; unknown keys raise ConfigError)."""
        changes = coerce_fields(type(self), overrides, self.what)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def check_at_least(cfg: Options, minimum: float, *names: str) -> None:
    """ConfigError naming each field of ``names`` below ``minimum``."""
    bad = [f"{n}={getattr(cfg, n)!r}" for n in names if getattr(cfg, n) < minimum]
    if bad:
        raise ConfigError(f"{cfg.what}: {', '.join(bad)} must be >= {minimum}")


@dataclass(frozen=True)
class ModelConfig(Options):
    """Everything needed to build :class:`deepmsi.models.DeepMSI` (pure hyper-parameters).

    The defaults are the paper's model (the ``paper`` preset). Video backbone fields describe a
    Swin-Transformer-V2 with ``len(depths)`` stages; with ``vsc`` on, the non-shifted blocks of
    stage 3 shrink the token grid to ``vsc_grids`` in turn (paper: 16x16 -> 14x14 -> 12x12 ->
    10x10). Input widths ``text_dim``/``audio_dim`` come from the prepared feature cache.
    """

    what: ClassVar[str] = "model config"

    num_classes: int = 6
    text_dim: int = 1024  # BERT-large
    audio_dim: int = 768  # wav2vec2-base
    modalities: str = "tav"
    # Visual backbone (Swin-Transformer-V2-T) on F face frames of S x S pixels.
    frames: int = 15
    image_size: int = 256
    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 8
    mlp_ratio: float = 4.0
    cpb_hidden: int = 512
    # Per-stage window the position-bias MLP was trained at (set when loading a pretrained
    # backbone, see deepmsi.models.swin_v2_hf); empty: trained here, at ``window_size``.
    pretrained_window: tuple[int, ...] = ()
    drop_path: float = 0.2
    # Visual sequence compression (VSC) in stage 3, guided by text + audio.
    vsc: bool = True
    vsc_grids: tuple[int, ...] = (14, 12, 10)
    vsc_threshold: float = 0.6
    vsc_alpha: float = 0.9
    guidance_hidden: int = 512
    # Temporal convolution over the F frame vectors.
    tcn_channels: tuple[int, ...] = (1024, 1024, 1024)
    tcn_kernel: int = 3
    # Heads.
    projection_dim: int = 256
    classifier_hidden: tuple[int, ...] = (512, 256, 128)
    dropout: float = 0.3
    projection_dropout: float = 0.2
    modality_dropout: float = 0.0
    # The video branch's TCN dropout; None: ``dropout``, as in the paper (one rate everywhere).
    video_dropout: float | None = None
    # A linear classifier per modality projection, trained beside the fusion (not in the paper).
    unimodal_heads: bool = False

    def check(self) -> None:
        parse_modalities(self.modalities, "model config: modalities")
        _check_sizes(self)
        _check_backbone(self)
        _check_vsc(self)

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def modality_names(self) -> tuple[str, ...]:
        """Full names of the configured modalities, in the fixed order text, audio, video."""
        return names_of(self.modalities)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channel width C of each Swin stage (doubles at each patch merging)."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def vsc_enabled(self) -> bool:
        """True when the visual backbone exists and compresses stage 3: ``vsc`` is on and text
        or audio is there to guide it. Without guidance VSC would rank the tokens against their
        own mean, keep the most ordinary ones and drop the expressive ones (the mouth), so the
        video-only model does not compress (docs/balanced-training.md)."""
        return (
            self.vsc
            and "v" in self.modalities
            and ("t" in self.modalities or "a" in self.modalities)
        )

    def stage_grids(self, vsc: bool | None = None) -> tuple[tuple[int, int], ...]:
        """Token grid side at the (input, output) of each stage; VSC shrinks stage 3's output."""
        vsc = self.vsc if vsc is None else vsc
        grid = self.image_size // self.patch_size
        out = []
        for i in range(len(self.depths)):
            if i > 0:
                grid = math.ceil(grid / 2)  # patch merging pads odd grids
            end = self.vsc_grids[-1] if (vsc and i == VSC_STAGE) else grid
            out.append((grid, end))
            grid = end
        return tuple(out)


# ---- model presets: deltas from the paper's model ----------------------------------------------
# NOTE(paper): IEMOCAP dropouts; MELD used 0.4 everywhere:
# ``model_preset("paper", dropout=0.4, projection_dropout=0.4)``.
_PAPER: dict[str, Any] = {}

# Trainable on a 2-core CPU: 96 px faces, patch 3 -> token grids 32/16/8/4 (stage 3: 8x8 -> 6x6
# -> 4x4 with VSC, so stage 4 sees 2x2 = 4 tokens instead of 16), embed 32, depths 2/2/4/2,
# window 4, 8 frames, TCN 256, MiniLM text (384). Measured by ``benchmarks/train_speed.py
# --threads 1`` (T+A+V, batch 32, forward + backward + AdamW step, this 2-core machine): about
# 3.0 s a step, 16 minutes per 10,000-utterance epoch with VSC on and 21 with it off (20 and 26
# while other jobs loaded it); benchmarks/RESULTS.md.
_CPU: dict[str, Any] = {
    "text_dim": 384,
    "frames": 8,
    "image_size": 96,
    "patch_size": 3,
    "embed_dim": 32,
    "depths": (2, 2, 4, 2),
    "num_heads": (1, 2, 4, 8),
    "window_size": 4,
    "cpb_hidden": 64,
    "drop_path": 0.1,
    "vsc_grids": (6, 4),
    "guidance_hidden": 256,
    "tcn_channels": (256, 256, 256),
    "modality_dropout": 0.2,
}

# Millisecond unit tests: 48 px, 2 frames, width 8; grids 24/12/6 (VSC 4, 3)/2. Small but
# complete: two VSC blocks, a shifted block on a shrunken grid (4x4, window 2), and more than one
# token in the last stage (so every attention parameter gets a gradient).
_TINY: dict[str, Any] = {
    "num_classes": 4,
    "text_dim": 12,
    "audio_dim": 10,
    "frames": 2,
    "image_size": 48,
    "patch_size": 2,
    "embed_dim": 8,
    "depths": (1, 1, 4, 1),
    "num_heads": (1, 1, 2, 2),
    "window_size": 3,
    "cpb_hidden": 16,
    "drop_path": 0.0,
    "vsc_grids": (4, 3),
    "guidance_hidden": 16,
    "tcn_channels": (16, 16, 16),
    "projection_dim": 16,
    "classifier_hidden": (16, 8),
    "dropout": 0.0,
    "projection_dropout": 0.0,
}

MODEL_PRESETS: dict[str, dict[str, Any]] = {"paper": _PAPER, "cpu": _CPU, "tiny": _TINY}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset ("paper", "cpu", "tiny") with type-checked field overrides."""
    if name not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose from {', '.join(MODEL_PRESETS)}")
    return ModelConfig().replace(**MODEL_PRESETS[name]).replace(**overrides)


# ---- training -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig(Options):
    """Optimisation hyper-parameters (the model's live in :class:`ModelConfig`); the defaults
    are the ``cpu`` recipe.

    ``warmup`` is the fraction of all steps with a linear learning-rate warm-up, followed by a
    cosine decay to zero (``schedule="cosine"``) or a constant rate. ``patience`` stops training
    after that many epochs without a better dev weighted F1 (0: never stop early).
    ``keep_checkpoints`` keeps only the newest N epoch checkpoints (0: all). ``threads`` sets
    torch's threads per process (0: torch's default); on a busy CPU, 1 is often the fastest.
    ``context`` adds a dialogue-context head after the utterance model (see
    :mod:`deepmsi.training.context`): "online" reads past turns only, "offline" the whole
    dialogue. ``video_backbone`` starts a new run's Swin-V2 from pretrained weights (a Hugging
    Face id or a local folder in the transformers Swinv2 layout; empty: from scratch, as the
    authors did); the run's model config then records the pretrained windows. ``precision``
    "bf16" trains (and scores dev) under bf16 autocast, weights and optimiser kept in float32.

    Balanced multimodal training (off in the paper's recipe; docs/balanced-training.md):
    ``unimodal_weight`` weighs the unimodal heads' cross-entropy (the model needs
    ``unimodal_heads``), ``video_lr_scale`` multiplies the video branch's learning rate, and
    ``precise_bn`` re-estimates BatchNorm statistics with each epoch's final weights before
    scoring dev.
    """

    what: ClassVar[str] = "train config"

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
    unimodal_weight: float = 0.0
    video_lr_scale: float = 1.0
    precise_bn: bool = False
    class_weights: bool = False
    grad_clip: float = 1.0
    eval_batch_size: int = 64
    num_workers: int = 0
    threads: int = 0
    keep_checkpoints: int = 2
    device: str = "auto"
    context: str = "none"
    video_backbone: str = ""
    precision: str = "fp32"

    def check(self) -> None:
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
            "unimodal_weight": self.unimodal_weight >= 0,
            "video_lr_scale": self.video_lr_scale > 0,
            "grad_clip": self.grad_clip >= 0,
            "num_workers": self.num_workers >= 0,
            "threads": self.threads >= 0,
            "keep_checkpoints": self.keep_checkpoints >= 0,
            "device": self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
            "context": self.context in CONTEXT_MODES,
            "precision": self.precision in PRECISIONS,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"train config: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}"
            )


# NOTE(paper): the paper does not publish its optimiser settings beyond AdamW-style training of
# the fusion network on frozen features; "paper" keeps the defaults at a conservative rate.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 40, "lr": 1e-4, "patience": 8},
    "cpu": {},
    "tiny": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "patience": 0, "eval_batch_size": 16},
}


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    """A named training preset ("paper", "cpu", "tiny") with type-checked overrides."""
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown train preset {name!r}; choose from {', '.join(TRAIN_PRESETS)}")
    return TrainConfig().replace(**TRAIN_PRESETS[name]).replace(**overrides)


# ---- balanced multimodal training ---------------------------------------------------------------
# For a video backbone learning from scratch on little data (docs/balanced-training.md, measured
# on the demo): the paper's dropouts, meant for a pretrained backbone, keep the visual branch at
# the majority class, so they are off; each modality is hidden half the time so the fusion cannot
# rest on text and audio alone; BatchNorm statistics are re-estimated with each epoch's weights;
# the video branch learns at a quarter of the rate (it diverges at the heads' rate); a classifier
# on each projection gives every branch a cross-entropy of its own, so the fused model's video
# branch learns as a video-only model's does instead of waiting for the fusion to need it.
BALANCED_MODEL: dict[str, Any] = {
    "dropout": 0.0,
    "drop_path": 0.0,
    "projection_dropout": 0.0,
    "modality_dropout": 0.5,
    "unimodal_heads": True,
}
BALANCED_TRAIN: dict[str, Any] = {
    "precise_bn": True,
    "video_lr_scale": 0.25,
    "unimodal_weight": 1.0,
}


def balanced(model: ModelConfig, train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """``model`` and ``train`` with the balanced-training changes applied."""
    return model.replace(**BALANCED_MODEL), train.replace(**BALANCED_TRAIN)


# ---- checking ---------------------------------------------------------------------------------
@cache
def _hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint, for the dataclass fields only (not ``ClassVar``s)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce_fields(cls: type, data: dict[str, Any], what: str = "model config") -> dict[str, Any]:
    """Reject keys that are not fields of dataclass ``cls``; turn JSON lists into tuples for
    tuple fields."""
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(
            f"unknown {what} key(s) {', '.join(unknown)}; known: {', '.join(sorted(hints))}"
        )
    out = {}
    for key, value in data.items():
        if typing.get_origin(hints[key]) is tuple and isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(hint)
        return isinstance(value, tuple) and all(_type_ok(v, item) for v in value)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_field_types(cfg: Any, what: str = "model config") -> None:
    """Check every field of a frozen config dataclass against its type hint (ints are accepted
    for floats and converted; bools are not ints)."""
    cls: type = type(cfg)
    for name, hint in _hints(cls).items():
        value = getattr(cfg, name)
        if not _type_ok(value, hint):
            raise ConfigError(
                f"{what} {name}={value!r}: expected {getattr(hint, '__name__', hint)}, "
                f"got {type(value).__name__}"
            )
        if hint is float:
            object.__setattr__(cfg, name, float(value))


def _check_sizes(cfg: ModelConfig) -> None:
    check_at_least(
        cfg,
        1,
        "text_dim",
        "audio_dim",
        "frames",
        "image_size",
        "patch_size",
        "embed_dim",
        "window_size",
        "cpb_hidden",
        "guidance_hidden",
        "projection_dim",
    )
    check_at_least(cfg, 2, "num_classes", "tcn_kernel")
    for name in ("dropout", "projection_dropout", "modality_dropout", "drop_path", "video_dropout"):
        value = getattr(cfg, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise ConfigError(f"model config: {name} must be in [0, 1)")
    if not cfg.tcn_channels or min(cfg.tcn_channels) < 1:
        raise ConfigError("model config: tcn_channels must be non-empty and positive")
    if any(h < 1 for h in cfg.classifier_hidden):
        raise ConfigError("model config: classifier_hidden widths must be >= 1")


def _check_backbone(cfg: ModelConfig) -> None:
    def bad(msg: str) -> ConfigError:
        return ConfigError(f"model config: {msg}")

    if cfg.image_size % cfg.patch_size:
        raise bad(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
    if len(cfg.depths) != len(cfg.num_heads) or len(cfg.depths) <= VSC_STAGE:
        raise bad(f"depths and num_heads need the same length (>= {VSC_STAGE + 1} stages)")
    if any(d < 1 for d in cfg.depths) or any(h < 1 for h in cfg.num_heads):
        raise bad("depths and num_heads must be >= 1")
    if cfg.pretrained_window and (
        len(cfg.pretrained_window) != len(cfg.depths) or min(cfg.pretrained_window) < 1
    ):
        raise bad(f"pretrained_window needs one window >= 1 per stage, got {cfg.pretrained_window}")
    for dim, heads in zip(cfg.stage_dims, cfg.num_heads, strict=True):
        if dim % heads:
            raise bad(f"stage width {dim} is not divisible by {heads} heads")


def _check_vsc(cfg: ModelConfig) -> None:
    """One target grid per non-shifted block of stage 3, strictly shrinking; alpha, threshold."""
    if not 0.0 <= cfg.vsc_alpha <= 1.0 or not -1.0 <= cfg.vsc_threshold <= 1.0:
        raise ConfigError("model config: vsc_alpha must be in [0, 1] and vsc_threshold in [-1, 1]")
    n_vsc = (cfg.depths[VSC_STAGE] + 1) // 2
    grid3 = cfg.stage_grids(vsc=False)[VSC_STAGE][0]
    if len(cfg.vsc_grids) != n_vsc:
        raise ConfigError(
            f"model config: vsc_grids needs {n_vsc} entries (one per non-shifted block of "
            f"stage 3), got {len(cfg.vsc_grids)}"
        )
    prev = grid3
    for g in cfg.vsc_grids:
        if not 1 <= g < prev:
            raise ConfigError(
                f"model config: vsc_grids {cfg.vsc_grids} must shrink strictly below the "
                f"{grid3}x{grid3} grid"
            )
        prev = g
