"""Model cards: what a run folder's model is, how it was chosen and where it falls short.

Every run folder gets ``MODEL_CARD.md`` for people and ``model_card.json`` (the same facts) for
scripts: the data and split sizes, the label set in output order, modalities and encoders with
their versions, the selection rule and chosen epoch, the seed, test metrics with per-class F1,
known limits, and the commands that made it. ``train`` writes it, ``evaluate`` refreshes it
(with the scores it computed), ``predict`` and ``serve`` show it.

The facts are read from the run folder itself (``config.json``, ``metrics.jsonl``,
``splits.json``, ``context.json``) and, where it is still there, the feature cache; so a card can
be rebuilt for any run folder, old ones included.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deepmsi.atomic import atomic_write_text
from deepmsi.errors import DataError
from deepmsi.runs import folder as runs

__all__ = ["ModelCard", "build_card", "invoked_as", "read_card", "refresh_card", "write_card"]

log = logging.getLogger(__name__)

CARD_MD = "MODEL_CARD.md"
CARD_JSON = "model_card.json"
FEW_EXAMPLES = 30  # a class with fewer training utterances than this is a known limit
SMALL_TRAIN = 1000  # a training set smaller than this is a known limit

# The command line being run, set by the CLI (``invoked_as``); None when called from Python.
_COMMAND: ContextVar[str | None] = ContextVar("deepmsi_command", default=None)


@contextmanager
def invoked_as(argv: Sequence[str]) -> Iterator[None]:
    """Record ``deepmsi ARGV...`` as the command behind any card written inside the block."""
    token = _COMMAND.set(shlex.join(["deepmsi", *argv]))
    try:
        yield
    finally:
        _COMMAND.reset(token)


def current_command(fallback: str) -> str:
    """The command line being run, or ``fallback`` (a Python call) outside the CLI."""
    return _COMMAND.get() or fallback


@dataclass(frozen=True)
class ModelCard:
    """The facts of a run's card (see the module docstring); scores are fractions in [0, 1]."""

    run: str
    label_set: str
    labels: list[str]
    dataset: dict[str, Any]  # name, cache, sizes {train, dev, test}, dev_from_train, counts
    model: dict[str, Any]  # modalities, text/audio/video encoders, context head
    training: dict[str, Any]  # seed, epochs run/planned, batch size, lr, seconds per epoch
    selection: dict[str, Any]  # rule, split, epoch, dev scores
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # limits given by hand (kept on refresh)
    commands: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    written: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    @property
    def test(self) -> dict[str, Any] | None:
        """The latest evaluation on the run's own test split, if any."""
        own = [e for e in self.evaluations if e["data"] == OWN and e["split"] == "test"]
        return own[-1] if own else None

    def summary(self) -> str:
        """One line: label set, modalities, data, chosen epoch, test score, first limit."""
        sizes = self.dataset.get("sizes", {})
        parts = [
            f"{self.run}: {self.label_set} ({len(self.labels)} classes)",
            "+".join(self.model.get("modalities", [])),
            f"trained on {sizes.get('train', '?')} utterances of {self.dataset.get('name', '?')}",
            f"epoch {self.selection.get('epoch')} chosen on dev "
            f"(wF1 {_pct(self.selection.get('dev', {}).get('weighted_f1'))})",
        ]
        test = self.test
        if test is not None:
            parts.append(f"test wF1 {_pct(test['weighted_f1'])} ({test['utterances']} utt)")
        else:
            parts.append("not scored on test yet")
        limits = self.notes + self.limits
        if limits:
            more = f" (+{len(limits) - 1} more in {CARD_MD})" if len(limits) > 1 else ""
            parts.append(f"limits: {limits[0]}{more}")
        return "; ".join(parts)

    def to_markdown(self) -> str:
        return _markdown(self)


OWN = "own cache"  # ``data`` of an evaluation on the run's own feature cache


# ---- building -----------------------------------------------------------------------------------
def build_card(
    run_dir: str | Path,
    *,
    previous: ModelCard | None = None,
    evaluation: dict[str, Any] | None = None,
    command: str | None = None,
    notes: Sequence[str] = (),
) -> ModelCard:
    """The card of ``run_dir`` from its files; ``previous`` contributes its evaluations, notes
    and commands, ``evaluation`` (a report dict plus ``data``) replaces the one of the same
    data and split, ``command`` is appended."""
    run_dir = Path(run_dir)
    config = runs.read_config(run_dir)
    train_cfg, model_cfg, manifest = config.train_config, config.model_config, config.cache_manifest
    records = _cache_records(config.cache_path)
    splits = _read_splits(run_dir)
    history = runs.read_metrics(run_dir)
    evaluations = list(previous.evaluations) if previous else []
    if evaluation is not None:
        key = (evaluation["data"], evaluation["split"])
        evaluations = [e for e in evaluations if (e["data"], e["split"]) != key] + [evaluation]
    commands = list(previous.commands) if previous else []
    if command and (not commands or commands[-1] != command):
        commands.append(command)
    dataset = _dataset_facts(manifest.get("dataset"), config.cache_path, records, splits)
    card = ModelCard(
        run=run_dir.name,
        label_set=config.labels.name,
        labels=list(config.labels.names),
        dataset=dataset,
        model=_model_facts(model_cfg, train_cfg, manifest, _context_facts(run_dir)),
        training=_training_facts(train_cfg, history),
        selection=_selection_facts(train_cfg, history),
        evaluations=evaluations,
        notes=list(dict.fromkeys([*(previous.notes if previous else []), *notes])),
        commands=commands,
        versions=_versions(manifest),
        written=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return replace(card, limits=known_limits(card, cache_found=records is not None))


def _cache_records(cache_path: str | None) -> list | None:
    """The cache's utterance records, or None where the cache is gone or unreadable."""
    if not cache_path:
        return None
    from deepmsi.data.cache import FeatureCache

    try:
        return FeatureCache(Path(cache_path)).records()
    except (DataError, OSError):
        return None


def _read_splits(run_dir: Path) -> dict[str, list[str]]:
    path = run_dir / "splits.json"
    if not path.is_file():
        return {}
    try:
        data = runs.read_json_object(path, "splits")
    except DataError:
        return {}
    return {k: list(v) for k, v in data.items() if isinstance(v, list)}


def _dataset_facts(
    name: str | None, cache: str | None, records: list | None, splits: dict[str, list[str]]
) -> dict[str, Any]:
    sizes: dict[str, int | None] = {k: len(v) for k, v in splits.items()}
    facts: dict[str, Any] = {"name": name or "unknown", "cache": cache, "sizes": sizes}
    if records is None:
        sizes.setdefault("test", None)
        return facts
    by_id = {r.id: r for r in records}
    sizes["test"] = sum(r.split == "test" for r in records)
    dev = [by_id[i] for i in splits.get("dev", []) if i in by_id]
    facts["dev_from_train"] = bool(dev) and all(r.split != "dev" for r in dev)
    train = [by_id[i] for i in splits.get("train", []) if i in by_id]
    facts["train_label_counts"] = dict(Counter(r.label for r in train if r.label is not None))
    facts["train_video_clips"] = sum(r.video is not None for r in train)
    return facts


def _model_facts(model_cfg, train_cfg, manifest: dict, context: dict | None) -> dict[str, Any]:
    from deepmsi.modalities import names_of

    video = None
    if "v" in model_cfg.modalities:
        video = {
            "backbone": "Swin-V2 + VSC + TCN" if model_cfg.vsc_enabled else "Swin-V2 + TCN",
            "embed_dim": model_cfg.embed_dim,
            "depths": list(model_cfg.depths),
            "initialised_from": train_cfg.video_backbone or "scratch",
            "frames": model_cfg.frames,
            "image_size": model_cfg.image_size,
            "face_detector": manifest.get("face_detector"),
        }
    return {
        "modalities": list(names_of(model_cfg.modalities)),
        "text_encoder": manifest.get("text_encoder") if "t" in model_cfg.modalities else None,
        "audio_encoder": manifest.get("audio_encoder") if "a" in model_cfg.modalities else None,
        "video": video,
        "modality_dropout": model_cfg.modality_dropout,
        "context": context,
    }


def _context_facts(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / runs.CONTEXT_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = runs.read_json_object(path, "context config")
    except DataError:
        return None
    causal = bool((data.get("context") or {}).get("causal"))
    return {
        "mode": "online" if causal else "offline",
        "epoch": data.get("epoch"),
        "dev": data.get("dev"),
    }


def _training_facts(train_cfg, history: list[dict]) -> dict[str, Any]:
    seconds = [h.get("seconds", 0.0) for h in history]
    return {
        "seed": train_cfg.seed,
        "epochs_planned": train_cfg.epochs,
        "epochs_run": len(history),
        "batch_size": train_cfg.batch_size,
        "lr": train_cfg.lr,
        "contrastive_weight": train_cfg.contrastive_weight,
        "class_weights": train_cfg.class_weights,
        "balanced": train_cfg.precise_bn or train_cfg.video_lr_scale != 1.0,
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 1) if seconds else None,
    }


def _selection_facts(train_cfg, history: list[dict]) -> dict[str, Any]:
    best = [h for h in history if h.get("best")]
    chosen = best[-1] if best else None
    patience = f", early stop after {train_cfg.patience} epochs without a better one"
    return {
        "rule": "the epoch with the best dev weighted F1"
        + (patience if train_cfg.patience else ""),
        "split": "dev",
        "epoch": None if chosen is None else chosen["epoch"],
        "dev": {}
        if chosen is None
        else {
            "accuracy": chosen.get("dev_accuracy"),
            "weighted_f1": chosen.get("dev_weighted_f1"),
            "macro_f1": chosen.get("dev_macro_f1"),
            "utterances": chosen.get("dev_utterances"),
        },
    }


def _versions(manifest: dict) -> dict[str, str]:
    import deepmsi

    out = {"deepmsi": deepmsi.__version__}
    out.update({k: str(v) for k, v in (manifest.get("libraries") or {}).items()})
    if manifest.get("deepmsi"):
        out["deepmsi (features)"] = str(manifest["deepmsi"])
    return out


def known_limits(card: ModelCard, *, cache_found: bool = True) -> list[str]:
    """Where the model falls short, from its facts alone (the card adds hand-written notes)."""
    data, model, sizes = card.dataset, card.model, card.dataset.get("sizes", {})
    out = []
    video = model.get("video")
    if video and video.get("initialised_from") == "scratch":
        clips = data.get("train_video_clips", sizes.get("train"))
        out.append(f"video trained from scratch on {clips} clips (no pretrained backbone)")
    audio = model.get("audio_encoder") or {}
    if audio.get("name") == "spectral":
        out.append("audio: built-in spectral descriptors, no pretrained speech model")
    missing = [m for m in ("text", "audio", "video") if m not in model.get("modalities", [])]
    if missing:
        out.append(f"does not use {' or '.join(missing)}")
    train = sizes.get("train") or 0
    if train and train < SMALL_TRAIN:
        out.append(f"small training set ({train} utterances)")
    counts = data.get("train_label_counts") or {}
    few = [
        f"{k} {counts.get(k, 0)}" for k in card.labels if counts and counts.get(k, 0) < FEW_EXAMPLES
    ]
    if few:
        out.append(f"few training examples of {', '.join(few)}")
    if data.get("dev_from_train"):
        out.append("no dev split in the data: the epoch was chosen on 10% held out of training")
    context = model.get("context") or {}
    if context.get("mode") == "offline":
        out.append("offline dialogue context: needs the whole dialogue before labelling")
    test = card.test
    if test is not None:
        never = [k for k, s in test["per_class"].items() if s["support"] and s["f1"] == 0]
        if never:
            out.append(f"never right on test for {', '.join(never)} (F1 0)")
    elif cache_found:
        out.append("not scored on its test split yet (deepmsi evaluate --run RUN)")
    out.append(f"knows only {len(card.labels)} classes: any other emotion is read as one of them")
    return out


# ---- Markdown -----------------------------------------------------------------------------------
def _markdown(card: ModelCard) -> str:
    """MODEL_CARD.md: the card's facts as sections a person reads top to bottom."""
    lines = [f"# Model card: {card.run}", "", card.summary(), ""]
    lines += _data_section(card) + _model_section(card) + _training_section(card)
    lines += _scores_section(card)
    lines += ["## Known limits", ""]
    lines += [f"- {x}" for x in card.notes + card.limits] or ["- none recorded"]
    lines += ["", "## Commands that made it", "", "```"]
    lines += card.commands or ["(unknown)"]
    lines += [
        "```",
        "",
        f"Written {card.written} by deepmsi {card.versions.get('deepmsi', '?')}; "
        f"the same facts are in {CARD_JSON}.",
        "",
    ]
    return "\n".join(lines)


def _data_section(card: ModelCard) -> list[str]:
    d, sizes = card.dataset, card.dataset.get("sizes", {})
    split_text = ", ".join(f"{k} {'?' if v is None else v}" for k, v in sizes.items())
    dev = " (dev held out of training)" if d.get("dev_from_train") else ""
    out = ["## Data", "", f"- dataset: {d.get('name')} (feature cache `{d.get('cache')}`)"]
    out.append(f"- utterances per split: {split_text}{dev}")
    out.append(f"- labels ({card.label_set}, in output order): {', '.join(card.labels)}")
    counts = d.get("train_label_counts")
    if counts:
        out.append(
            "- training labels: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in card.labels)
        )
    return [*out, ""]


def _encoder(e: dict | None) -> str:
    if not e:
        return "none"
    past = f", reads {e['past']} past turns (fine-tuned)" if e.get("past") else ", frozen"
    return f"{e.get('name')} (version {e.get('version')}, {e.get('dim')}-d{past})"


def _model_section(card: ModelCard) -> list[str]:
    m = card.model
    out = ["## Model", "", f"- modalities: {', '.join(m.get('modalities', []))}"]
    if "text" in m.get("modalities", []):
        out.append(f"- text encoder: {_encoder(m.get('text_encoder'))}")
    if "audio" in m.get("modalities", []):
        out.append(f"- audio encoder: {_encoder(m.get('audio_encoder'))}")
    v = m.get("video")
    if v:
        init = v["initialised_from"]
        start = "trained from scratch" if init == "scratch" else f"initialised from {init}"
        out.append(
            f"- video: {v['backbone']} (embed {v['embed_dim']}, depths "
            f"{'/'.join(map(str, v['depths']))}), {start}; {v['frames']} frames of "
            f"{v['image_size']} px face crops ({v.get('face_detector')})"
        )
    ctx = m.get("context")
    if ctx:
        dev = (ctx.get("dev") or {}).get("weighted_f1")
        out.append(
            f"- dialogue context: {ctx['mode']} head, epoch {ctx['epoch']}, dev wF1 {_pct(dev)}"
        )
    else:
        out.append("- dialogue context: none (each utterance on its own, as the paper)")
    out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in card.versions.items()))
    return [*out, ""]


def _training_section(card: ModelCard) -> list[str]:
    t, s = card.training, card.selection
    dev = s.get("dev") or {}
    return [
        "## Training and selection",
        "",
        f"- seed {t['seed']}; {t['epochs_run']} of {t['epochs_planned']} epochs run, batch "
        f"{t['batch_size']}, lr {t['lr']}, {t['seconds_per_epoch']} s per epoch"
        + ("; balanced multimodal training" if t.get("balanced") else ""),
        f"- selection: {s['rule']}: epoch {s['epoch']}",
        f"- dev ({dev.get('utterances')} utterances): accuracy {_pct(dev.get('accuracy'))}, "
        f"weighted F1 {_pct(dev.get('weighted_f1'))}, macro F1 {_pct(dev.get('macro_f1'))}",
        "",
    ]


def _scores_section(card: ModelCard) -> list[str]:
    test = card.test
    out = ["## Test metrics", ""]
    if test is None:
        out += ["Not scored yet: `deepmsi evaluate --run RUN` scores the test split once.", ""]
    else:
        out += _report_lines(test)
    others = [e for e in card.evaluations if e is not test]
    if others:
        out += [
            "## Other evaluations",
            "",
            "| data | split | epoch | utterances | accuracy | weighted F1 | macro F1 |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        out += [
            f"| {e['data']} | {e['split']} | {e['epoch']} | {e['utterances']} | "
            f"{_pct(e['accuracy'])} | {_pct(e['weighted_f1'])} | {_pct(e['macro_f1'])} |"
            for e in others
        ]
        out.append("")
    return out


def _report_lines(e: dict[str, Any]) -> list[str]:
    out = [
        f"Epoch {e['epoch']} on {e['utterances']} test utterances ({e['when']}): accuracy "
        f"{_pct(e['accuracy'])}, weighted F1 {_pct(e['weighted_f1'])}, macro F1 "
        f"{_pct(e['macro_f1'])}" + ("" if e["context"] == "none" else f", context {e['context']}"),
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    out += [
        f"| {k} | {_pct(s['precision'])} | {_pct(s['recall'])} | {_pct(s['f1'])} | {s['support']} |"
        for k, s in e["per_class"].items()
    ]
    return [*out, ""]


# ---- files --------------------------------------------------------------------------------------
def read_card(run_dir: str | Path) -> ModelCard | None:
    """The card saved in ``run_dir``, or None when it has none (or an unreadable one)."""
    path = Path(run_dir) / CARD_JSON
    if not path.is_file():
        return None
    try:
        return ModelCard.from_dict(runs.read_json_object(path, "model card"))
    except (DataError, TypeError) as err:
        log.warning("%s: ignoring an unreadable model card (%s)", path, err)
        return None


def write_card(run_dir: str | Path, card: ModelCard) -> Path:
    """``model_card.json`` then ``MODEL_CARD.md``, each atomically; returns the Markdown path."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / CARD_JSON, json.dumps(card.to_dict(), indent=2) + "\n")
    atomic_write_text(run_dir / CARD_MD, card.to_markdown())
    return run_dir / CARD_MD


def refresh_card(
    run_dir: str | Path,
    *,
    evaluation: dict[str, Any] | None = None,
    command: str | None = None,
    notes: Sequence[str] = (),
) -> ModelCard | None:
    """Rebuild and rewrite the card of ``run_dir`` (keeping earlier evaluations, notes and
    commands). A folder that cannot be written (read-only) is logged, never an error: the card
    is a description, not part of the model. Returns the card, or None when not written."""
    try:
        card = build_card(
            run_dir,
            previous=read_card(run_dir),
            evaluation=evaluation,
            command=command,
            notes=notes,
        )
        write_card(run_dir, card)
    except OSError as err:
        log.warning("%s: model card not written (%s)", run_dir, err.strerror or err)
        return None
    return card


def evaluation_entry(report: dict[str, Any], *, data: str, epoch: int | None) -> dict[str, Any]:
    """A card's record of one evaluation: overall scores and per-class F1 of ``report``
    (``Report.to_dict()``), on ``data`` (``OWN`` or the other cache or dataset)."""
    return {
        "data": data,
        "split": report["split"],
        "epoch": epoch,
        "accuracy": report["accuracy"],
        "weighted_f1": report["weighted_f1"],
        "macro_f1": report["macro_f1"],
        "utterances": report["utterances"],
        "per_class": {
            name: {k: s[k] for k in ("precision", "recall", "f1", "support")}
            for name, s in report["per_class"].items()
        },
        "context": report.get("context", "none"),
        "left_out": dict(report.get("left_out") or {}),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.1f}"
