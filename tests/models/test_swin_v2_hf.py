"""Pretrained Swin-V2: deepmsi's backbone on transformers' weights computes what transformers
computes, and VSC's shrunken windows feed the position-bias MLP the coordinates it learned."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from helpers_model import hf_swinv2

from deepmsi.config import ModelConfig, model_preset
from deepmsi.errors import ConfigError
from deepmsi.models import SwinV2
from deepmsi.models.swin_v2 import WindowAttention
from deepmsi.models.swin_v2_hf import adapt_config, convert_state_dict, pretrained_windows

pytestmark = pytest.mark.usefixtures("one_thread")


def _arch(name: str, **overrides) -> ModelConfig:
    # transformers' Swinv2 fixes the position-bias MLP at 512 wide
    return model_preset(name, cpb_hidden=512, drop_path=0.0, **overrides)


def _max_diff_to_transformers(cfg: ModelConfig, tmp_path, **hf_overrides) -> float:
    hf = hf_swinv2(cfg, **hf_overrides)
    hf.save_pretrained(tmp_path)  # config.json + model.safetensors, as on the Hub
    ours = SwinV2.from_pretrained(str(tmp_path), cfg).eval()
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        want = hf.swinv2(pixel_values=x).pooler_output
        got = ours(x)
    assert want.abs().max() > 0.5  # a real signal, not an all-zero output
    return (got - want).abs().max().item()


@pytest.mark.parametrize(
    "hf_overrides",
    [{}, {"qkv_bias": False, "pretrained_window_sizes": [5, 5, 4, 4]}],
    ids=["plain", "no-qkv-bias-pretrained-windows"],
)
def test_tiny_backbone_matches_transformers(tmp_path, hf_overrides) -> None:
    cfg = _arch("tiny", vsc=False)
    assert _max_diff_to_transformers(cfg, tmp_path, **hf_overrides) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cpu", "paper"])
def test_preset_architectures_match_transformers(tmp_path, name) -> None:
    assert _max_diff_to_transformers(_arch(name, vsc=False), tmp_path) < 1e-5


def test_every_tensor_maps_one_to_one() -> None:
    cfg = _arch("tiny")
    hf = hf_swinv2(cfg)
    converted = convert_state_dict(hf.state_dict())
    own = SwinV2(cfg).state_dict()
    assert set(converted) == set(own)
    assert all(converted[k].shape == v.shape for k, v in own.items())
    # the patch merging that closes transformers' stage i opens deepmsi's stage i + 1
    torch.testing.assert_close(
        converted["stages.1.downsample.reduction.weight"],
        hf.state_dict()["swinv2.encoder.layers.0.downsample.reduction.weight"],
    )
    with pytest.raises(ConfigError, match="unexpected tensors.*extra.weight"):
        convert_state_dict({**hf.state_dict(), "swinv2.extra.weight": torch.zeros(1)})


def test_a_tensor_shaping_mismatch_names_each_field_and_both_values() -> None:
    hub = {"model_type": "swinv2", "image_size": 256, "patch_size": 4, "embed_dim": 96}
    hub |= {"depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 8}
    with pytest.raises(ConfigError) as err:
        adapt_config(model_preset("cpu"), hub, "microsoft/swinv2-tiny-patch4-window8-256")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("microsoft/swinv2-tiny-patch4-window8-256")
    for line in (
        "embed_dim 96 in the checkpoint, 32 here",
        "depths [2, 2, 6, 2] in the checkpoint, [2, 2, 4, 2] here",
        "num_heads [3, 6, 12, 24] in the checkpoint, [1, 2, 4, 8] here",
        "patch_size 4 in the checkpoint, 3 here",
        "cpb_hidden 512 in the checkpoint, 64 here (transformers' Swinv2 always uses 512",
    ):
        assert line in msg
    # the paper preset is exactly this checkpoint's architecture
    assert adapt_config(ModelConfig(), hub, "hub").pretrained_window == (8, 8, 8, 8)


def test_image_and_window_mismatches_are_logged_and_the_config_kept(caplog) -> None:
    hub = {"model_type": "swinv2", "image_size": 192, "patch_size": 4, "embed_dim": 96}
    hub |= {"window_size": 12, "pretrained_window_sizes": [12, 12, 12, 6]}
    with caplog.at_level(logging.WARNING):
        cfg = adapt_config(ModelConfig(), hub, "src")
    assert (cfg.image_size, cfg.window_size, cfg.pretrained_window) == (256, 8, (12, 12, 12, 6))
    lines = [r.getMessage() for r in caplog.records]
    assert any("image_size 192 in the checkpoint, 256 here" in line for line in lines)
    assert any("window_size 12 in the checkpoint, 8 here" in line for line in lines)
    # without pretrained_window_sizes each stage trained at its own window (whole grid if less)
    assert pretrained_windows({**hub, "pretrained_window_sizes": [0] * 4}) == (12, 12, 12, 6)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"model_type": "swin"}, "model_type 'swin'"),
        ({"model_type": "swinv2", "auto_map": {}}, "remote code"),
        ({"model_type": "swinv2", "use_absolute_embeddings": True}, "use_absolute_embeddings"),
    ],
)
def test_configs_deepmsi_cannot_express_are_refused(bad, match) -> None:
    with pytest.raises(ConfigError, match=match):
        adapt_config(ModelConfig(), bad, "src")


def _bias_by_offset(attn: WindowAttention) -> torch.Tensor:
    """The MLP's bias for every relative offset: [2w-1, 2w-1, heads]."""
    side = 2 * attn.window - 1
    with torch.no_grad():
        return attn.cpb_mlp(attn.coords_table).view(side, side, -1)


@pytest.mark.parametrize("pretrained, small", [(8, 7), (8, 6), (8, 5), (4, 3)])
def test_shrunken_windows_see_the_pretrained_coordinates(pretrained, small) -> None:
    """Paper preset (window 8 -> 7, 6, 5 under VSC) and cpu preset (window 4 -> 3)."""
    torch.manual_seed(0)
    trained = WindowAttention(8, 2, pretrained, cpb_hidden=32)
    shrunk = WindowAttention(8, 2, small, cpb_hidden=32, pretrained_window=pretrained)
    scratch = WindowAttention(8, 2, small, cpb_hidden=32)  # today's rule: its own window
    shrunk.cpb_mlp.load_state_dict(trained.cpb_mlp.state_dict())
    scratch.cpb_mlp.load_state_dict(trained.cpb_mlp.state_dict())
    cut = pretrained - small
    same_offsets = _bias_by_offset(trained)[cut:-cut, cut:-cut]  # offsets |d| < small
    torch.testing.assert_close(_bias_by_offset(shrunk), same_offsets, rtol=0, atol=1e-6)
    assert not torch.allclose(_bias_by_offset(scratch), same_offsets, atol=1e-4)


def test_a_loaded_vsc_backbone_gives_the_pretrained_bias_on_its_shrunken_windows(tmp_path) -> None:
    cfg = _arch("tiny")  # stage 3: 6x6 grid, window 3; VSC to 4x4 there gives window 2
    hf_swinv2(cfg).save_pretrained(tmp_path)
    plain = SwinV2.from_pretrained(str(tmp_path), cfg, vsc=False)
    compressed = SwinV2.from_pretrained(str(tmp_path), cfg, vsc=True)
    assert compressed.config.pretrained_window == (3, 3, 3, 3)
    checked = 0
    for big, small in zip(plain.stages[2].blocks, compressed.stages[2].blocks, strict=True):
        cut = big.window - small.window
        if cut:
            want = _bias_by_offset(big.attn)[cut:-cut, cut:-cut]
            torch.testing.assert_close(_bias_by_offset(small.attn), want, rtol=0, atol=1e-6)
            checked += 1
    assert checked == 2


def test_from_scratch_coordinates_are_unchanged() -> None:
    """No pretrained window: the table is today's, bit for bit (runs trained before agree)."""
    model = SwinV2(model_preset("paper"))
    for block in (b for stage in model.stages for b in stage.blocks):
        w = block.window
        rel = torch.arange(-(w - 1), w, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(rel, rel, indexing="ij"), dim=-1)
        table = table / (w - 1) * 8.0
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
        assert torch.equal(block.attn.coords_table, table.view(-1, 2))
