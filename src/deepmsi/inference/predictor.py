"""Run a trained model on new recordings: a clip, an audio file, a transcript, or a long video cut
at its subtitle cues (or into fixed windows).

``Predictor.from_run(run_dir)`` loads the model and rebuilds the exact feature pipeline the run
was trained on (text encoder, audio encoder, frame count, face-crop size, sample rate: all read
from the cache manifest stored in the run), once. ``predict`` then costs only decoding, encoding
and one batched forward pass per call:

    predictor = Predictor.from_run("runs/iemocap")
    result = predictor.predict("talk.mp4", subtitles="talk.srt")
    print(result.label, result.probabilities)

Whatever modalities an input has are used; the others are marked absent so the model uses its
learned placeholders (sound when the run was trained with modality dropout).

Without a transcript, ``asr`` (a recogniser, or its SOURCE: ``pocketsphinx`` or a Whisper id or
folder) writes one, marked machine-made in the result. A long recording (over ``LONG_INPUT_S``)
without subtitles or a window is cut where speech starts and stops
(``deepmsi.inference.segmentation``), and the recogniser's phrase times cut it further; silence
is not classified.

A run trained with ``--context`` reads the segments of one input as one dialogue, in time order
(one speaker unless the cues name theirs); an online head lets segment t see segments 0..t only,
so its labels do not wait for the rest of the video. A single clip is a dialogue of one turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepmsi.data.subtitles import Cue, read_subtitles
from deepmsi.errors import ConfigError, DataError
from deepmsi.features.asr import HOW_TO_GET, SAMPLE_RATE, SpeechRecognizer, load_recognizer
from deepmsi.features.encoders import DEFAULT_SAMPLE_RATE, encoders_from_manifest
from deepmsi.inference.results import Prediction, Segment
from deepmsi.modalities import NAMES, frames_to_float
from deepmsi.models.context import speaker_indices
from deepmsi.runs.folder import Run, load_run
from deepmsi.runs.predict import Dialogue, predict_dialogues

if TYPE_CHECKING:
    import torch

    from deepmsi.inference.batch import BatchItem, BatchResult
    from deepmsi.runs.card import ModelCard

__all__ = ["Prediction", "Predictor", "Segment"]

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt",)
BATCH = 8  # segments per forward pass: bounds memory on long videos
MIN_WINDOW_TAIL = 0.5  # seconds; a shorter last window joins the one before it
LONG_INPUT_S = 30.0  # a longer input without subtitles or a window is cut on speech


@dataclass(frozen=True)
class _Span:
    """A part of the input to classify: seconds (None: whole file), its transcript and who
    speaks (None: not named)."""

    start: float | None
    end: float | None
    text: str | None
    speaker: str | None = None
    machine: bool = False  # the text was written by the speech recogniser


@dataclass
class _Inputs:
    """Encoded segments, ready for the model. Arrays are stacked over the N segments; a segment
    without a modality has zeros there and False in ``present``."""

    text: np.ndarray | None  # [N, Dt] f32
    audio: np.ndarray | None  # [N, Da] f32
    frames: np.ndarray | None  # [N, F, S, S, 3] uint8
    present: dict[str, np.ndarray]  # name -> [N] bool


class Predictor:
    """A trained run plus its feature encoders, loaded once and reused for every call.

    ``last_timings`` holds the seconds spent per stage in the latest ``predict`` (decode,
    segmentation, asr, face_crop, text_encoder, audio_encoder, model, contributions).
    ``asr`` transcribes inputs that come without a transcript; ``vad`` picks the speech detector
    (auto, silero, energy).
    """

    def __init__(
        self,
        run: Run,
        *,
        contributions: bool = True,
        asr: SpeechRecognizer | str | None = None,
        vad: str = "auto",
        precision: str = "fp32",
    ) -> None:
        from deepmsi.models import set_precision

        self.run = run
        self.model = run.model.eval()
        set_precision(self.model, precision)
        self.config = run.model_config
        self.labels: tuple[str, ...] = tuple(run.labels.names)
        self.modalities: tuple[str, ...] = tuple(self.config.modality_names)
        self.contributions = contributions
        self.context = run.context  # DialogueContext head or None
        self.context_mode: str = run.context_mode
        manifest = run.cache_manifest or {}
        self.sample_rate = int(manifest.get("sample_rate") or DEFAULT_SAMPLE_RATE)
        self.frames = self.config.frames
        self.image_size = self.config.image_size
        encoders = encoders_from_manifest(manifest, self.config.modalities)
        self.text_encoder, self.audio_encoder = encoders.text, encoders.audio
        self._cropper = None
        if "video" in self.modalities:
            from deepmsi.data.media import FaceCropper

            self._cropper = FaceCropper(self.image_size)
        self.last_timings: dict[str, float] = {}
        from deepmsi.inference.segmentation import DETECTORS

        if vad not in DETECTORS:
            raise ConfigError(f"vad must be one of {', '.join(DETECTORS)}, got {vad!r}")
        self.asr = load_recognizer(asr) if isinstance(asr, str) else asr
        self.vad = vad
        self.trained_on = transcript_source(manifest)
        self._warned: set[str] = set()

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        checkpoint: str | int = "best",
        contributions: bool = True,
        asr: SpeechRecognizer | str | None = None,
        vad: str = "auto",
        precision: str = "fp32",
    ) -> Predictor:
        """Load a run folder written by ``deepmsi train`` (weights chosen by ``checkpoint``);
        ``asr`` transcribes inputs without a transcript; ``precision`` "bf16" runs the video
        backbone in bfloat16 (1.3-1.9x as fast where the CPU has bf16 arithmetic)."""
        run = load_run(run_dir, checkpoint=checkpoint)
        log.info(
            "loaded %s (epoch %s, modalities %s, dialogue context %s)",
            run_dir,
            run.epoch,
            run.model_config.modalities,
            run.context_mode,
        )
        return cls(run, contributions=contributions, asr=asr, vad=vad, precision=precision)

    # ---- public -----------------------------------------------------------------------------
    def predict(
        self,
        media: str | Path | None = None,
        text: str | None = None,
        subtitles: str | Path | Sequence[Cue] | None = None,
        window: float | None = None,
        *,
        speech: bool | None = None,
    ) -> Prediction:
        """Classify one input.

        - ``media``: a clip or an audio file (any container PyAV reads), or a ``.txt`` file
          holding a transcript; None for text alone.
        - ``text``: the transcript of the whole input (not with ``subtitles`` or ``window``).
        - ``subtitles``: an .srt/.vtt path or parsed cues; one segment per cue, its text the
          transcript.
        - ``window``: cut the media into windows of this many seconds.
        - ``speech``: cut the media where speech starts and stops; None (the default) does so
          for media longer than ``LONG_INPUT_S`` given without text, subtitles or a window.

        Spans without a transcript get the recogniser's (``asr``), marked machine-made.
        """
        self.last_timings = dict.fromkeys(
            ("decode", "segmentation", "asr", "face_crop", "text_encoder", "audio_encoder"), 0.0
        ) | {"model": 0.0, "contributions": 0.0}
        media, text = _media_and_text(media, text)
        if speech or (speech is None and _is_long(media, text, subtitles, window)):
            if subtitles is not None or window is not None or text is not None:
                raise ConfigError(
                    "cutting on speech replaces subtitles, a window length and a transcript; "
                    "give only one of them"
                )
            if media is None:
                raise ConfigError("cutting on speech needs a media file")
            spans = self._speech_spans(media)
        else:
            spans = self._spans(media, text, subtitles, window)
        spans = self._transcribe(media, spans)
        self._check_transcripts(media, spans)
        inputs = self._encode(media, spans)
        if not any(v.any() for v in inputs.present.values()):
            raise DataError(
                media or "input",
                f"has none of the modalities this model uses ({', '.join(self.modalities)})",
            )
        speakers = speaker_indices([s.speaker or "" for s in spans])
        probs, contributions = self._classify(inputs, speakers)
        segments = []
        for i, span in enumerate(spans):
            p = {name: float(probs[i, k]) for k, name in enumerate(self.labels)}
            used = tuple(m for m in NAMES if m in inputs.present and inputs.present[m][i])
            segments.append(
                Segment(
                    start=span.start,
                    end=span.end,
                    text=span.text,
                    label=max(p, key=p.__getitem__),
                    probabilities=p,
                    modalities=used,
                    contributions=contributions[i],
                    transcribed=span.machine and bool(span.text),
                )
            )
        source = Path(media).name if media is not None else "text"
        machine = any(s.machine for s in spans)
        asr = self.asr.name if machine and self.asr is not None else None
        return Prediction(source, self.labels, segments, asr=asr)

    def predict_many(
        self,
        inputs: str | Path | Sequence[str | Path] | Sequence[BatchItem],
        out: str | Path | None = None,
        *,
        window: float | None = None,
        resume: bool = True,
        progress: bool = True,
    ) -> BatchResult:
        """Classify every media file of a folder, or every file a CSV lists (``file`` and an
        optional ``transcript`` column), writing one row per segment to ``out`` (.csv or .jsonl)
        as each file finishes. A file that fails gives an error row, never an exception; a
        rerun skips the files already done and retries those that failed
        (:mod:`deepmsi.inference.batch`)."""
        from deepmsi.inference.batch import predict_many

        return predict_many(self, inputs, out, window=window, resume=resume, progress=progress)

    @property
    def card(self) -> ModelCard:
        """The run's model card (rebuilt from the run folder when it has none saved)."""
        from deepmsi.runs.card import build_card, read_card

        return read_card(self.run.path) or build_card(self.run.path)

    # ---- segments ---------------------------------------------------------------------------
    def _spans(
        self,
        media: Path | None,
        text: str | None,
        subtitles: str | Path | Sequence[Cue] | None,
        window: float | None,
    ) -> list[_Span]:
        if isinstance(subtitles, (str, Path)):
            subtitles = read_subtitles(subtitles)  # a malformed file is reported first
        if subtitles is not None and window is not None:
            raise ConfigError("give subtitles or a window length, not both")
        if text is not None and (subtitles is not None or window is not None):
            raise ConfigError(
                "a transcript (--text) belongs to a single clip; with subtitles the "
                "cues are the transcript"
            )
        if subtitles is not None:
            return [_Span(c.start, c.end, c.text or None, c.speaker) for c in subtitles]
        if window is not None:
            if media is None:
                raise ConfigError("a window length needs a media file to cut")
            if window <= 0:
                raise ConfigError(f"window must be positive, got {window}")
            return _windows(media, window)
        if media is None and not text:
            raise ConfigError("nothing to predict: give a media file, a transcript, or both")
        return [_Span(None, None, text)]

    def _speech_spans(self, media: Path) -> list[_Span]:
        """Speech regions of the whole file, each cut further at the recogniser's phrases when
        there is one; the whole file when no speech is found."""
        from deepmsi.data.media import decode_audio
        from deepmsi.inference.segmentation import speech_regions, split_region

        with self._timed("decode"):
            wave = decode_audio(media, sample_rate=SAMPLE_RATE)
        if wave is None:
            raise DataError(media, "has no audio stream to find the speech in")
        with self._timed("segmentation"):
            regions = speech_regions(wave, SAMPLE_RATE, detector=self.vad)
        if not regions:
            log.warning("%s: no speech found; classifying the whole file", media)
            return [_Span(None, None, None)]
        if self.asr is None:
            return [_Span(a, b, None) for a, b in regions]
        spans = []
        for a, b in regions:
            with self._timed("asr"):
                piece = wave[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)]
                heard = self.asr.transcribe(piece).shifted(a)
            spans += [
                _Span(s.start, s.end, s.text or None, machine=True)
                for s in split_region(a, b, heard.phrases)
            ]
        return spans

    def _transcribe(self, media: Path | None, spans: list[_Span]) -> list[_Span]:
        """Spans of ``media`` without text, transcribed by the recogniser (when there is one)."""
        if self.asr is None or media is None:
            return spans
        from deepmsi.data.media import decode_audio

        out = list(spans)
        for i, span in enumerate(spans):
            if span.machine or (span.text and span.text.strip()):
                continue
            with self._timed("decode"):
                wave = decode_audio(media, sample_rate=SAMPLE_RATE, start=span.start, end=span.end)
            if wave is None:  # no audio stream: nothing to hear
                return spans
            with self._timed("asr"):
                heard = self.asr.transcribe(wave)
            out[i] = replace(span, text=heard.text or None, machine=True)
        return out

    def _check_transcripts(self, media: Path | None, spans: list[_Span]) -> None:
        """Warn (once per predictor) when text is left out for want of a transcript, and when
        the transcripts are not of the kind (human, machine) the run was trained on."""
        if "text" not in self.modalities:
            return
        if media is not None and self.asr is None and not any(s.text for s in spans):
            self._warn_once(
                "no-text",
                f"{media.name}: no transcript, so the text modality is left out; give one "
                f"(--text, --subtitles) or let a speech recogniser write it: {HOW_TO_GET}",
            )
        used = {"machine" if s.machine else "human" for s in spans if s.text}
        for kind in sorted(used):
            if self.trained_on in (kind, "mixed", None):
                continue
            self._warn_once(
                f"mismatch-{kind}",
                f"the run was trained on {self.trained_on} transcripts but is given {kind} ones"
                + (f" (by {self.asr.name})" if kind == "machine" and self.asr else "")
                + "; its text cue may be less reliable than its reported scores",
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    # ---- features ---------------------------------------------------------------------------
    def _encode(self, media: Path | None, spans: list[_Span]) -> _Inputs:
        """Decode, crop and encode every span into model inputs (same steps as ``prepare``)."""
        n = len(spans)
        waves: list[np.ndarray | None] = [None] * n
        crops: list[np.ndarray | None] = [None] * n
        if media is not None:
            for i, span in enumerate(spans):
                waves[i], crops[i] = self._decode(media, span)
        present: dict[str, np.ndarray] = {}
        text_x = audio_x = frames_x = None
        if self.text_encoder is not None:
            has = np.array([bool(s.text and s.text.strip()) for s in spans])
            text_x = np.zeros((n, self.config.text_dim), np.float32)
            texts: list = [s.text for s in spans]
            if self.text_encoder.past:  # a dialogue encoder: earlier segments are its past turns
                from deepmsi.features.text import in_conversation

                speakers = [s.speaker for s in spans]
                texts = in_conversation(texts, speakers, self.text_encoder.past)
            if has.any():
                with self._timed("text_encoder"):
                    text_x[has] = self.text_encoder.encode([texts[i] for i in np.flatnonzero(has)])
            present["text"] = has
        if self.audio_encoder is not None:
            has = np.array([w is not None for w in waves])
            audio_x = np.zeros((n, self.config.audio_dim), np.float32)
            if has.any():
                with self._timed("audio_encoder"):
                    audio_x[has] = self.audio_encoder.encode([w for w in waves if w is not None])
            present["audio"] = has
        if self._cropper is not None:
            has = np.array([c is not None for c in crops])
            shape = (self.frames, self.image_size, self.image_size, 3)
            frames_x = np.stack([c if c is not None else np.zeros(shape, np.uint8) for c in crops])
            present["video"] = has
        return _Inputs(text_x, audio_x, frames_x, present)

    def _decode(self, media: Path, span: _Span) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Speech [T] f32 and face crops [F, S, S, 3] uint8 of one span (None where absent)."""
        from deepmsi.data.media import decode_audio, decode_frames

        wave = raw = crops = None
        with self._timed("decode"):
            if self.audio_encoder is not None:
                wave = decode_audio(
                    media, sample_rate=self.sample_rate, start=span.start, end=span.end
                )
            if self._cropper is not None:
                raw = decode_frames(media, num_frames=self.frames, start=span.start, end=span.end)
        if raw is not None and self._cropper is not None:
            with self._timed("face_crop"):
                crops = self._cropper.crop_clip(raw)[0]  # [F, S, S, 3], as in prepare
        return wave, crops

    # ---- model ------------------------------------------------------------------------------
    def _classify(
        self, inputs: _Inputs, speakers: Sequence[int]
    ) -> tuple[np.ndarray, list[dict[str, float]]]:
        """Probabilities [N, K] and, per segment, each present modality's contribution: how much
        the predicted class's probability drops when the model no longer sees that modality.

        With a dialogue-context head the modality is hidden from every segment at once (the
        segments are one dialogue); without one each segment is independent, so it is the same.
        """
        import torch

        present = {k: torch.from_numpy(v.copy()) for k, v in inputs.present.items()}
        n = len(next(iter(present.values())))
        with self._timed("model"):
            probs = self._probs(inputs, present, speakers)
        contributions: list[dict[str, float]] = [{} for _ in range(n)]
        if not self.contributions:
            return probs, contributions
        with self._timed("contributions"):
            counts = sum(v.long() for v in present.values())  # [N] modalities per segment
            top = probs.argmax(1)
            rows = np.arange(n)
            for name, mask in present.items():
                use = mask & (counts >= 2)
                if not bool(use.any()):
                    continue
                p = self._probs(inputs, present | {name: mask & ~use}, speakers)
                drop = probs[rows, top] - p[rows, top]
                for i in np.flatnonzero(use.numpy()):
                    contributions[i][name] = float(drop[i])
        return probs, contributions

    def _probs(
        self, inputs: _Inputs, present: dict[str, torch.Tensor], speakers: Sequence[int]
    ) -> np.ndarray:
        """Probabilities [N, K]: the utterance model on BATCH segments at a time, then (with a
        context head) the head over all N segments as one dialogue in time order."""
        import torch

        n = len(speakers)
        probs, joint = [], []
        with torch.inference_mode():
            for lo in range(0, n, BATCH):
                idx = slice(lo, min(n, lo + BATCH))
                out = self.model(
                    **_tensors(inputs, idx), present={k: v[idx] for k, v in present.items()}
                )
                probs.append(torch.softmax(out.logits.float(), dim=-1).numpy())
                joint.append(out.joint)  # [b, M*P]
            if self.context is None:
                return np.concatenate(probs)
            dialogue = Dialogue(("", "input"), tuple(range(n)), tuple(speakers))
            return predict_dialogues(self.context, torch.cat(joint), [dialogue])

    @contextmanager
    def _timed(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.last_timings[stage] = self.last_timings.get(stage, 0.0) + time.perf_counter() - t0


# ---- helpers ---------------------------------------------------------------------------------
def _tensors(inputs: _Inputs, idx: slice) -> dict[str, Any]:
    """Model keyword inputs for rows ``idx``: frames [b, F, S, S, 3] u8 -> [b, F, 3, S, S] f32."""
    import torch

    text = None if inputs.text is None else torch.from_numpy(inputs.text[idx])
    audio = None if inputs.audio is None else torch.from_numpy(inputs.audio[idx])
    frames = None
    if inputs.frames is not None:
        frames = frames_to_float(inputs.frames[idx])
    return {"text": text, "audio": audio, "frames": frames}


def _media_and_text(media: str | Path | None, text: str | None) -> tuple[Path | None, str | None]:
    """A ``.txt`` input is a transcript, not media."""
    text = text.strip() or None if text is not None else None
    if media is None:
        return None, text
    media = Path(media)
    if media.suffix.lower() in TEXT_SUFFIXES:
        if text is not None:
            raise ConfigError(f"{media}: a transcript file and --text both give the transcript")
        try:
            content = media.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(media, f"cannot read transcript: {err}") from None
        content = " ".join(content.split())
        if not content:
            raise DataError(media, "empty transcript")
        return None, content
    if not media.is_file():
        raise DataError(media, "no such file")
    return media, text


def transcript_source(manifest: dict[str, Any]) -> str | None:
    """What a cache's (or run's) text features were made from: "human", "machine" or "mixed"
    transcripts (None: no text). Caches made without a recogniser hold human ones."""
    if not manifest.get("text_encoder"):
        return None
    counts = manifest.get("transcripts") or {}
    human, machine = int(counts.get("human", 1)), int(counts.get("machine", 0))
    if machine and human:
        return "mixed"
    return "machine" if machine else "human"


def _is_long(media: Path | None, text: str | None, subtitles: object, window: float | None) -> bool:
    """Media over ``LONG_INPUT_S`` with sound, given without text, subtitles or a window."""
    if media is None or text is not None or subtitles is not None or window is not None:
        return False
    from deepmsi.data.media import probe

    info = probe(media)
    return info.audio and (info.duration or 0.0) > LONG_INPUT_S


def _windows(media: Path, window: float) -> list[_Span]:
    """Consecutive ``window``-second spans covering the media."""
    from deepmsi.data.media import probe

    duration = probe(media).duration
    if not duration:
        raise DataError(media, "cannot cut into windows: the duration is unknown")
    starts = list(np.arange(0.0, duration, window))
    if len(starts) > 1 and duration - starts[-1] < MIN_WINDOW_TAIL:
        starts.pop()
    ends = starts[1:] + [duration]
    return [
        _Span(round(float(a), 3), round(float(b), 3), None)
        for a, b in zip(starts, ends, strict=True)
    ]
