"""Model configuration: one frozen dataclass, three presets, type-checked overrides.

``model_preset("cpu", num_classes=7)`` is the usual entry point. The resolved config is saved with
every run (``to_dict``) and read back with ``from_dict``; an unknown key or a value of the wrong
type raises :class:`deepmsi.errors.ConfigError` instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deepmsi.errors import ConfigError

MODALITY_NAMES = {"t": "text", "a": "audio", "v": "video"}
VSC_STAGE = 2  # VSC runs in the third Swin stage, as in the paper.


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build :class:`deepmsi.models.DeepMSI` (pure hyper-parameters).

    Video backbone fields describe a Swin-Transformer-V2 with ``len(depths)`` stages; with ``vsc``
    on, the non-shifted blocks of stage 3 shrink the token grid to ``vsc_grids`` in turn (paper:
    16x16 -> 14x14 -> 12x12 -> 10x10). Input widths ``text_dim``/``audio_dim`` come from the
    prepared feature cache.
    """

    num_classes: int = 6
    text_dim: int = 384
    audio_dim: int = 768
    modalities: str = "tav"
    # Visual backbone (Swin-Transformer-V2) on F face frames of S x S pixels.
    frames: int = 8
    image_size: int = 96
    patch_size: int = 3
    embed_dim: int = 32
    depths: tuple[int, ...] = (2, 2, 4, 2)
    num_heads: tuple[int, ...] = (1, 2, 4, 8)
    window_size: int = 4
    mlp_ratio: float = 4.0
    cpb_hidden: int = 512
    drop_path: float = 0.1
    # Visual sequence compression (VSC) in stage 3, guided by text + audio.
    vsc: bool = True
    vsc_grids: tuple[int, ...] = (6, 4)
    vsc_threshold: float = 0.6
    vsc_alpha: float = 0.9
    guidance_hidden: int = 512
    # Temporal convolution over the F frame vectors.
    tcn_channels: tuple[int, ...] = (256, 256, 256)
    tcn_kernel: int = 3
    # Heads.
    projection_dim: int = 256
    classifier_hidden: tuple[int, ...] = (512, 256, 128)
    dropout: float = 0.3
    projection_dropout: float = 0.2
    modality_dropout: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        _check_values(self)

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def modality_names(self) -> tuple[str, ...]:
        """Full names of the configured modalities, in the fixed order text, audio, video."""
        return tuple(MODALITY_NAMES[m] for m in "tav" if m in self.modalities)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channel width C of each Swin stage (doubles at each patch merging)."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def vsc_enabled(self) -> bool:
        """True when the visual backbone exists and compresses stage 3."""
        return self.vsc and "v" in self.modalities

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

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v, tuple) else v
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys or wrong types raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"model config must be a mapping, got {type(data).__name__}")
        return cls(**coerce_fields(cls, dict(data)))

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some fields changed (type-checked like the presets)."""
        return dataclasses.replace(self, **coerce_fields(type(self), overrides))


def _tiny() -> ModelConfig:
    """Millisecond unit tests: 48 px, 2 frames, width 8; grids 24/12/6 (VSC 4, 3)/2.

    Small but complete: two VSC blocks, a shifted block on a shrunken grid (4x4, window 2), and
    more than one token in the last stage (so every attention parameter gets a gradient).
    """
    return ModelConfig(
        num_classes=4,
        text_dim=12,
        audio_dim=10,
        frames=2,
        image_size=48,
        patch_size=2,
        embed_dim=8,
        depths=(1, 1, 4, 1),
        num_heads=(1, 1, 2, 2),
        window_size=3,
        cpb_hidden=16,
        drop_path=0.0,
        vsc_grids=(4, 3),
        guidance_hidden=16,
        tcn_channels=(16, 16, 16),
        projection_dim=16,
        classifier_hidden=(16, 8),
        dropout=0.0,
        projection_dropout=0.0,
    )


def _cpu() -> ModelConfig:
    """Trainable on a 2-core CPU: one MELD-sized epoch (10,000 utterances) in under 30 minutes.

    96 px faces, patch 3 -> token grids 32/16/8/4 (stage 3: 8x8 -> 6x6 -> 4x4 with VSC, so stage 4
    sees 2x2 = 4 tokens instead of 16), embed 32, depths 2/2/4/2, window 4, 8 frames, TCN 256.
    Measured by ``benchmarks/train_speed.py --threads 1`` (T+A+V, batch 32, forward + backward +
    AdamW step, this 2-core machine): about 3.0 s a step, 16 minutes per 10,000-utterance epoch
    with VSC on and 21 with it off (20 and 26 while other jobs loaded it); benchmarks/RESULTS.md.
    """
    return ModelConfig(
        text_dim=384,
        audio_dim=768,
        frames=8,
        image_size=96,
        patch_size=3,
        embed_dim=32,
        depths=(2, 2, 4, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        cpb_hidden=64,
        drop_path=0.1,
        vsc_grids=(6, 4),
        guidance_hidden=256,
        tcn_channels=(256, 256, 256),
        projection_dim=256,
        classifier_hidden=(512, 256, 128),
        dropout=0.3,
        projection_dropout=0.2,
        modality_dropout=0.2,
    )


def _paper() -> ModelConfig:
    """The published model: Swin-V2-T (embed 96, 2/2/6/2, window 8) on 15 frames of 256 px.

    VSC grids 16 -> 14 -> 12 -> 10 in stage 3 (stage 4: 5x5 = 25 tokens instead of 64), TCN
    1024/1024/1024, BERT-large text (1024) and wav2vec2-base audio (768), IEMOCAP dropouts
    (MELD used 0.4 everywhere: ``model_preset("paper", dropout=0.4, projection_dropout=0.4)``).
    """
    return ModelConfig(
        num_classes=6,
        text_dim=1024,
        audio_dim=768,
        frames=15,
        image_size=256,
        patch_size=4,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=8,
        cpb_hidden=512,
        drop_path=0.2,
        vsc_grids=(14, 12, 10),
        guidance_hidden=512,
        tcn_channels=(1024, 1024, 1024),
        projection_dim=256,
        classifier_hidden=(512, 256, 128),
        dropout=0.3,
        projection_dropout=0.2,
        modality_dropout=0.0,
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {"tiny": _tiny, "cpu": _cpu, "paper": _paper}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset ("tiny", "cpu", "paper") with type-checked field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]().replace(**overrides)


# ---- checking ---------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce_fields(cls: type, data: dict[str, Any], what: str = "model config") -> dict[str, Any]:
    """Reject keys that are not fields of dataclass ``cls``; turn JSON lists into tuples for
    tuple fields. Shared by every config dataclass."""
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
    for name, hint in _hints(type(cfg)).items():
        value = getattr(cfg, name)
        if not _type_ok(value, hint):
            raise ConfigError(
                f"{what} {name}={value!r}: expected {getattr(hint, '__name__', hint)}, "
                f"got {type(value).__name__}"
            )
        if hint is float:
            object.__setattr__(cfg, name, float(value))


def _check_values(cfg: ModelConfig) -> None:
    def bad(msg: str) -> ConfigError:
        return ConfigError(f"model config: {msg}")

    if (
        not cfg.modalities
        or set(cfg.modalities) - set("tav")
        or len(set(cfg.modalities)) != len(cfg.modalities)
    ):
        raise bad(f"modalities={cfg.modalities!r} must be a non-empty subset of 'tav'")
    for name in ("num_classes", "text_dim", "audio_dim", "frames", "image_size", "patch_size"):
        if getattr(cfg, name) < 1:
            raise bad(f"{name} must be >= 1")
    if cfg.num_classes < 2:
        raise bad("num_classes must be >= 2")
    for name in ("embed_dim", "window_size", "cpb_hidden", "guidance_hidden", "projection_dim"):
        if getattr(cfg, name) < 1:
            raise bad(f"{name} must be >= 1")
    for name in ("dropout", "projection_dropout", "modality_dropout", "drop_path"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise bad(f"{name} must be in [0, 1)")
    if not 0.0 <= cfg.vsc_alpha <= 1.0 or not -1.0 <= cfg.vsc_threshold <= 1.0:
        raise bad("vsc_alpha must be in [0, 1] and vsc_threshold in [-1, 1]")
    if cfg.image_size % cfg.patch_size:
        raise bad(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
    if len(cfg.depths) != len(cfg.num_heads) or len(cfg.depths) <= VSC_STAGE:
        raise bad(f"depths and num_heads need the same length (>= {VSC_STAGE + 1} stages)")
    if any(d < 1 for d in cfg.depths) or any(h < 1 for h in cfg.num_heads):
        raise bad("depths and num_heads must be >= 1")
    for dim, heads in zip(cfg.stage_dims, cfg.num_heads, strict=True):
        if dim % heads:
            raise bad(f"stage width {dim} is not divisible by {heads} heads")
    if not cfg.tcn_channels or min(cfg.tcn_channels) < 1 or cfg.tcn_kernel < 2:
        raise bad("tcn_channels must be non-empty and positive, tcn_kernel >= 2")
    if any(h < 1 for h in cfg.classifier_hidden):
        raise bad("classifier_hidden widths must be >= 1")
    # VSC: one target grid per non-shifted block of stage 3, strictly shrinking.
    n_vsc = (cfg.depths[VSC_STAGE] + 1) // 2
    grid3 = cfg.stage_grids(vsc=False)[VSC_STAGE][0]
    if len(cfg.vsc_grids) != n_vsc:
        raise bad(
            f"vsc_grids needs {n_vsc} entries (one per non-shifted block of stage 3), "
            f"got {len(cfg.vsc_grids)}"
        )
    prev = grid3
    for g in cfg.vsc_grids:
        if not 1 <= g < prev:
            raise bad(
                f"vsc_grids {cfg.vsc_grids} must shrink strictly below the {grid3}x{grid3} grid"
            )
        prev = g
