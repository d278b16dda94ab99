"""Run the frozen encoders once over a dataset and cache what the model trains on.

Per utterance: a text feature (frozen BERT-like encoder), an audio feature (spectral descriptors
or a frozen wav2vec2-style model) and F face crops (uint8). Decoding and face cropping run in
worker processes; text (and any neural audio encoder) run batched in the main process.

    from deepmsi.features.preparation import PrepareOptions, prepare
    prepare("meld:data/MELD", "cache/meld", PrepareOptions(frames=8, image_size=96, workers=2))

Resumable: a re-run skips every utterance already cached, and a kill leaves no half-written
entry (see ``deepmsi.data.cache``). The manifest records encoders, versions and options; a cache
prepared with other ones is refused rather than silently mixed.

With ``finetune_text`` set, the text encoder is first fine-tuned on the dataset with its previous
turns as context (``deepmsi.features.finetune``) into ``<cache>/text-encoder`` (reused when already
finished there), then encodes every utterance with its past turns.

With ``asr`` set, utterances without a transcript first get a speech recogniser's
(``deepmsi.features.asr``); the manifest's ``transcripts`` counts human and machine ones, so the
run trained on the cache records which it learnt from. A cache without that entry holds human
transcripts only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepmsi.atomic import remove_stale_temporaries
from deepmsi.data.cache import (
    FORMAT_VERSION,
    ITEMS,
    MANIFEST,
    PROBLEMS,
    UTTERANCES,
    FeatureCache,
    Features,
    item_key,
    record_to_dict,
    write_item,
    write_json,
    write_jsonl,
)
from deepmsi.data.common import check_on_error
from deepmsi.data.records import Dataset, Utterance
from deepmsi.errors import ConfigError, DataError, Problem
from deepmsi.features.encoders import build_encoders
from deepmsi.modalities import parse_modalities

if TYPE_CHECKING:
    from deepmsi.features.finetune import FinetuneOptions
    from deepmsi.features.text import DialogueText

log = logging.getLogger(__name__)

CHUNK = 32  # utterances per text-encoder batch and per progress step
MIN_PARALLEL = 16  # fewer items than this are decoded in-process (a pool costs seconds to start)
FACE_DETECTOR = "opencv-haar-frontal+profile-tracked-v2"  # bump when face crops change
FINETUNED_TEXT = "text-encoder"  # the cache's sub-folder for a fine-tuned text encoder


@dataclass(frozen=True)
class PrepareOptions:
    """How features are made. The first five fields (and ``finetune_text``) define the features
    and go in the manifest; the rest only say how the work is done.

    ``modalities`` picks what to prepare (any of t, a, v); ``workers`` 0 means one per core.
    ``finetune_text``: fine-tune ``text_encoder`` (its ``base`` is ``text_encoder``) on the
    dataset first and encode with the result. ``asr``: a speech recogniser's SOURCE
    (``pocketsphinx``, a Whisper id or folder) that transcribes utterances given without text.
    """

    text_encoder: str = "minilm"
    audio_encoder: str = "spectral"
    frames: int = 8
    image_size: int = 96
    sample_rate: int = 16000
    modalities: str = "tav"
    workers: int = 0
    on_error: str = "raise"
    progress: bool = True
    finetune_text: FinetuneOptions | None = None
    asr: str | None = None

    def __post_init__(self) -> None:
        check_on_error(self.on_error)
        parse_modalities(self.modalities)
        for name in ("frames", "image_size", "sample_rate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.finetune_text is not None and self.finetune_text.base != self.text_encoder:
            from deepmsi.features.text import DEFAULT_TEXT_ENCODER

            if self.finetune_text.base != DEFAULT_TEXT_ENCODER:
                raise ConfigError(
                    f"finetune_text.base {self.finetune_text.base!r} differs from "
                    f"text_encoder {self.text_encoder!r}; the base is text_encoder"
                )
            object.__setattr__(
                self, "finetune_text", self.finetune_text.replace(base=self.text_encoder)
            )

    @property
    def num_workers(self) -> int:
        return self.workers or min(8, os.cpu_count() or 1)

    def replace(self, **changes: Any) -> PrepareOptions:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], **overrides: Any) -> PrepareOptions:
        """The options that reproduce a cache's features (for new data scored by its run)."""
        text = (manifest.get("text_encoder") or {}).get("name")
        audio = (manifest.get("audio_encoder") or {}).get("name")
        default = cls()
        return cls(
            text_encoder=text or default.text_encoder,
            audio_encoder=audio or default.audio_encoder,
            frames=manifest.get("frames") or default.frames,
            image_size=manifest.get("image_size") or default.image_size,
            sample_rate=manifest.get("sample_rate") or default.sample_rate,
            modalities="".join(
                m
                for m, present in zip("tav", (text, audio, manifest.get("frames")), strict=True)
                if present
            )
            or "tav",
        ).replace(**overrides)


@dataclass(frozen=True)
class PrepareResult:
    """What a ``prepare`` call did; ``seconds`` and ``per_second`` cover new items only."""

    cache: FeatureCache
    prepared: int
    cached: int
    problems: list[Problem]
    faces_found: int
    frames_total: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.prepared / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cache": str(self.cache.path),
            "utterances": len(self.cache.records()),
            "prepared": self.prepared,
            "cached": self.cached,
            "problems": [p.to_dict() for p in self.problems],
            "faces_found": self.faces_found,
            "frames_total": self.frames_total,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 3),
        }


# ---- manifest --------------------------------------------------------------------------------
def _encoders(dataset: Dataset, options: PrepareOptions, text_source: str | None = None):
    """The text and audio encoders the dataset needs (None where no utterance has that input);
    ``text_source`` replaces ``options.text_encoder`` (a fine-tuned folder)."""
    has = {m: any(m in u.modalities for u in dataset.utterances) for m in ("text", "audio")}
    text = (
        (text_source or options.text_encoder) if "t" in options.modalities and has["text"] else None
    )
    audio = options.audio_encoder if "a" in options.modalities and has["audio"] else None
    encoders = build_encoders(text, audio, sample_rate=options.sample_rate)
    return encoders.text, encoders.audio


def build_manifest(
    dataset: Dataset,
    options: PrepareOptions,
    text,
    audio,
    *,
    transcripts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the features mean: compared on every re-run so caches are never mixed.
    ``transcripts`` (human and machine counts, the recogniser) is recorded when one was used."""
    import deepmsi

    video = "v" in options.modalities and any(u.video is not None for u in dataset.utterances)
    extra = {"transcripts": transcripts} if transcripts is not None else {}
    return extra | {
        "format": FORMAT_VERSION,
        "dataset": dataset.name,
        "labels": dataset.labels.to_dict(),
        "text_encoder": _describe(text),
        "audio_encoder": _describe(audio),
        "frames": options.frames if video else None,
        "image_size": options.image_size if video else None,
        "face_detector": FACE_DETECTOR if video else None,
        "sample_rate": options.sample_rate,
        "deepmsi": deepmsi.__version__,
        "libraries": _library_versions(),
    }


def _describe(encoder) -> dict[str, Any] | None:
    if encoder is None:
        return None
    out = {"name": encoder.name, "version": encoder.version, "dim": int(encoder.dim)}
    if getattr(encoder, "past", 0):  # a dialogue encoder: its features depend on past turns
        out["past"] = int(encoder.past)
    return out


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "av", "opencv-python-headless", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


_IGNORED_KEYS = ("deepmsi", "libraries")  # recorded for the reader, not part of the features


def _check_same(out: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    changed = [k for k in new if k not in _IGNORED_KEYS and old.get(k) != new[k]]
    if changed:
        detail = "; ".join(f"{k}: cached {old.get(k)!r}, asked {new[k]!r}" for k in changed[:3])
        raise DataError(
            out, f"holds features made differently ({detail}); use another --out or delete it"
        )


# ---- decoding (runs in worker processes) -----------------------------------------------------
@dataclass(frozen=True)
class _Job:
    utt: Utterance
    frames: int
    image_size: int
    sample_rate: int
    audio: bool
    video: bool
    encoder: Any  # an audio encoder cheap enough to run in the worker, else None


@dataclass(frozen=True)
class _Decoded:
    audio: np.ndarray | None  # a feature [Da] when the worker encoded it, else the wave [T]
    frames: np.ndarray | None
    faces: int
    error: tuple[str, str] | None = None  # (file, problem)


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def _decode(job: _Job) -> _Decoded:
    """Decode one utterance's media; any failure becomes an error naming the file."""
    from deepmsi.data.media import load_clip

    utt = job.utt
    if not (job.audio and utt.audio is not None) and not (job.video and utt.video is not None):
        return _Decoded(None, None, 0)
    trimmed = dataclasses.replace(
        utt,
        audio=utt.audio if job.audio else None,
        video=utt.video if job.video else None,
    )
    try:
        clip = load_clip(
            trimmed, num_frames=job.frames, image_size=job.image_size, sample_rate=job.sample_rate
        )
        audio = clip.audio
        if audio is not None and job.encoder is not None:
            audio = job.encoder.encode([audio])[0]
        return _Decoded(audio, clip.frames, clip.faces_found)
    except DataError as err:
        return _Decoded(None, None, 0, (err.path, err.problem))
    except Exception as err:  # a codec or detector failure must not kill a long run
        file = str(utt.video or utt.audio)
        return _Decoded(None, None, 0, (file, f"{type(err).__name__}: {err}"))


def _decoded(jobs: list[_Job], workers: int) -> Generator[_Decoded]:
    """Results in job order, from a pool of ``workers`` processes or in-process."""
    if workers <= 1 or len(jobs) < MIN_PARALLEL:
        _worker_init()
        yield from map(_decode, jobs)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_decode, jobs, chunksize=2)


# ---- the job ---------------------------------------------------------------------------------
def prepare(
    dataset: Dataset | str,
    out: str | Path,
    options: PrepareOptions | None = None,
) -> PrepareResult:
    """Prepare ``dataset`` (a ``Dataset`` or a ``KIND:PATH`` spec) into the cache folder ``out``.

    With ``options.on_error="raise"`` the first bad item raises a one-line ``DataError`` naming
    its file, after every item before it has been saved; with ``"skip"`` bad items are listed in
    ``problems.jsonl`` and left out.
    """
    options = options or PrepareOptions()
    if isinstance(dataset, str):
        from deepmsi.data import load_dataset

        dataset = load_dataset(dataset, on_error=options.on_error)
    out = Path(out)
    for folder in (out, out / ITEMS):  # what a SIGKILLed run was writing
        remove_stale_temporaries(folder)
    _check_folder(out, options)
    transcripts = None
    if options.asr is not None and "t" in options.modalities:
        dataset, transcripts = _transcribed(dataset, out, options)
    text_source = None
    if options.finetune_text is not None and "t" in options.modalities:
        from deepmsi.features.finetune import finetune_text

        tuned = finetune_text(dataset, out / FINETUNED_TEXT, options.finetune_text)
        text_source = str(tuned.path.resolve())
    text_enc, audio_enc = _encoders(dataset, options, text_source)
    manifest = build_manifest(dataset, options, text_enc, audio_enc, transcripts=transcripts)
    _start_cache(out, manifest)
    problems = list(dataset.problems)
    items = out / ITEMS
    todo = [u for u in dataset.utterances if not (items / f"{item_key(u.id)}.npz").is_file()]
    cached = len(dataset.utterances) - len(todo)
    if cached:
        log.info("%s: %d utterances already cached, %d to prepare", out, cached, len(todo))
    failed: set[str] = set()
    dialogue = None
    if text_enc is not None and text_enc.past:
        from deepmsi.features.text import with_past_turns

        dialogue = with_past_turns(dataset.utterances, text_enc.past)
    t0 = time.perf_counter()
    try:
        _run(todo, out, options, (text_enc, audio_enc), (problems, failed), dialogue=dialogue)
    except BaseException:
        try:  # index what was saved, so nothing done is lost; the first error is the one to show
            _write_index(out, dataset, failed, problems)
        except DataError as err:
            log.warning("%s", err)
        raise
    seconds = time.perf_counter() - t0
    done = _write_index(out, dataset, failed, problems)
    cache = FeatureCache(out)
    faces = total = 0
    for u in done:
        if u.video is not None:
            with np.load(cache.item_path(u.id)) as z:
                if "frames" in z.files:
                    faces += int(z["faces"])
                    total += options.frames
    result = PrepareResult(cache, len(todo) - len(failed), cached, problems, faces, total, seconds)
    log.info(
        "%s: %d prepared (%.2f/s), %d cached, %d problems; faces found in %d of %d frames",
        out,
        result.prepared,
        result.per_second,
        cached,
        len(problems),
        faces,
        total,
    )
    return result


def _transcribed(
    dataset: Dataset, out: Path, options: PrepareOptions
) -> tuple[Dataset, dict[str, Any]]:
    """The dataset with machine transcripts where it had none (reusing those an earlier run
    wrote to ``out``), and the manifest's ``transcripts`` entry."""
    from deepmsi.features.asr import load_recognizer, transcribe_missing

    recognizer = load_recognizer(str(options.asr))
    human = sum(1 for u in dataset.utterances if u.text and u.text.strip())
    known = {}
    if (out / UTTERANCES).is_file():
        for line in (out / UTTERANCES).read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                known[str(row["id"])] = str(row["text"] or "")
            except (ValueError, KeyError, TypeError):
                continue
    utterances, machine = transcribe_missing(
        dataset.utterances, recognizer, known=known, progress=options.progress
    )
    log.info("%s: %d transcripts written by %s", out, machine, recognizer.name)
    entry = {
        "human": human,
        "machine": machine,
        "asr": recognizer.name,
        "asr_version": recognizer.version,
    }
    return dataclasses.replace(dataset, utterances=utterances), entry


def _start_cache(out: Path, manifest: dict[str, Any]) -> None:
    """Check ``manifest`` against the cache's, else write it first: a folder with items always
    says what they mean."""
    if (out / MANIFEST).is_file():
        try:
            old = json.loads((out / MANIFEST).read_text())
        except ValueError as err:
            raise DataError(out / MANIFEST, f"malformed manifest: {err}") from None
        if not isinstance(old, dict):
            raise DataError(out / MANIFEST, "malformed manifest: not a JSON object")
        _check_same(out, old, manifest)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MANIFEST, manifest)
    (out / ITEMS).mkdir(exist_ok=True)


def _write_index(out: Path, dataset: Dataset, failed: set[str], problems: list[Problem]):
    """``utterances.jsonl`` (the utterances whose item is saved) and ``problems.jsonl``; returns
    the utterances indexed."""
    items = out / ITEMS
    done = [
        u
        for u in dataset.utterances
        if u.id not in failed and (items / f"{item_key(u.id)}.npz").is_file()
    ]
    write_jsonl(out / UTTERANCES, [record_to_dict(u) for u in done])
    write_jsonl(out / PROBLEMS, [p.to_dict() for p in problems])
    return done


def _check_folder(out: Path, options: PrepareOptions) -> None:
    """``out`` must be a feature cache, empty or new (or hold only its fine-tuned encoder)."""
    if (out / MANIFEST).is_file() or not out.exists():
        return
    ours = (FINETUNED_TEXT, f".{FINETUNED_TEXT}.tmp") if options.finetune_text else ()
    if any(not p.name.startswith(ours) for p in out.iterdir()):
        raise DataError(out, "exists and is not a feature cache; choose an empty or new folder")


def _run(todo, out, options, encoders: tuple, outcome: tuple, *, dialogue=None) -> None:
    """``encoders`` = (text, audio); ``outcome`` = (problems, failed ids), filled in."""
    text_enc, audio_enc = encoders
    problems, failed = outcome
    from deepmsi.progress import progress

    jobs = [
        _Job(
            u,
            options.frames,
            options.image_size,
            options.sample_rate,
            audio=audio_enc is not None,
            video="v" in options.modalities,
            encoder=audio_enc if audio_enc is not None and audio_enc.in_worker else None,
        )
        for u in todo
    ]
    bar = progress(total=len(todo), unit="utt", desc="prepare", enabled=options.progress)
    results = _decoded(jobs, options.num_workers)
    try:
        for lo in range(0, len(todo), CHUNK):
            chunk = todo[lo : lo + CHUNK]
            decoded = [next(results) for _ in chunk]
            _save_chunk(chunk, decoded, out, options, encoders, outcome=outcome, dialogue=dialogue)
            bar.update(len(chunk))
    finally:
        results.close()
        bar.close()


def _save_chunk(
    chunk,
    decoded,
    out,
    options,
    encoders: tuple,
    *,
    outcome: tuple,
    dialogue: dict[str, DialogueText] | None = None,
) -> None:
    """Encode a chunk's text (and neural audio) in batches, then write each good item; with
    ``on_error="raise"`` the first bad item is raised after the good ones are saved.
    ``dialogue`` (utterance id -> text with past turns) feeds a dialogue text encoder;
    ``encoders`` = (text, audio), ``outcome`` = (problems, failed ids), filled in."""
    text_enc, audio_enc = encoders
    problems, failed = outcome
    ok, bad = [], []
    for utt, dec in zip(chunk, decoded, strict=True):
        if dec.error is None:
            ok.append((utt, dec))
        else:
            failed.add(utt.id)
            bad.append(Problem(utt.id, *dec.error))
    texts = {}
    if text_enc is not None:
        with_text = [u for u, _ in ok if u.text and u.text.strip()]
        if with_text:
            vectors = text_enc.encode([dialogue[u.id] if dialogue else u.text for u in with_text])
            texts = {u.id: v for u, v in zip(with_text, vectors, strict=True)}
    audios = {u.id: d.audio for u, d in ok if d.audio is not None}
    if audio_enc is not None and not audio_enc.in_worker and audios:
        vectors = audio_enc.encode(list(audios.values()))
        audios = dict(zip(audios, vectors, strict=True))
    for utt, dec in ok:
        features = Features(texts.get(utt.id), audios.get(utt.id), dec.frames, dec.faces)
        write_item(out / ITEMS / f"{item_key(utt.id)}.npz", features)
    if bad and options.on_error == "raise":
        raise DataError(bad[0].file, bad[0].error)
    for problem in bad:
        log.warning("skipping %s: %s", problem.file, problem.error)
    problems.extend(bad)
