"""``--video-backbone``: a new run starts its Swin-V2 from a checkpoint and records the source and
the pretrained windows; the run folder alone rebuilds the model (no source needed to predict,
evaluate, export or resume)."""

from __future__ import annotations

import shutil

import pytest
import torch
from helpers_model import hf_swinv2
from helpers_pipeline import make_cache

import deepmsi.runs.folder as ckpt
from deepmsi.cli import main
from deepmsi.config import model_preset, train_preset
from deepmsi.models.swin_v2_hf import convert_state_dict
from deepmsi.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"), n=40, seed=0)


class _Killed(Exception):
    pass


def test_a_new_run_starts_from_the_checkpoint_and_then_needs_only_its_folder(
    cache, tmp_path, monkeypatch
):
    model_cfg = model_preset("tiny", cpb_hidden=512)
    hf = hf_swinv2(model_cfg)
    source = tmp_path / "swinv2"
    hf.save_pretrained(source)
    # a learning rate so small that the trained backbone is still the checkpoint's
    train_cfg = train_preset("tiny", epochs=2, lr=1e-9, video_backbone=str(source))
    save = ckpt.save_checkpoint

    def save_then_die(run_dir, epoch, *args, **kwargs):
        save(run_dir, epoch, *args, **kwargs)
        if epoch == 1:
            raise _Killed

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        train(cache, tmp_path / "run", model_cfg, train_cfg, progress=False)
    monkeypatch.undo()
    saved = ckpt.read_config(tmp_path / "run")
    assert saved.train_config.video_backbone == str(source)
    assert saved.model_config.pretrained_window == (3, 3, 3, 3)

    # the run folder alone resumes and rebuilds the model (predict, evaluate, export)
    shutil.rmtree(source)
    train(cache, tmp_path / "run", model_cfg, train_cfg, resume=True, progress=False)
    assert ckpt.completed_epochs(tmp_path / "run") == [1, 2]
    run = ckpt.load_run(tmp_path / "run")
    assert run.model_config.pretrained_window == (3, 3, 3, 3)
    backbone = run.model.video.backbone.state_dict()
    for name, tensor in convert_state_dict(hf.state_dict()).items():
        torch.testing.assert_close(backbone[name], tensor, rtol=0, atol=1e-6)


def test_an_unreachable_source_is_one_line_before_any_run_folder(
    cache, tmp_path, monkeypatch, capsys
):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "run"
    args = ["train", "--cache", str(cache), "--out", str(out), "--preset", "tiny"]
    assert main([*args, "--video-backbone", "someone/absent-swinv2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "someone/absent-swinv2" in err and "HF_HUB_OFFLINE" in err
    assert not out.exists()
