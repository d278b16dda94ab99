"""Fine-tune the text encoder on a labelled dialogue dataset, with the previous turns as context.

NOTE(paper): DeepMSI-MER keeps its text encoder frozen; this is an optional extension (``deepmsi
prepare --finetune-text``). It stays valid online: an utterance only ever sees the turns before it.

The recipe (measured in benchmarks/text_erc.py: on IEMOCAP, MiniLM text alone reaches about 57.5
weighted F1 against 47 frozen): each utterance is a sentence pair, target "speaker: text" and
context its ``past`` previous turns newest first, joined by " | " and truncated longest-first to
``max_len`` tokens. The embeddings and the bottom ``frozen_layers`` layers stay frozen and their
outputs are computed once, so each step only runs the top layers: on a 2-core CPU that is what
makes fine-tuning with long context inputs affordable. The target segment's tokens are
mean-pooled and a linear head classifies them; AdamW (no decay on biases and LayerNorms), linear
warm-up over 6% of the steps then linear decay, gradients clipped at 1. The epoch is chosen on
dev weighted F1 (a dataset without a dev split lends 10% of its train dialogues).

The output folder is a Hugging Face model folder (model + tokenizer, so ``TextEncoder`` and
``AutoModel`` load it), plus ``head.safetensors`` (the classifier) and ``deepmsi_text.json``
(how to read inputs, the options, the dev history). It is written to a temporary folder and
renamed, so a folder that exists is finished; asking again with the same options reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepmsi.data.records import Dataset
from deepmsi.errors import ConfigError, DataError
from deepmsi.features.text import (
    DEFAULT_TEXT_ENCODER,
    FINETUNED_CONFIG,
    load_pretrained,
    resolve_text_model,
    with_past_turns,
)
from deepmsi.metrics import compute_metrics
from deepmsi.selection import BestOnDev

log = logging.getLogger(__name__)

HEAD = "head.safetensors"
DEV_SHARE = 0.1  # of the train dialogues, held out when the dataset has no dev split
EVAL_BATCH = 64


@dataclass(frozen=True)
class FinetuneOptions:
    """What the fine-tuned encoder is (all but ``threads`` and ``progress``, which only say how
    the work is done). ``base`` is a Hugging Face id or folder of a BERT-like model, or "minilm";
    ``threads`` 0 leaves torch's setting alone."""

    base: str = DEFAULT_TEXT_ENCODER
    past: int = 8
    max_len: int = 128
    frozen_layers: int = 2
    epochs: int = 4
    lr: float = 5e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup: float = 0.06
    seed: int = 0
    threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name, low in (
            ("past", 0),
            ("max_len", 8),
            ("frozen_layers", 0),
            ("epochs", 1),
            ("batch_size", 1),
            ("threads", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"finetune {name} must be an integer >= {low}, got {value!r}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"finetune lr must be in (0, 1), got {self.lr!r}")
        if not 0 <= self.warmup < 1 or self.weight_decay < 0:
            raise ConfigError("finetune warmup must be in [0, 1) and weight_decay >= 0")
        if not isinstance(self.base, str) or not self.base:
            raise ConfigError(f"finetune base must name an encoder, got {self.base!r}")

    def replace(self, **changes: Any) -> FinetuneOptions:
        return dataclasses.replace(self, **changes)

    def recipe(self) -> dict[str, Any]:
        """The options that define the weights (compared when a finished folder is reused)."""
        d = dataclasses.asdict(self)
        for key in ("threads", "progress"):
            d.pop(key)
        return d


@dataclass(frozen=True)
class EpochScore:
    """One epoch: mean train loss, dev weighted F1 and accuracy (fractions), seconds."""

    epoch: int
    train_loss: float
    dev_weighted_f1: float
    dev_accuracy: float
    seconds: float


@dataclass(frozen=True)
class FinetuneResult:
    """A fine-tuned encoder folder and how it was chosen.

    ``trained`` is False when a finished folder with the same options was reused. With
    ``predict_all``, ``ids`` [N] (the utterances with text, dataset order), ``embeddings``
    [N, D] (target-pooled vectors) and ``logits`` [N, K] come from the chosen epoch.
    """

    path: Path
    best_epoch: int
    dev_weighted_f1: float
    history: list[EpochScore]
    trained: bool
    seconds: float = 0.0
    lower_seconds: float = 0.0
    ids: list[str] | None = None
    embeddings: np.ndarray | None = None
    logits: np.ndarray | None = None


def finetune_text(
    dataset: Dataset,
    out_dir: str | Path,
    options: FinetuneOptions | None = None,
    *,
    states_cache: str | Path | None = None,
    predict_all: bool = False,
) -> FinetuneResult:
    """Fine-tune ``options.base`` on ``dataset``'s train split and save it to ``out_dir``.

    ``states_cache``: a file keeping the frozen layers' outputs (fp16, about 90 KB per utterance
    at 128 tokens) so a re-run with the same inputs skips them. ``predict_all``: also return
    every text utterance's vector and logits (cheap: the frozen part is already computed).
    """
    options = options or FinetuneOptions()
    out_dir = Path(out_dir)
    finished = _finished(out_dir, dataset, options)
    if finished is not None:
        if predict_all:
            raise ConfigError(f"{out_dir} is already fine-tuned; predict_all needs a new folder")
        return finished
    examples = _examples(dataset, options.past)
    previous_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _finetune(
            dataset, examples, out_dir, options, states_cache=states_cache, predict_all=predict_all
        )
    finally:
        torch.set_num_threads(previous_threads)


# ---- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Examples:
    """Every utterance with text, in dataset order: its pair, class index (-1: none), role."""

    ids: list[str]
    pairs: list[tuple[str, str]]
    labels: np.ndarray  # [N] int64
    train: np.ndarray  # row indices
    dev: np.ndarray


def _examples(dataset: Dataset, past: int) -> _Examples:
    """Pairs for the utterances with text; train and dev rows (dev carved from train if absent)."""
    texts = [u for u in dataset.utterances if u.text and u.text.strip()]
    if not texts:
        raise DataError(
            dataset.name, "no utterance has text: fine-tuning the text encoder needs transcripts"
        )
    items = with_past_turns(dataset.utterances, past)
    names = list(dataset.labels.names)
    labels = np.array([names.index(u.label) if u.label in names else -1 for u in texts])
    splits = np.array([u.split for u in texts])
    labelled = labels >= 0
    train = labelled & (splits == "train")
    if not train.any():
        raise DataError(
            dataset.name,
            "no labelled utterance with text in the train split: "
            "nothing to fine-tune the text encoder on",
        )
    dev = labelled & (splits == "dev")
    if not dev.any():
        held = _held_out([u.dialogue_id for u, t in zip(texts, train, strict=True) if t])
        if not held:
            raise DataError(
                dataset.name,
                "no dev split and fewer than 2 train dialogues to hold "
                "one out: cannot choose the fine-tuning epoch",
            )
        dev = train & np.array([u.dialogue_id in held for u in texts])
        train &= ~dev
        log.info(
            "no dev split: %d of the train dialogues (%d utterances) choose the epoch",
            len(held),
            int(dev.sum()),
        )
    return _Examples(
        [u.id for u in texts],
        [items[u.id].pair(past) for u in texts],
        labels,
        np.flatnonzero(train),
        np.flatnonzero(dev),
    )


def _held_out(dialogues: list[str]) -> set[str]:
    """A deterministic ~10% of the dialogues (ranked by a hash of their id), at least one; empty
    when fewer than two."""
    distinct = sorted(set(dialogues), key=lambda d: hashlib.sha1(d.encode()).hexdigest())
    if len(distinct) < 2:
        return set()
    return set(distinct[: max(1, round(DEV_SHARE * len(distinct)))])


# ---- the model -------------------------------------------------------------------------------
class TextClassifier(nn.Module):
    """Encoder top layers + mean pooling over the target segment + linear head.

    ``lower`` runs the frozen part (embeddings + bottom ``frozen_layers`` layers) once per input;
    forward(hidden [B, L, D] lower-layer states, attention_mask [B, L], target [B, L] bool)
    -> (pooled [B, D], logits [B, K]).
    """

    def __init__(self, encoder: Any, num_classes: int, frozen_layers: int) -> None:
        # encoder: a transformers BERT-like model (``embeddings``, ``encoder.layer``, ``config``)
        super().__init__()
        self.encoder = encoder  # loaded frozen; only its top layers learn
        self.frozen_layers = frozen_layers
        for layer in encoder.encoder.layer[frozen_layers:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def _mask(self, hidden: Tensor, attention_mask: Tensor):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    @torch.inference_mode()
    def lower(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        """Frozen part: token ids [B, L] -> hidden [B, L, D]."""
        was = self.training
        self.eval()
        h = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = self._mask(h, attention_mask)
        for layer in self.encoder.encoder.layer[: self.frozen_layers]:
            h = layer(h, mask)
        self.train(was)
        return h

    def forward(
        self, hidden: Tensor, attention_mask: Tensor, target: Tensor
    ) -> tuple[Tensor, Tensor]:
        mask = self._mask(hidden, attention_mask)
        for layer in self.encoder.encoder.layer[self.frozen_layers :]:
            hidden = layer(hidden, mask)  # [B, L, D]
        # The target utterance only; the context reaches it through attention.
        m = target.unsqueeze(-1).float()  # [B, L, 1]
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # [B, D]
        return pooled, self.head(self.drop(pooled))


def _load_base(options: FinetuneOptions, num_classes: int):
    """Tokenizer and classifier around the base encoder; a model that is not BERT-like (token
    types, ``embeddings`` + ``encoder.layer``) or too shallow is a ``ConfigError``."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_text_model(options.base)
    tokenizer, encoder = load_pretrained("text", source, AutoTokenizer, AutoModel)
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not hasattr(encoder, "embeddings") or layers is None:
        raise ConfigError(
            f"cannot fine-tune {options.base!r}: not a BERT-like encoder "
            "(embeddings + encoder.layer)"
        )
    if getattr(encoder.config, "type_vocab_size", 0) < 2:
        raise ConfigError(
            f"cannot fine-tune {options.base!r}: it has no token types to tell the "
            "utterance from its context"
        )
    if options.frozen_layers > len(layers):
        raise ConfigError(
            f"frozen_layers {options.frozen_layers} > the {len(layers)} layers of {options.base!r}"
        )
    return tokenizer, TextClassifier(encoder, num_classes, options.frozen_layers)


def _tokenize(tokenizer, pairs: list[tuple[str, str]], max_len: int) -> dict[str, list]:
    enc = tokenizer(
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        truncation="longest_first",  # trims the longer side (usually the context) first
        max_length=max_len,
        return_token_type_ids=True,
    )
    out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    out["lengths"] = np.array([len(x) for x in enc["input_ids"]])
    return out


def _lower_states(model, enc: dict, progress: bool, batch_size: int = EVAL_BATCH) -> list:
    """Per example (hidden [L_i, D] fp16, target mask [L_i] bool) from the frozen layers."""
    from deepmsi.progress import progress as progress_bar

    states: list = [None] * len(enc["lengths"])
    order = np.argsort(enc["lengths"], kind="stable")
    starts = range(0, len(order), batch_size)
    for i in progress_bar(starts, desc="frozen layers", unit="batch", enabled=progress):
        rows = order[i : i + batch_size]
        n = int(enc["lengths"][rows].max())
        feed = {}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            arr = np.zeros((len(rows), n), np.int64)
            for j, r in enumerate(rows):
                arr[j, : len(enc[key][r])] = enc[key][r]
            feed[key] = torch.from_numpy(arr)
        h = model.lower(**feed)  # [B, n, D]
        for j, r in enumerate(rows):
            length = int(enc["lengths"][r])
            target = torch.as_tensor(enc["token_type_ids"][r]) == 0  # [L_i]
            states[r] = (h[j, :length].half().clone(), target)
    return states


def _cached_states(model, enc: dict, path: Path | None, progress: bool) -> list:
    """``_lower_states``, kept in ``path`` when given so a re-run skips the frozen layers."""
    if path is not None and path.is_file():
        states = torch.load(path, weights_only=True)  # tensors in lists and tuples only
        if len(states) == len(enc["lengths"]) and all(
            len(s[0]) == n for s, n in zip(states, enc["lengths"], strict=True)
        ):
            log.info("frozen-layer states from %s", path)
            return states
        log.warning("%s holds states of other inputs; recomputing them", path)
    states = _lower_states(model, enc, progress)
    if path is not None:
        from deepmsi.atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            torch.save(states, f)
    return states


def _batches(lengths: np.ndarray, batch_size: int, shuffle: bool, rng: np.random.Generator):
    """Length-bucketed batches: shuffle, sort inside chunks of 50 batches, shuffle the batches."""
    idx = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    chunk = batch_size * 50
    out = []
    for i in range(0, len(idx), chunk):
        part = idx[i : i + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    if shuffle:
        rng.shuffle(out)
    return out


def _collate(states: list, rows: np.ndarray):
    """Pad cached states -> hidden [B, L, D], attention_mask [B, L], target [B, L] bool."""
    n = max(len(states[r][0]) for r in rows)
    hidden = torch.zeros(len(rows), n, states[rows[0]][0].shape[1])
    att = torch.zeros(len(rows), n, dtype=torch.long)
    target = torch.zeros(len(rows), n, dtype=torch.bool)
    for i, r in enumerate(rows):
        h, a = states[r]
        hidden[i, : len(h)] = h.float()
        att[i, : len(h)] = 1
        target[i, : len(h)] = a
    return hidden, att, target


def _predict(model, states: list, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` -> pooled [n, D] and logits [n, K], in eval mode."""
    model.eval()
    pooled_all = np.zeros((len(idx), model.head.in_features), np.float32)
    logits_all = np.zeros((len(idx), model.head.out_features), np.float32)
    lengths = np.array([len(states[i][0]) for i in idx])
    with torch.inference_mode():
        for b in _batches(lengths, EVAL_BATCH, False, np.random.default_rng(0)):
            pooled, logits = model(*_collate(states, idx[b]))
            pooled_all[b] = pooled.numpy()
            logits_all[b] = logits.numpy()
    return pooled_all, logits_all


# ---- training --------------------------------------------------------------------------------
def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model, options: FinetuneOptions) -> torch.optim.Optimizer:
    """AdamW; biases and LayerNorm weights are not decayed."""
    no_decay = ("bias", "LayerNorm.weight")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for n, p in named if not n.endswith(no_decay)],
            "weight_decay": options.weight_decay,
        },
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=options.lr)


def _finetune(dataset, ex: _Examples, out_dir, options, *, states_cache, predict_all):
    from transformers import get_linear_schedule_with_warmup

    t_start = time.perf_counter()
    names = list(dataset.labels.names)
    _seed_all(options.seed)
    tokenizer, model = _load_base(options, len(names))
    enc = _tokenize(tokenizer, ex.pairs, options.max_len)
    log.info(
        "fine-tuning %s on %d utterances (%d train, %d dev), mean input %.1f tokens",
        options.base,
        len(ex.pairs),
        len(ex.train),
        len(ex.dev),
        float(np.mean(enc["lengths"])),
    )
    t0 = time.perf_counter()
    cache_path = Path(states_cache) if states_cache else None
    states = _cached_states(model, enc, cache_path, options.progress)
    lower_seconds = time.perf_counter() - t0
    opt = _optimizer(model, options)
    rng = np.random.default_rng(options.seed)
    steps = options.epochs * int(np.ceil(len(ex.train) / options.batch_size))
    sched = get_linear_schedule_with_warmup(opt, int(options.warmup * steps), steps)
    selection = BestOnDev(keep_weights=True)
    history: list[EpochScore] = []
    for epoch in range(1, options.epochs + 1):
        t0 = time.perf_counter()
        batches = _batches(enc["lengths"][ex.train], options.batch_size, True, rng)
        loss = _fit_epoch(
            model, opt, sched, states=states, ex=ex, batches=batches, options=options, epoch=epoch
        )
        seconds = time.perf_counter() - t0
        _, dev_logits = _predict(model, states, ex.dev)
        m = compute_metrics(ex.labels[ex.dev], dev_logits.argmax(1), names)
        history.append(EpochScore(epoch, loss, m.weighted_f1, m.accuracy, round(seconds, 1)))
        log.info(
            "fine-tune epoch %d: %.0f s, train loss %.4f, dev weighted F1 %.4f, accuracy %.4f",
            *(epoch, seconds, loss, m.weighted_f1, m.accuracy),
        )
        selection.update(epoch, m.weighted_f1, model=model)
    selection.restore(model)
    best_epoch, best_f1 = selection.best_epoch, selection.best_score
    spec = {
        "past": options.past,
        "pooling": "target",
        "max_len": options.max_len,
        "base": options.base,
        "labels": names,
        "dataset": dataset.name,
        "best_epoch": best_epoch,
        "dev_weighted_f1": best_f1,
        "epochs": [dataclasses.asdict(h) for h in history],
        "options": options.recipe(),
    }
    _save(out_dir, model, tokenizer, spec)
    log.info(
        "fine-tuned text encoder: %s (epoch %d, dev weighted F1 %.4f)", out_dir, best_epoch, best_f1
    )
    ids = embeddings = logits = None
    if predict_all:
        ids = ex.ids
        embeddings, logits = _predict(model, states, np.arange(len(ex.pairs)))
    seconds = time.perf_counter() - t_start
    return FinetuneResult(
        out_dir, best_epoch, best_f1, history, True, seconds, lower_seconds, ids, embeddings, logits
    )


def _fit_epoch(model, opt, sched, *, states: list, ex: _Examples, batches, options, epoch) -> float:
    """One pass over the training batches; the mean loss per batch."""
    from deepmsi.progress import progress

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    total = 0.0
    bar = progress(
        batches,
        desc=f"fine-tune epoch {epoch}/{options.epochs}",
        unit="batch",
        enabled=options.progress,
    )
    for i, b in enumerate(bar):
        rows = ex.train[b]
        _, logits = model(*_collate(states, rows))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(ex.labels[rows]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        total += loss.item()
        bar.set_postfix(loss=f"{total / (i + 1):.4f}", refresh=False)
    bar.close()
    return total / max(1, len(batches))


# ---- the folder ------------------------------------------------------------------------------
def _save(out_dir: Path, model, tokenizer, spec: dict[str, Any]) -> None:
    """Model, tokenizer, head and description into a temporary sibling, then one rename."""
    from safetensors.torch import save_file

    from deepmsi.data.cache import write_json

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    try:
        model.encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        head = {k: v.detach().contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, str(tmp / HEAD))
        write_json(tmp / FINETUNED_CONFIG, spec)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finished(out_dir: Path, dataset: Dataset, options: FinetuneOptions) -> FinetuneResult | None:
    """The result of an earlier run into ``out_dir`` with the same options, None when there is
    none; a folder made otherwise is an error, never silently reused or replaced."""
    if not out_dir.exists():
        return None
    path = out_dir / FINETUNED_CONFIG
    if not path.is_file():
        raise DataError(
            out_dir,
            f"exists and is not a fine-tuned text encoder (no "
            f"{FINETUNED_CONFIG}); choose another folder or delete it",
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        history = [EpochScore(**h) for h in spec["epochs"]]
        old = {**spec["options"], "dataset": spec["dataset"], "labels": spec["labels"]}
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"malformed fine-tuned encoder description: {err}") from None
    asked = {**options.recipe(), "dataset": dataset.name, "labels": list(dataset.labels.names)}
    diff = [f"{k} {old.get(k)!r}, asked {v!r}" for k, v in asked.items() if old.get(k) != v]
    if diff:
        raise ConfigError(
            f"{out_dir} was fine-tuned differently ({'; '.join(diff[:3])}); "
            "delete it or choose another folder"
        )
    log.info(
        "%s: fine-tuned text encoder already there (epoch %d), reusing it",
        out_dir,
        spec["best_epoch"],
    )
    return FinetuneResult(
        out_dir, int(spec["best_epoch"]), float(spec["dev_weighted_f1"]), history, trained=False
    )
