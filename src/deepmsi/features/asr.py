"""Speech recognition: a timed transcript for speech that came without one.

Two recognisers behind one small interface (``name``, ``version``, ``transcribe(wave)``):

- ``WhisperRecognizer``: any Whisper-family model through transformers, from a Hugging Face id
  (``openai/whisper-small`` and its siblings, from the local cache or downloaded) or a local
  folder; its timestamp tokens give phrase times. Accurate, but needs weights this machine lacks.
- ``SphinxRecognizer`` (SOURCE ``pocketsphinx``): CMU PocketSphinx with the US-English acoustic
  model, dictionary and language model shipped inside the ``pocketsphinx`` package, so it works
  offline with nothing to download; word times come from its alignment. Far less accurate than
  Whisper (``benchmarks/asr_wer.py`` measures it on the IEMOCAP clips).

Every transcript is machine-made; callers record it as such (``Prediction.asr``, the cache
manifest's ``transcripts``) so a model trained on human transcripts is not silently fed
machine ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Protocol

import numpy as np

from deepmsi.errors import ConfigError

if TYPE_CHECKING:
    from deepmsi.data.records import Utterance

__all__ = [
    "SAMPLE_RATE",
    "SpeechRecognizer",
    "SphinxRecognizer",
    "TimedText",
    "Transcript",
    "WhisperRecognizer",
    "load_recognizer",
    "transcribe_missing",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # what every recogniser here reads
SPHINX = "pocketsphinx"
CHUNK_S = 30.0  # Whisper's input window; longer speech is transcribed window by window
# Active HMMs per frame: the default (30000) costs about 3x the compute for no better WER on the
# IEMOCAP clips (8-clip check: 73% vs 72%, real-time factor 2.9 vs 0.55 on a loaded core);
# narrower beams are faster still but lose words (beam 1e-30: 88%).
SPHINX_MAX_HMMS = 10000
PHRASE_PAUSE_S = 0.5  # PocketSphinx words further apart than this start a new phrase
HOW_TO_GET = (
    "install the offline recogniser (`pip install 'deepmsi[asr]'`, then --asr pocketsphinx) or "
    "download a Whisper model elsewhere (`hf download openai/whisper-small --local-dir DIR`) and "
    "pass --asr DIR"
)


@dataclass(frozen=True)
class TimedText:
    """A stretch of recognised speech: seconds from the start of the transcribed wave."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """What a recogniser heard in one wave: the whole text and its timed phrases (in order)."""

    text: str
    phrases: tuple[TimedText, ...]

    def shifted(self, offset: float) -> Transcript:
        """The same transcript with times measured from ``offset`` seconds earlier."""
        return Transcript(
            self.text,
            tuple(TimedText(p.start + offset, p.end + offset, p.text) for p in self.phrases),
        )


class SpeechRecognizer(Protocol):
    """What ``predict`` and ``prepare`` need from a recogniser: waves are float32 mono [T] at
    ``SAMPLE_RATE``."""

    name: str

    @property
    def version(self) -> str: ...

    def transcribe(self, wave: np.ndarray) -> Transcript: ...


def load_recognizer(source: str) -> SpeechRecognizer:
    """``pocketsphinx`` or a Whisper id/folder, loaded now so that a missing package or model
    is a one-line ``ConfigError`` (saying how to get one) before any input is read."""
    source = str(source).strip()
    if not source:
        raise ConfigError(f"--asr needs a SOURCE: {HOW_TO_GET}")
    recognizer: SphinxRecognizer | WhisperRecognizer
    if source == SPHINX:
        recognizer = SphinxRecognizer()
        _ = recognizer._decoder
    else:
        recognizer = WhisperRecognizer(source)
        _ = recognizer._loaded
    log.info("speech recogniser %s loaded", source)
    return recognizer


# ---- PocketSphinx -----------------------------------------------------------------------------
_FILLER = re.compile(r"^(<.*>|\[.*\])$")  # <s>, </s>, <sil>, [NOISE], [SPEECH]
_VARIANT = re.compile(r"\(\d+\)$")  # want(2): the dictionary's second pronunciation


class SphinxRecognizer:
    """PocketSphinx's shipped US-English models; one decoder, reused for every wave."""

    name = SPHINX

    @cached_property
    def _decoder(self):
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise ConfigError(
                f"--asr pocketsphinx needs the pocketsphinx package: {HOW_TO_GET}"
            ) from None
        return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", maxhmmpf=SPHINX_MAX_HMMS)

    @property
    def version(self) -> str:
        try:
            return f"pocketsphinx-{version('pocketsphinx')}-en-us-hmm{SPHINX_MAX_HMMS}"
        except PackageNotFoundError:
            return f"pocketsphinx-en-us-hmm{SPHINX_MAX_HMMS}"

    def transcribe(self, wave: np.ndarray) -> Transcript:
        """Words with their times, grouped into phrases at pauses over ``PHRASE_PAUSE_S``."""
        decoder = self._decoder
        pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype("<i2")  # the decoder reads int16
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
        decoder.end_utt()
        frame_s = 1.0 / float(decoder.config["frate"])
        words = []
        for seg in decoder.seg():
            if _FILLER.match(seg.word):
                continue
            word = _VARIANT.sub("", seg.word)
            words.append(TimedText(seg.start_frame * frame_s, (seg.end_frame + 1) * frame_s, word))
        return Transcript(" ".join(w.text for w in words), _phrases(words, PHRASE_PAUSE_S))


def _phrases(words: list[TimedText], pause: float) -> tuple[TimedText, ...]:
    """Consecutive words joined into phrases wherever the gap is under ``pause`` seconds."""
    out: list[TimedText] = []
    for w in words:
        if out and w.start - out[-1].end < pause:
            last = out[-1]
            out[-1] = TimedText(last.start, w.end, f"{last.text} {w.text}")
        else:
            out.append(w)
    return tuple(out)


# ---- Whisper ----------------------------------------------------------------------------------
class WhisperRecognizer:
    """A Whisper-family model (processor + ``WhisperForConditionalGeneration``) from an id or a
    folder, greedy decoding with timestamps. Loaded on first use; never runs remote code."""

    def __init__(self, source: str) -> None:
        self.name = source

    @cached_property
    def _loaded(self):
        from transformers import AutoProcessor, WhisperForConditionalGeneration
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        folder = _model_folder(self.name)
        try:
            processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
            model = WhisperForConditionalGeneration.from_pretrained(
                folder, trust_remote_code=False, use_safetensors=True
            )
        except (OSError, ValueError, TypeError, KeyError) as err:
            text = str(err).strip()
            first = text.splitlines()[0] if text else type(err).__name__
            raise ConfigError(
                f"cannot load speech recogniser {self.name!r}: {first[:200]}; {HOW_TO_GET}"
            ) from None
        if not hasattr(processor, "tokenizer") or not hasattr(processor, "feature_extractor"):
            raise ConfigError(
                f"cannot load speech recogniser {self.name!r}: not a Whisper processor "
                f"(a feature extractor and a tokenizer); {HOW_TO_GET}"
            )
        return processor, model.eval()

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
        return digest.hexdigest()[:12]

    def transcribe(self, wave: np.ndarray) -> Transcript:
        """Window by window (``CHUNK_S``); each window's timestamp segments become phrases,
        clipped to the window (a weak model's timestamps can run past the audio)."""
        step = int(CHUNK_S * SAMPLE_RATE)
        phrases: list[TimedText] = []
        for lo in range(0, max(1, len(wave)), step):
            chunk = wave[lo : lo + step]
            if len(chunk) < SAMPLE_RATE // 10:  # under 0.1 s: nothing to hear
                continue
            offset = lo / SAMPLE_RATE
            phrases += [
                TimedText(round(p.start + offset, 3), round(p.end + offset, 3), p.text)
                for p in self._window(chunk)
            ]
        return Transcript(" ".join(p.text for p in phrases), tuple(phrases))

    def _window(self, chunk: np.ndarray) -> list[TimedText]:
        """One window of at most 30 s -> its phrases, times from the window's start."""
        import torch

        processor, model = self._loaded
        duration = len(chunk) / SAMPLE_RATE
        features = processor.feature_extractor(
            chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(model.dtype)  # [1, mel, 3000]
        options: dict = {"return_timestamps": True}
        if getattr(model.generation_config, "is_multilingual", False):
            options["task"] = "transcribe"
        with torch.inference_mode():
            ids = model.generate(features, **options)  # [1, L]
        decoded = processor.tokenizer.decode(ids[0], skip_special_tokens=True, output_offsets=True)
        out = []
        for item in decoded.get("offsets") or []:
            text = " ".join(str(item.get("text", "")).split())
            start, end = item.get("timestamp") or (0.0, None)
            start = min(max(0.0, float(start or 0.0)), duration)
            end = duration if end is None else min(max(start, float(end)), duration)
            if text:
                out.append(TimedText(round(start, 3), round(end, 3), text))
        text = " ".join(str(decoded.get("text", "")).split())
        if not out and text:
            out = [TimedText(0.0, round(duration, 3), text)]
        return out


_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_HUB_FILES = ["*.json", "*.txt", "*.safetensors", "*.model", "*.tiktoken"]  # never pickles


def _model_folder(source: str) -> str:
    """A local folder holding ``source``: the folder itself, or a Hub id's files from the local
    cache, else downloaded (safetensors and configs only). An unreachable Hub is one line, after
    one file's retries rather than one per file."""
    from pathlib import Path

    path = Path(source).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or not _REPO_ID.match(source):
        raise ConfigError(
            f"cannot load speech recogniser {source!r}: no such folder, and not a Hugging Face "
            f"model id; {HOW_TO_GET}"
        )
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    quiet = logging.getLogger("huggingface_hub")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its retry warnings would flood the terminal
    try:
        try:
            return snapshot_download(source, allow_patterns=_HUB_FILES, local_files_only=True)
        except (LocalEntryNotFoundError, OSError, ValueError):
            if constants.is_offline_mode():
                raise ConfigError(
                    f"cannot load speech recogniser {source!r}: not in the local Hugging Face "
                    f"cache and HF_HUB_OFFLINE is set; {HOW_TO_GET}"
                ) from None
        try:
            hf_hub_download(source, "config.json")  # one file first: fails fast when offline
            return snapshot_download(source, allow_patterns=_HUB_FILES)
        except LocalEntryNotFoundError:
            problem = "the Hugging Face Hub is unreachable from here and it is not cached"
        except (OSError, ValueError) as err:  # the Hub's other errors derive from these
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            problem = f"cannot download it ({first[:160]})"
        raise ConfigError(f"cannot load speech recogniser {source!r}: {problem}; {HOW_TO_GET}")
    finally:
        quiet.setLevel(level)


# ---- datasets ---------------------------------------------------------------------------------
def transcribe_missing(
    utterances: Sequence[Utterance],
    recognizer: SpeechRecognizer,
    *,
    known: Mapping[str, str] | None = None,
    progress: bool = False,
) -> tuple[list[Utterance], int]:
    """Utterances without a transcript get the recogniser's, from their audio; returns them and
    how many are machine-transcribed. ``known`` (id -> text, from an earlier run into the same
    cache) is reused instead of transcribing again. One that cannot be decoded is left without
    text: ``prepare`` reports its media when it decodes it."""
    from deepmsi.data.media import decode_audio
    from deepmsi.errors import DataError
    from deepmsi.progress import progress as progress_bar

    known = known or {}
    todo = [u for u in utterances if not (u.text and u.text.strip()) and u.audio is not None]
    texts: dict[str, str] = {}
    for u in progress_bar(todo, unit="utt", desc="transcribe", enabled=progress):
        if u.id in known:
            texts[u.id] = known[u.id]
            continue
        try:
            wave = decode_audio(u.audio, sample_rate=SAMPLE_RATE, start=u.start, end=u.end)
        except DataError as err:
            log.debug("not transcribing %s: %s", u.id, err)
            continue
        if wave is not None:
            texts[u.id] = recognizer.transcribe(wave).text
    out = [
        dataclasses.replace(u, text=texts[u.id] or None) if u.id in texts else u for u in utterances
    ]
    return out, sum(1 for t in texts.values() if t)


# ---- scoring ----------------------------------------------------------------------------------
_NOT_WORDS = re.compile(r"\[[^\]]*\]|<[^>]*>")  # [LAUGHTER], [BREATHING], <sil>
_KEEP = re.compile(r"[^a-z0-9' ]+")


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation or bracketed events, for word error rates (so
    "Okay--you're fine." and "okay you're fine" match)."""
    text = _NOT_WORDS.sub(" ", text.lower().replace("-", " "))
    return [w.strip("'") for w in _KEEP.sub(" ", text).split() if w.strip("'")]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after ``normalise_words``: the
    word-level edit distance; WER is their ratio summed over a corpus."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1], len(ref)
