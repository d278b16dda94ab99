"""transformers' Swinv2 checkpoints -> deepmsi's :class:`~deepmsi.models.swin_v2.SwinV2`.

Pure functions on a transformers ``config.json`` (a dict) and a state dict: which ModelConfig
fields the checkpoint fixes, how the model config must change to load it, and the one-to-one
renaming of its tensors. Reading the files is :mod:`deepmsi.pretrained`'s job.

Fields that shape a tensor (embed dim, depths, heads, patch, MLP ratio, position-bias MLP width)
must match or loading is refused. Image size and window size only set the token grid and the
windows: Swin-V2 has no absolute position embedding, and its continuous position bias is made
to transfer across windows (offsets normalised by the pretrained window), so a mismatch there
is logged and the config's values kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deepmsi.config import ModelConfig
from deepmsi.errors import ConfigError

log = logging.getLogger(__name__)

HF_CPB_HIDDEN = 512  # transformers' Swinv2 hard-codes the position-bias MLP's width
REFUSED = ("embed_dim", "depths", "num_heads", "patch_size", "mlp_ratio", "cpb_hidden")
ADAPTED = ("image_size", "window_size")
# Tensors a checkpoint may hold that the backbone has no use for.
_IGNORED = re.compile(
    r"^(classifier\.|decoder\.|embeddings\.mask_token$|.*relative_coords_table$"
    r"|.*relative_position_index$)"
)
_RENAMES = [  # transformers name (after the "swinv2." prefix) -> deepmsi name
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"embeddings\.norm\.", "patch_embed.norm."),
    (r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"attention\.self\.continuous_position_bias_mlp\.", "attn.cpb_mlp."),
    (r"attention\.self\.logit_scale$", "attn.logit_scale"),
    (r"attention\.output\.dense\.", "attn.proj."),
    (r"layernorm_before\.", "norm1."),
    (r"intermediate\.dense\.", "mlp.fc1."),
    (r"output\.dense\.", "mlp.fc2."),
    (r"layernorm_after\.", "norm2."),
    (r"^layernorm\.", "norm."),
]
_QKV = re.compile(
    r"^(stages\.\d+\.blocks\.\d+\.)attention\.self\.(query|key|value)\.(weight|bias)$"
)
_DOWNSAMPLE = re.compile(r"^encoder\.layers\.(\d+)\.downsample\.(.*)$")


@dataclass(frozen=True)
class Mismatch:
    """One architecture field where the checkpoint and the model config differ."""

    field: str
    checkpoint: Any
    config: Any

    @property
    def refused(self) -> bool:
        return self.field in REFUSED

    def __str__(self) -> str:
        line = f"{self.field} {_show(self.checkpoint)} in the checkpoint, {_show(self.config)} here"
        if self.field == "cpb_hidden":
            line += " (transformers' Swinv2 always uses 512; the cpu and tiny presets use a "
            line += "smaller position-bias MLP: use the paper preset or set cpb_hidden=512)"
        return line


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def _square(value: Any, name: str) -> int:
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise ConfigError(f"Swinv2 config: only square {name} is supported, got {value}")
        value = value[0]
    return int(value)


def architecture(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """The ModelConfig fields a transformers Swinv2 ``config.json`` fixes.

    Refuses what deepmsi's SwinV2 cannot express (another model type, remote code, absolute
    position embeddings, non-RGB input, another activation or LayerNorm epsilon).
    """
    if "auto_map" in hf_config:
        raise ConfigError("Swinv2 config asks for remote code (auto_map); deepmsi runs none")
    kind = hf_config.get("model_type")
    if kind != "swinv2":
        raise ConfigError(f"not a Swinv2 checkpoint (model_type {kind!r})")
    unsupported = {
        "use_absolute_embeddings": (hf_config.get("use_absolute_embeddings", False), False),
        "num_channels": (hf_config.get("num_channels", 3), 3),
        "hidden_act": (hf_config.get("hidden_act", "gelu"), "gelu"),
        "layer_norm_eps": (hf_config.get("layer_norm_eps", 1e-5), 1e-5),
    }
    bad = [f"{k}={got!r} (need {need!r})" for k, (got, need) in unsupported.items() if got != need]
    if bad:
        raise ConfigError(f"Swinv2 config not supported: {', '.join(bad)}")
    return {
        "image_size": _square(hf_config.get("image_size", 224), "image_size"),
        "patch_size": _square(hf_config.get("patch_size", 4), "patch_size"),
        "embed_dim": int(hf_config.get("embed_dim", 96)),
        "depths": tuple(int(d) for d in hf_config.get("depths", (2, 2, 6, 2))),
        "num_heads": tuple(int(h) for h in hf_config.get("num_heads", (3, 6, 12, 24))),
        "window_size": int(hf_config.get("window_size", 7)),
        "mlp_ratio": float(hf_config.get("mlp_ratio", 4.0)),
        "cpb_hidden": HF_CPB_HIDDEN,
    }


def hf_config_fields(cfg: ModelConfig) -> dict[str, Any]:
    """The transformers ``Swinv2Config`` fields of ``cfg``'s backbone (the inverse of
    :func:`architecture`; no drop path): to build the reference model of the same shape."""
    return {
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "embed_dim": cfg.embed_dim,
        "depths": list(cfg.depths),
        "num_heads": list(cfg.num_heads),
        "window_size": cfg.window_size,
        "mlp_ratio": cfg.mlp_ratio,
        "drop_path_rate": 0.0,
    }


def pretrained_windows(hf_config: Mapping[str, Any]) -> tuple[int, ...]:
    """The window each stage's position-bias MLP was trained at.

    transformers normalises offsets by ``pretrained_window_sizes[i]`` when set (a checkpoint
    fine-tuned from another window), else by the stage's own window: the configured one, or the
    whole grid where the grid is smaller.
    """
    arch = architecture(hf_config)
    grid = arch["image_size"] // arch["patch_size"]
    given = list(hf_config.get("pretrained_window_sizes") or [0] * len(arch["depths"]))
    if len(given) != len(arch["depths"]):
        raise ConfigError(f"pretrained_window_sizes {given} needs one entry per stage")
    return tuple(
        int(given[i]) or min(grid // 2**i, arch["window_size"]) for i in range(len(arch["depths"]))
    )


def mismatches(cfg: ModelConfig, hf_config: Mapping[str, Any]) -> list[Mismatch]:
    """Every architecture field where ``cfg`` and the checkpoint differ."""
    return [
        Mismatch(name, value, getattr(cfg, name))
        for name, value in architecture(hf_config).items()
        if getattr(cfg, name) != value
    ]


def adapt_config(cfg: ModelConfig, hf_config: Mapping[str, Any], source: str) -> ModelConfig:
    """``cfg`` with the checkpoint's pretrained windows, so a model built from it can load the
    weights; a ConfigError names every tensor-shaping field that differs.

    A different image or window size is logged (one line per field) and the config's kept.
    """
    try:
        found = mismatches(cfg, hf_config)
        windows = pretrained_windows(hf_config)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    refused = [str(m) for m in found if m.refused]
    if refused:
        raise ConfigError(f"{source} does not fit the model config: {'; '.join(refused)}")
    for m in found:
        log.warning("%s: %s (kept; the position bias is rescaled to the new windows)", source, m)
    return cfg.replace(pretrained_window=windows)


def convert_state_dict(hf_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers Swinv2 tensors (``Swinv2Model`` or a ``Swinv2For...`` head on top) -> the
    state dict of deepmsi's SwinV2 (one-to-one, bar the fused qkv).

    query/key/value become one ``qkv`` weight plus ``q_bias``/``v_bias`` (zero where the
    checkpoint has no qkv bias; Swin-V2 never has a key bias); ``encoder.layers.i.downsample``
    is the patch merging that opens deepmsi's stage ``i + 1``.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for hf_name, tensor in hf_state.items():
        name = hf_name.removeprefix("swinv2.")
        if _IGNORED.match(name):
            continue
        if m := _DOWNSAMPLE.match(name):
            out[f"stages.{int(m[1]) + 1}.downsample.{m[2]}"] = tensor
            continue
        for pattern, repl in _RENAMES:
            name = re.sub(pattern, repl, name)
        if m := _QKV.match(name):
            qkv.setdefault(m[1], {})[f"{m[2]}.{m[3]}"] = tensor
        elif name.startswith(("patch_embed.", "stages.", "norm.")):
            out[name] = tensor
        else:
            unknown.append(hf_name)
    if unknown:
        raise ConfigError(f"unexpected tensors in the Swinv2 checkpoint: {', '.join(unknown)}")
    for prefix, parts in qkv.items():
        out.update(_fuse_qkv(prefix, parts))
    return out


def _fuse_qkv(prefix: str, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """query/key/value Linear layers -> ``attn.qkv.weight`` [3C, C], ``q_bias``, ``v_bias``."""
    try:
        weight = torch.cat([parts["query.weight"], parts["key.weight"], parts["value.weight"]])
    except KeyError as err:
        raise ConfigError(f"Swinv2 checkpoint: {prefix} lacks {err.args[0]}") from None
    zeros = torch.zeros(weight.shape[1], dtype=weight.dtype)
    return {
        f"{prefix}attn.qkv.weight": weight,
        f"{prefix}attn.q_bias": parts.get("query.bias", zeros),
        f"{prefix}attn.v_bias": parts.get("value.bias", zeros),
    }


def load_hf_weights(backbone: nn.Module, hf_state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy a transformers Swinv2 state dict into a deepmsi SwinV2 built from
    :func:`adapt_config`'s config; every backbone tensor must be covered, with its shape."""
    state = convert_state_dict(hf_state)
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        *([f"missing {', '.join(missing)}"] if missing else []),
        *([f"unexpected {', '.join(extra)}"] if extra else []),
        *([f"shape {', '.join(shapes)}"] if shapes else []),
    ]
    if problems:
        raise ConfigError(f"{source}: weights do not fit the backbone: {'; '.join(problems)}")
    backbone.load_state_dict(state)
