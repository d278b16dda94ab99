"""ModelConfig presets, type-checked overrides and (de)serialisation."""

from __future__ import annotations

import json

import pytest

from deepmsi.config import MODEL_PRESETS as PRESETS
from deepmsi.config import ModelConfig, TrainConfig, model_preset, train_preset
from deepmsi.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name: str) -> None:
    cfg = model_preset(name)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.depths, tuple)


def test_paper_preset_matches_the_published_model() -> None:
    cfg = model_preset("paper")
    assert (cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size) == (
        96,
        (2, 2, 6, 2),
        (3, 6, 12, 24),
        8,
    )
    assert (cfg.image_size, cfg.patch_size, cfg.frames) == (256, 4, 15)
    assert cfg.tcn_channels == (1024, 1024, 1024)
    assert (cfg.text_dim, cfg.audio_dim, cfg.projection_dim) == (1024, 768, 256)
    assert cfg.classifier_hidden == (512, 256, 128)
    assert (cfg.vsc_threshold, cfg.vsc_alpha, cfg.modality_dropout) == (0.6, 0.9, 0.0)
    # 64x64 patches -> 32 -> 16 (VSC: 14, 12, 10) -> 5
    assert cfg.stage_grids() == ((64, 64), (32, 32), (16, 10), (5, 5))
    assert cfg.stage_grids(vsc=False) == ((64, 64), (32, 32), (16, 16), (8, 8))


def test_cpu_preset_keeps_the_structure_and_drops_modalities() -> None:
    cfg = model_preset("cpu")
    assert cfg.vsc and len(cfg.depths) == 4 and cfg.modalities == "tav"
    assert 0.1 <= cfg.modality_dropout <= 0.3
    g3_in, g3_out = cfg.stage_grids()[2]
    assert g3_out < g3_in


def test_overrides_are_applied_and_floats_accept_ints() -> None:
    cfg = model_preset(
        "tiny", num_classes=7, dropout=0, modalities="tv", depths=[1, 1, 2, 1], vsc_grids=[3]
    )
    assert cfg.num_classes == 7 and cfg.modalities == "tv"
    assert cfg.dropout == 0.0 and isinstance(cfg.dropout, float)
    assert cfg.modality_names == ("text", "video")
    with pytest.raises(ConfigError, match="vsc_grids"):
        model_preset("tiny", depths=(1, 1, 2, 1), vsc_grids=(3, 2))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"hidden_size": 3}, "unknown model config key"),
        ({"embed_dim": "32"}, "embed_dim"),
        ({"embed_dim": 32.0}, "embed_dim"),
        ({"num_classes": True}, "num_classes"),
        ({"vsc": 1}, "vsc"),
        ({"depths": (1, "1", 4, 1)}, "depths"),
        ({"modalities": ""}, "modalities"),
        ({"modalities": "tx"}, "modalities"),
        ({"modalities": "tt"}, "modalities"),
        ({"vsc_grids": (3,)}, "vsc_grids"),
        ({"vsc_grids": (3, 3)}, "vsc_grids"),
        ({"vsc_grids": (7, 2)}, "vsc_grids"),
        ({"image_size": 33}, "patch_size"),
        ({"num_heads": (1, 1, 3, 2)}, "divisible"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_heads": (1, 1, 2)}, "same length"),
        ({"pretrained_window": (3, 3, 3)}, "pretrained_window"),
        ({"pretrained_window": (3, 3, 0, 3)}, "pretrained_window"),
    ],
)
def test_bad_overrides_raise_config_error(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        model_preset("tiny", **overrides)


def test_pretrained_windows_round_trip_and_older_runs_read_as_from_scratch() -> None:
    cfg = model_preset("paper", pretrained_window=[8, 8, 8, 8])  # a JSON list becomes a tuple
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.pretrained_window == (8, 8, 8, 8)
    older = {k: v for k, v in cfg.to_dict().items() if k != "pretrained_window"}
    assert ModelConfig.from_dict(older).pretrained_window == ()
    train = TrainConfig(video_backbone="microsoft/swinv2-tiny-patch4-window8-256")
    assert TrainConfig.from_dict(json.loads(json.dumps(train.to_dict()))) == train


def test_from_dict_rejects_unknown_keys_and_unknown_presets() -> None:
    data = model_preset("tiny").to_dict() | {"colour": "red"}
    with pytest.raises(ConfigError, match="colour"):
        ModelConfig.from_dict(data)
    with pytest.raises(ConfigError, match="preset"):
        model_preset("huge")
    with pytest.raises(ConfigError):
        ModelConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    cfg = model_preset("tiny")
    with pytest.raises(AttributeError):
        cfg.num_classes = 3  # type: ignore[misc]


def test_balanced_training_is_an_explicit_switch_with_options_on_top() -> None:
    import argparse

    from deepmsi.cli.train import add_config_options, build_configs
    from deepmsi.config import BALANCED_MODEL, BALANCED_TRAIN

    p = argparse.ArgumentParser()
    add_config_options(p)
    plain_model, plain_train = build_configs(p.parse_args([]))
    assert (plain_model, plain_train) == (model_preset("cpu"), train_preset("cpu"))
    model, train = build_configs(p.parse_args(["--balanced", "--modality-dropout", "0.3"]))
    assert model.modality_dropout == 0.3  # an option given on top wins
    for key, value in {**BALANCED_MODEL, "modality_dropout": 0.3}.items():
        assert getattr(model, key) == value
    for key, value in BALANCED_TRAIN.items():
        assert getattr(train, key) == value
    assert ModelConfig.from_dict(model.to_dict()) == model
