"""Reading pretrained Swin-V2 weights: a local folder or a Hugging Face id -> config + tensors.

The format is transformers' Swinv2 layout, ``config.json`` + ``model.safetensors``. Only
safetensors are read (never a pickle such as ``pytorch_model.bin``) and no remote code runs: the
config is read as data and the architecture is deepmsi's own
(:mod:`deepmsi.models.swin_v2_hf` maps the tensors). Every failure is one line naming SOURCE.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepmsi.errors import DataError

if TYPE_CHECKING:
    import torch

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class PretrainedWeights:
    """A checkpoint as read: its transformers config and its tensors (transformers' names)."""

    source: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]


def read_pretrained(source: str) -> PretrainedWeights:
    """The config and tensors of SOURCE: a folder holding config.json + model.safetensors, or a
    Hugging Face id (from the local cache, else downloaded)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = _locate(source)
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(config_path, f"unreadable {CONFIG} of {source}: {err}") from None
    if not isinstance(config, dict):
        raise DataError(config_path, f"{CONFIG} of {source} is not a JSON object")
    try:
        state = load_file(weights_path)
    except (OSError, SafetensorError) as err:
        raise DataError(weights_path, f"unreadable {WEIGHTS} of {source}: {err}") from None
    return PretrainedWeights(source, config, state)


def _locate(source: str) -> tuple[Path, Path]:
    """(config.json, model.safetensors) of a local folder or a Hugging Face id."""
    folder = Path(source).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise DataError(source, f"not a folder (need {CONFIG} + {WEIGHTS} in one)")
        paths = folder / CONFIG, folder / WEIGHTS
        for path in paths:
            if not path.is_file():
                raise DataError(source, f"no {path.name} here{_pickle_hint(folder)}")
        return paths
    if not _REPO_ID.match(source):
        raise DataError(source, "no such folder, and not a Hugging Face model id")
    return _hub_file(source, CONFIG), _hub_file(source, WEIGHTS)


def _pickle_hint(folder: Path) -> str:
    if (folder / "pytorch_model.bin").is_file():
        return " (pytorch_model.bin is a pickle, which deepmsi does not load: save as safetensors)"
    return ""


def _hub_file(repo_id: str, name: str) -> Path:
    """One file of a Hub model: from the local cache when there, else downloaded."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, name, local_files_only=True))
    except HFValidationError:
        raise DataError(repo_id, "no such folder, and not a valid Hugging Face model id") from None
    except LocalEntryNotFoundError:
        if constants.is_offline_mode():
            raise DataError(
                repo_id, f"{name} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
            ) from None
    try:
        return Path(hf_hub_download(repo_id, name))
    except RepositoryNotFoundError:
        problem = "no such folder, nor a model on the Hugging Face Hub (or it is private/gated)"
    except LocalEntryNotFoundError:
        problem = (
            f"cannot download {name}: the Hugging Face Hub is unreachable from here and the "
            f"file is not cached; download it where there is a connection (hf download "
            f"{repo_id} {CONFIG} {WEIGHTS} --local-dir DIR) and pass DIR"
        )
    except EntryNotFoundError:
        problem = f"the model has no {name}"
        if name == WEIGHTS:
            problem += " (deepmsi reads safetensors only, never pickled weights)"
    except (HfHubHTTPError, OSError) as err:
        problem = f"cannot download {name}: {str(err).splitlines()[0]}"
    raise DataError(repo_id, problem)
