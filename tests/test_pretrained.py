"""Reading pretrained weights: a local folder in transformers' layout, or a Hugging Face id; every
failure is one line naming the source (no network here: the Hub path is tested offline)."""

from __future__ import annotations

import pytest
import torch
from helpers_model import hf_swinv2

from deepmsi.config import model_preset
from deepmsi.errors import DataError
from deepmsi.pretrained import read_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("swinv2")
    hf_swinv2(model_preset("tiny", cpb_hidden=512)).save_pretrained(folder)
    return folder


def test_a_local_folder_gives_its_config_and_tensors(checkpoint) -> None:
    weights = read_pretrained(str(checkpoint))
    assert weights.config["model_type"] == "swinv2" and weights.source == str(checkpoint)
    assert "swinv2.embeddings.patch_embeddings.projection.weight" in weights.state
    assert all(isinstance(t, torch.Tensor) for t in weights.state.values())


def test_pickled_weights_are_never_loaded(checkpoint, tmp_path) -> None:
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(DataError, match="no model.safetensors here.*pickle"):
        read_pretrained(str(tmp_path))


def test_unreadable_files_are_one_line_errors(checkpoint, tmp_path) -> None:
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="unreadable model.safetensors") as err:
        read_pretrained(str(tmp_path))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="no such folder, and not a Hugging Face model id"):
        read_pretrained(str(tmp_path / "missing" / "deeper" / "still"))


def test_an_uncached_hub_id_offline_is_one_line_naming_it(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DataError) as err:
        read_pretrained("microsoft/swinv2-tiny-patch4-window8-256")
    msg = str(err.value)
    assert msg.startswith("microsoft/swinv2-tiny-patch4-window8-256: config.json is not in")
    assert "\n" not in msg
