"""Where the speech is: a long recording without subtitles cut into utterances at its pauses.

A fixed grid (``--window``) cuts through words and labels silence; a voice-activity detector
finds the stretches of speech instead, and only those are classified. Two detectors:

- ``silero``: Silero VAD's ONNX model, run with onnxruntime (already a dependency). It ships
  inside the ``silero-vad`` package (the ``asr`` extra); only its ONNX model and its
  probabilities-to-timestamps step are used, nothing that needs torchaudio.
- ``energy``: frame energy against the recording's own noise floor, with hysteresis, pause
  bridging and a minimum length. No weights; the fallback when silero-vad is not installed.

A speech region longer than ``MAX_UTTERANCE_S`` is cut at its quietest point (silero: its
longest pause), and a recogniser's phrase times (``split_region``) cut a region further, so
utterance boundaries follow the words where a transcript has them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from deepmsi.errors import ConfigError
from deepmsi.features.asr import TimedText

__all__ = ["SpeechSegment", "detector_name", "speech_regions", "split_region"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_PAUSE_S = 0.5  # shorter pauses stay inside one utterance
MIN_SPEECH_S = 0.25  # shorter bursts are clicks and breaths, not utterances
MAX_UTTERANCE_S = 30.0  # longer speech is cut (Whisper's window; one label per half minute)
PAD_S = 0.1  # silence kept on each side of a region, so onsets are not clipped
DETECTORS = ("auto", "silero", "energy")
# Silero's speech probability threshold: its default 0.5 misses 7 of the 129 IEMOCAP clips
# (quiet, close to a whisper), 0.35 misses 4.
SILERO_THRESHOLD = 0.35


@dataclass(frozen=True)
class SpeechSegment:
    """One utterance found in a recording: seconds, and its machine transcript (None: none
    was made; "" when the recogniser heard no words)."""

    start: float
    end: float
    text: str | None = None


def detector_name(detector: str = "auto") -> str:
    """The detector ``speech_regions`` uses: ``silero`` where the package is installed."""
    if detector not in DETECTORS:
        raise ConfigError(f"the speech detector must be one of {DETECTORS}, got {detector!r}")
    if detector == "silero" and _silero() is None:
        raise ConfigError(
            "the silero speech detector needs the silero-vad package "
            "(pip install 'deepmsi[asr]'); --vad energy needs nothing"
        )
    if detector != "auto":
        return detector
    return "silero" if _silero() is not None else "energy"


def speech_regions(
    wave: np.ndarray, sample_rate: int = SAMPLE_RATE, *, detector: str = "auto"
) -> list[tuple[float, float]]:
    """Speech in ``wave`` ([T] float32 mono) as (start, end) seconds, in order, none shorter
    than ``MIN_SPEECH_S`` or longer than ``MAX_UTTERANCE_S``, apart by at least ``MIN_PAUSE_S``
    less the padding. Empty when nothing sounds like speech."""
    name = detector_name(detector)
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"speech_regions reads {SAMPLE_RATE} Hz audio, got {sample_rate}")
    if len(wave) < SAMPLE_RATE * MIN_SPEECH_S:
        return []
    regions = _silero_regions(wave) if name == "silero" else _energy_regions(wave)
    duration = len(wave) / SAMPLE_RATE
    return [
        (round(max(0.0, float(a) - PAD_S), 3), round(min(duration, float(b) + PAD_S), 3))
        for a, b in regions
    ]


def split_region(start: float, end: float, phrases: Sequence[TimedText]) -> list[SpeechSegment]:
    """A speech region cut between its recognised phrases (absolute seconds): each boundary lies
    midway in the gap between two phrases, the outer ones stay the detector's. Phrases too short
    to stand alone join their neighbour; the times are clipped to the region (a weak model's
    timestamps can fall outside it)."""
    kept: list[TimedText] = []
    for p in sorted(phrases, key=lambda p: p.start):
        a, b = min(max(p.start, start), end), min(max(p.end, start), end)
        if not p.text.strip():
            continue
        if kept and (b - a < MIN_SPEECH_S or a - kept[-1].end < 0.05):
            last = kept[-1]
            kept[-1] = TimedText(last.start, max(last.end, b), f"{last.text} {p.text}")
        else:
            kept.append(TimedText(a, b, p.text))
    if len(kept) >= 2 and kept[0].end - kept[0].start < MIN_SPEECH_S:
        first, second = kept[0], kept[1]
        kept[:2] = [TimedText(first.start, second.end, f"{first.text} {second.text}")]
    if not kept:
        return [SpeechSegment(start, end, "")]
    cuts = [start] + [(kept[i].end + kept[i + 1].start) / 2 for i in range(len(kept) - 1)] + [end]
    return [
        SpeechSegment(round(cuts[i], 3), round(cuts[i + 1], 3), " ".join(p.text.split()))
        for i, p in enumerate(kept)
    ]


# ---- silero ----------------------------------------------------------------------------------
@cache
def _silero():
    """Silero's ONNX model (None when the package is missing). Importing silero-vad sets torch
    to one thread; the caller's setting is restored."""
    try:
        import torch
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad
    except ImportError:
        return None
    finally:
        torch.set_num_threads(threads)
    return load_silero_vad(onnx=True)


def _silero_regions(wave: np.ndarray) -> list[tuple[float, float]]:
    import torch
    from silero_vad import get_speech_timestamps

    found = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
        _silero(),
        sampling_rate=SAMPLE_RATE,
        threshold=SILERO_THRESHOLD,
        min_speech_duration_ms=int(MIN_SPEECH_S * 1000),
        min_silence_duration_ms=int(MIN_PAUSE_S * 1000),
        max_speech_duration_s=MAX_UTTERANCE_S - 2 * PAD_S,
        speech_pad_ms=0,
    )
    return [(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in found]


# ---- energy ----------------------------------------------------------------------------------
FRAME_S, HOP_S = 0.025, 0.010
FLOOR_PERCENTILE = 3  # the noise floor: low enough to find the pauses of fluent speech
SILENT_DB = -90.0  # digital silence (padding, a muted track): not part of the noise floor
ABOVE_FLOOR_DB = 12.0  # speech starts this far above the noise floor ...
BELOW_PEAK_DB = 30.0  # ... and no further than this below the loud speech
HYSTERESIS_DB = 4.0  # a region ends only when energy falls this much below the onset level


def _energy_regions(wave: np.ndarray) -> list[tuple[float, float]]:
    """Frames [N] of log energy -> speech runs with hysteresis, gaps under ``MIN_PAUSE_S``
    bridged, runs under ``MIN_SPEECH_S`` dropped, long runs cut at their quietest frame."""
    from deepmsi.features.audio import frame_signal

    frame, hop = int(FRAME_S * SAMPLE_RATE), int(HOP_S * SAMPLE_RATE)
    frames = frame_signal(wave.astype(np.float32), frame, hop)  # [N, frame]
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)  # [N]
    sounding = db[db > SILENT_DB]
    if sounding.size == 0:
        return []
    floor, peak = np.percentile(sounding, [FLOOR_PERCENTILE, 98])
    if peak - floor < ABOVE_FLOOR_DB:  # steady noise or a steady tone: nothing stands out
        return []
    on = max(floor + ABOVE_FLOOR_DB, peak - BELOW_PEAK_DB)
    off = on - HYSTERESIS_DB
    active = np.zeros(len(db), bool)
    speaking = False
    for i, level in enumerate(db):
        speaking = level >= on or (speaking and level >= off)
        active[i] = speaking
    runs = _runs(active)
    runs = _bridge(runs, int(MIN_PAUSE_S / HOP_S))
    runs = [(a, b) for a, b in runs if (b - a) * HOP_S >= MIN_SPEECH_S]
    out: list[tuple[float, float]] = []
    for a, b in runs:
        out += _cut_long(db, a, b)
    return [(a * HOP_S, min(len(wave) / SAMPLE_RATE, b * HOP_S + FRAME_S)) for a, b in out]


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) frame indices of each run of True."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _bridge(runs: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in runs:
        if out and a - out[-1][1] < gap:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _cut_long(db: np.ndarray, a: int, b: int) -> list[tuple[int, int]]:
    """A run longer than the limit, cut at its quietest frame in the middle half, recursively."""
    limit = int((MAX_UTTERANCE_S - 2 * PAD_S - FRAME_S) / HOP_S)
    if b - a <= limit:
        return [(a, b)]
    lo, hi = a + (b - a) // 4, a + 3 * (b - a) // 4
    hi = min(hi, a + limit)
    lo = min(lo, hi - 1)
    cut = lo + int(np.argmin(db[lo:hi]))
    return _cut_long(db, a, cut) + _cut_long(db, cut, b)
