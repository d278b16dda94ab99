"""A synthetic MELD-layout corpus where each modality carries a partial, noisy emotion cue.

Why: the demo, the tests and the speed benchmarks need labelled multimodal data on a machine with
no dataset and no network. ``write_corpus`` writes the official MELD layout (three
``*_sent_emo.csv`` tables plus H.264+AAC mp4 clips), so ``load_dataset("meld:DIR")`` reads it like
the real thing.

The cues are complementary by design, so a model needs all three modalities to do best:

- face (video): a drawn face whose mouth curves up, stays flat or curves down (brows follow), which
  groups the seven classes in three;
- voice (audio): a vowel-like voiced sound whose pitch, pitch slope, loudness, syllable rate and
  brightness are calm, bright or harsh, a second three-way grouping that cuts across the first;
- text: a template sentence that names the emotion (a phrase around one keyword per emotion)
  only about half of the time, sometimes the wrong one; the rest are neutral sentences shared by
  every class.

Face and voice together tell every pair of classes apart (``CUES`` maps each class to a distinct
(face, voice) pair), no single modality does, and every cue is weakened by random intensity,
per-frame noise and an occasional misleading expression, so even all three together are not
perfect. The balance is checked by ``tests/test_synthetic.py``: on ~220 tiny clips, logistic
regression on simple per-modality features scores about 0.45 (text), 0.50 (audio) and 0.44
(video), against 0.74 for the three together (majority class 0.25); more data widens the gap.
Everything is deterministic by seed: each clip is rendered from its own seed, so the content does
not depend on the number of workers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from deepmsi.atomic import atomic_path
from deepmsi.errors import ConfigError
from deepmsi.labels import MELD7

log = logging.getLogger(__name__)

__all__ = ["CUES", "PRESETS", "SPLIT_DIRS", "write_corpus"]

VERSION = 2  # bump when rendering changes, so resumed runs do not keep stale clips

# MELD's file names and clip folders per split.
CSV_NAMES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
SPLIT_DIRS = {
    "train": "train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
COLUMNS = (
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
)

# (face, voice) per class. Face: mouth up / flat / down. Voice: calm (low, slow, quiet, falling),
# bright (high, rising), harsh (loud, fast, falling, bright timbre). All seven pairs are distinct.
CUES: dict[str, tuple[str, str]] = {
    "neutral": ("flat", "calm"),
    "surprise": ("up", "harsh"),
    "fear": ("down", "bright"),
    "sadness": ("down", "calm"),
    "joy": ("up", "bright"),
    "disgust": ("flat", "harsh"),
    "anger": ("down", "harsh"),
}
FACES = ("up", "flat", "down")
VOICES = ("calm", "bright", "harsh")

# Moderately imbalanced like MELD (neutral first), but less extreme so every class is learnable.
# Neutral's share is also the floor of every single cue's accuracy (each cue lumps neutral with
# other classes and then always says neutral), so it is kept at a quarter: at 0.30 one cue alone
# came too close to the three together.
PRIORS = {
    "neutral": 0.25,
    "joy": 0.16,
    "surprise": 0.13,
    "anger": 0.13,
    "sadness": 0.11,
    "fear": 0.11,
    "disgust": 0.11,
}
SENTIMENT = {"neutral": "neutral", "joy": "positive", "surprise": "positive"}  # else negative

# How often each cue is absent or wrong.
TEXT_CUE = 0.5  # P(sentence names an emotion | not neutral)
TEXT_WRONG = 0.1  # P(the named emotion is another one | named)
NEUTRAL_TEXT_CUE = 0.05  # P(a neutral utterance names some emotion anyway)
# Face and voice must both be right to name the class, so their errors compound: kept rare.
FACE_WRONG = 0.04  # P(the face shows a random other expression)
VOICE_WRONG = 0.04  # P(the voice has a random other contour)

DIALOGUES = 110  # the default total, about 600 utterances

# Ready-made sizes: "demo" (the defaults, fast on 2 cores) and "meld" (MELD's split sizes and
# real clip lengths, for speed benchmarks).
PRESETS: dict[str, dict] = {
    "demo": {},
    "meld": {
        "splits": (1038, 114, 280),
        "utterances_per_dialogue": (5, 14),
        "seconds": 3.0,
        "fps": 25,
        "size": (320, 240),
    },
}


@dataclass(frozen=True)
class _Speaker:
    name: str
    skin: tuple[int, int, int]  # RGB
    hair: tuple[int, int, int]
    pitch: float  # Hz, the speaker's neutral f0
    smile: float  # resting mouth curvature, a small per-speaker bias


SPEAKERS = (
    _Speaker("Avery", (224, 182, 150), (60, 40, 25), 190.0, 0.10),
    _Speaker("Blake", (190, 140, 105), (25, 20, 15), 120.0, -0.10),
    _Speaker("Casey", (240, 200, 170), (170, 110, 50), 210.0, 0.0),
    _Speaker("Devon", (150, 105, 75), (20, 15, 10), 135.0, 0.05),
    _Speaker("Emery", (205, 160, 125), (110, 70, 40), 175.0, -0.05),
    _Speaker("Finley", (170, 120, 90), (45, 35, 30), 110.0, 0.0),
)
_SPEAKER = {s.name: s for s in SPEAKERS}

SCENES = (
    (88, 110, 140),
    (120, 135, 100),
    (140, 110, 120),
    (100, 100, 105),
    (70, 120, 125),
    (150, 140, 115),
)

# ---------------------------------------------------------------------------------------------
# Text
_NAMES = ("Sam", "Jordan", "Riley", "Alex", "Morgan", "Taylor")
_NOUNS = ("coffee", "keys", "couch", "tickets", "pizza", "guitar", "letter", "jacket", "car")
_PLACES = ("kitchen", "office", "coffee house", "museum", "hallway", "apartment", "park")
_TIMES = ("tonight", "tomorrow", "on Monday", "after lunch", "later", "this weekend")
_BODIES = (
    "I think we should get the {noun} {time}.",
    "Did you see {name} at the {place}?",
    "So {name} left the {noun} in the {place}.",
    "We are meeting {name} at the {place} {time}.",
    "Can you bring the {noun} to the {place}?",
    "{name} says the {noun} is in the {place}.",
    "Okay, the {noun} goes in the {place}.",
    "Wait, is {name} coming {time}?",
)
# Each emotion's phrases share a keyword, so the cue is learnable from a few hundred sentences.
_CUE_PHRASES = {
    "joy": (
        "I'm so happy",
        "This makes me so happy",
        "Happy, happy day",
        "I'm really happy for you",
    ),
    "surprise": (
        "Wow, really",
        "Wow, no way",
        "Really? Wow",
        "Wow, I had no idea",
    ),
    "fear": (
        "I'm scared",
        "I'm so scared right now",
        "Please, I'm scared",
        "Don't go, I'm scared",
    ),
    "sadness": (
        "I'm so sad",
        "This is so sad",
        "I feel sad and lonely",
        "Sad, I just miss her",
    ),
    "disgust": (
        "Ew, gross",
        "That's so gross",
        "Gross, get it away",
        "Yuck, that's gross",
    ),
    "anger": (
        "I'm so angry",
        "That makes me angry",
        "I'm angry with you",
        "Angry? I'm furious",
    ),
}
_EMOTIVE = tuple(_CUE_PHRASES)


def _sentence(emotion: str, rng: np.random.Generator) -> str:
    """A neutral body sentence, with a cue phrase for some emotion about half of the time."""
    body = str(rng.choice(_BODIES)).format(
        noun=rng.choice(_NOUNS),
        name=rng.choice(_NAMES),
        place=rng.choice(_PLACES),
        time=rng.choice(_TIMES),
    )
    if emotion == "neutral":
        cue = str(rng.choice(_EMOTIVE)) if rng.random() < NEUTRAL_TEXT_CUE else None
    elif rng.random() < TEXT_CUE:
        others = [e for e in _EMOTIVE if e != emotion]
        cue = str(rng.choice(others)) if rng.random() < TEXT_WRONG else emotion
    else:
        cue = None
    if cue is None:
        return body
    phrase = str(rng.choice(_CUE_PHRASES[cue]))
    return f"{phrase}! {body}" if rng.random() < 0.5 else f"{body} {phrase}."


# ---------------------------------------------------------------------------------------------
# The plan: the utterance table, before any media is rendered.
@dataclass(frozen=True)
class _Utt:
    split: str
    dialogue: int
    turn: int
    speaker: str
    emotion: str
    text: str
    seconds: float
    season: int
    episode: int
    start: float
    scene: tuple[int, int, int]
    seed: int

    @property
    def file(self) -> str:
        return f"{SPLIT_DIRS[self.split]}/dia{self.dialogue}_utt{self.turn}.mp4"


@dataclass(frozen=True)
class _Render:
    fps: int
    width: int
    height: int
    sample_rate: int


def _allocate(n: int, rng: np.random.Generator) -> list[str]:
    """n labels with the PRIORS proportions (largest remainder), every class at least once."""
    names = MELD7.names
    want = np.array([PRIORS[c] for c in names]) * n
    counts = np.maximum(np.floor(want).astype(int), 1)
    while counts.sum() < n:
        counts[int(np.argmax(want - counts))] += 1
    while counts.sum() > n:  # only when the minimum of one forced an overshoot
        counts[int(np.argmax(np.where(counts > 1, counts - want, -np.inf)))] -= 1
    labels = [c for c, k in zip(names, counts, strict=True) for _ in range(k)]
    rng.shuffle(labels)
    return labels


def _dialogue_counts(
    dialogues: int | None, splits: Sequence[float | int], minimum: int
) -> list[int]:
    """Dialogues per split; fractions are rounded so that each split gets at least ``minimum``."""
    if len(splits) != 3:
        raise ConfigError(f"splits must give train, dev and test, got {tuple(splits)}")
    if all(isinstance(s, int) for s in splits):
        if dialogues is not None and dialogues != sum(splits):
            raise ConfigError(
                f"dialogues={dialogues} disagrees with the split counts {tuple(splits)}; "
                "give split fractions (e.g. 0.7, 0.1, 0.2) to set the total"
            )
        return [int(s) for s in splits]
    total = DIALOGUES if dialogues is None else dialogues
    if any(s <= 0 for s in splits) or not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split fractions must be > 0 and sum to 1, got {tuple(splits)}")
    counts = [round(total * f) for f in splits[1:]]
    counts = [total - sum(counts), *counts]
    for i in range(3):
        while counts[i] < minimum and max(counts) > minimum:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return counts


def _plan(
    seed: int,
    dialogues: int | None,
    utterances_per_dialogue: int | tuple[int, int],
    splits: Sequence[float | int],
    seconds: float,
) -> list[_Utt]:
    """The whole utterance table: dialogues of several turns among 2-3 speakers."""
    lo, hi = (
        (utterances_per_dialogue, utterances_per_dialogue)
        if isinstance(utterances_per_dialogue, int)
        else utterances_per_dialogue
    )
    if not 1 <= lo <= hi:
        raise ConfigError(f"utterances_per_dialogue must be >= 1, got {utterances_per_dialogue}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    utts: list[_Utt] = []
    for split, n_dia in zip(
        CSV_NAMES, _dialogue_counts(dialogues, splits, math.ceil(len(MELD7) / lo)), strict=True
    ):
        lengths = rng.integers(lo, hi + 1, size=n_dia)
        n = int(lengths.sum())
        if n < len(MELD7):
            raise ConfigError(
                f"the {split} split has {n} utterances; it needs at least {len(MELD7)} so that "
                "every class is present (raise dialogues or utterances_per_dialogue)"
            )
        labels = iter(_allocate(n, rng))
        for dia, length in enumerate(lengths):
            cast = rng.choice(len(SPEAKERS), size=int(rng.integers(2, 4)), replace=False)
            season, episode = int(rng.integers(1, 11)), int(rng.integers(1, 25))
            scene = SCENES[int(rng.integers(len(SCENES)))]
            clock = float(rng.uniform(30, 1200))
            speaker = -1
            for turn in range(int(length)):
                speaker = int(rng.choice([c for c in cast if c != speaker]))
                emotion = next(labels)
                duration = round(seconds * float(rng.uniform(0.8, 1.25)), 3)
                utts.append(
                    _Utt(
                        split=split,
                        dialogue=dia,
                        turn=turn,
                        speaker=SPEAKERS[speaker].name,
                        emotion=emotion,
                        text=_sentence(emotion, rng),
                        seconds=duration,
                        season=season,
                        episode=episode,
                        start=round(clock, 3),
                        scene=scene,
                        seed=int(rng.integers(2**31)),
                    )
                )
                clock += duration + float(rng.uniform(0.3, 1.5))
    return utts


# ---------------------------------------------------------------------------------------------
# Rendering: one clip from its own seed.
@dataclass(frozen=True)
class _Performance:
    """How one utterance is acted: the (possibly wrong) cue groups and their intensities."""

    face: str
    voice: str
    face_strength: float
    voice_strength: float


def _perform(utt: _Utt, rng: np.random.Generator) -> _Performance:
    face, voice = CUES[utt.emotion]
    if rng.random() < FACE_WRONG:
        face = str(rng.choice([f for f in FACES if f != face]))
    if rng.random() < VOICE_WRONG:
        voice = str(rng.choice([v for v in VOICES if v != voice]))
    # The face gets the narrower range: a weak smile drawn in a few pixels is lost in the jitter.
    return _Performance(face, voice, float(rng.uniform(0.7, 1.0)), float(rng.uniform(0.5, 1.0)))


# Voice contour per group: f0 ratio to the speaker's pitch, slope (octaves over the utterance),
# loudness (dB), syllables per second, and brightness (0 dark .. 1 bright).
_VOICE = {
    "neutral": (1.0, 0.0, -8.0, 3.5, 0.45),
    "calm": (0.8, -0.2, -16.0, 2.2, 0.15),
    "bright": (1.45, 0.6, -7.0, 4.2, 0.55),
    "harsh": (1.1, -0.4, -1.0, 6.0, 0.95),
}
# (F1, F2, F3) Hz of a few vowels: a, i, u, e, o.
_VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
    dtype=np.float64,
)


def _syllables(seconds: float, rate: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """(start, end) seconds of voiced syllables at about ``rate`` per second."""
    out, t = [], float(rng.uniform(0.02, 0.1))
    while t < seconds - 0.08:
        length = float(rng.uniform(0.6, 1.4)) / rate
        out.append((t, min(t + 0.75 * length, seconds - 0.02)))
        t += length
    return out or [(0.02, seconds - 0.02)]


def _envelope(times: np.ndarray, syllables: list[tuple[float, float]]) -> np.ndarray:
    """Raised-cosine loudness envelope in [0, 1] at ``times`` (seconds)."""
    env = np.zeros_like(times)
    for a, b in syllables:
        inside = (times >= a) & (times < b)
        env[inside] = np.sin(np.pi * (times[inside] - a) / (b - a)) ** 0.7
    return env


def _formants(z: np.ndarray, formants: np.ndarray, sr: int) -> np.ndarray:
    """Frequency response of parallel two-pole resonators at ``formants`` Hz, at ``z`` = e^-jw."""
    h = np.zeros_like(z)
    for freq, bandwidth, gain in zip(formants, (90, 110, 170), (1.0, 0.7, 0.35), strict=True):
        if freq < 0.45 * sr:
            r = math.exp(-math.pi * bandwidth / sr)
            h += (
                gain * (1 - r) / (1 - 2 * r * math.cos(2 * math.pi * freq / sr) * z + r * r * z * z)
            )
    return h


def _render_audio(
    utt: _Utt, perf: _Performance, syllables: list[tuple[float, float]], *, n: int, sr: int, rng
) -> np.ndarray:
    """Vowel-like voiced speech [T] f32: a sawtooth glottal source through formant resonators."""
    base = np.array(_VOICE["neutral"])
    ratio, slope, loud, _, bright = base + perf.voice_strength * (
        np.array(_VOICE[perf.voice]) - base
    )
    ratio *= float(rng.normal(1.0, 0.06))
    slope += float(rng.normal(0.0, 0.1))
    loud += float(rng.normal(0.0, 2.0))
    bright = float(np.clip(bright + rng.normal(0.0, 0.08), 0.0, 1.0))
    t = np.arange(n) / sr
    drift = np.cumsum(rng.normal(0.0, 1.0, n // 160 + 2))[np.arange(n) // 160] * 0.004
    f0 = _SPEAKER[utt.speaker].pitch * ratio * 2.0 ** (slope * (t / t[-1] - 0.5) + drift)
    f0 *= 1 + 0.015 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))  # vibrato
    phase = np.cumsum(f0) / sr
    source = 2.0 * (phase % 1.0) - 1.0  # sawtooth: all harmonics, 1/k
    # Filter in the frequency domain (padded so the short filter tails do not wrap around):
    # a one-pole low-pass from dark (strong) to bright (none), then the vowel's formants.
    size = 1 << int(math.ceil(math.log2(n + sr // 20)))
    spectrum = np.fft.rfft(source, size)  # [size/2 + 1]
    z = np.exp(-2j * np.pi * np.arange(len(spectrum)) / size)
    pole = 0.9 * (1.0 - bright)
    spectrum *= (1 - pole) / (1 - pole * z)
    owner = np.full(n, -1)  # syllable index per sample
    for i, (a, b) in enumerate(syllables):
        owner[int(a * sr) : int(b * sr)] = i
    vowels = rng.integers(len(_VOWELS), size=len(syllables))
    voiced = np.zeros(n)
    for v in np.unique(vowels):
        mask = np.isin(owner, np.flatnonzero(vowels == v))
        formants = _VOWELS[v] * float(rng.normal(1.0, 0.04))
        voiced[mask] = np.fft.irfft(spectrum * _formants(z, formants, sr), size)[:n][mask]
    voiced *= _envelope(t, syllables)
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-9
    y = voiced * 0.25 * 10 ** (loud / 20)
    y += rng.normal(0.0, 10 ** (float(rng.uniform(-50, -38)) / 20), n)  # room noise
    return np.clip(y, -0.99, 0.99).astype(np.float32)


class _Pen:
    """Anti-aliased cv2 drawing in face units: offsets from the face centre, in face sizes."""

    SHIFT = 4  # bits of sub-pixel precision

    def __init__(self, img: np.ndarray, cx: float, cy: float, unit: float) -> None:
        import cv2

        self.cv2, self.img, self.cx, self.cy, self.unit = cv2, img, cx, cy, unit

    def _xy(self, x: float, y: float) -> tuple[int, int]:
        one = 1 << self.SHIFT
        return round((self.cx + x * self.unit) * one), round((self.cy + y * self.unit) * one)

    def _len(self, v: float) -> int:
        return round(v * self.unit * (1 << self.SHIFT))

    def ellipse(self, x, y, rx, ry, color, *, start: int = 0, end: int = 360) -> None:
        cv2 = self.cv2
        axes = (self._len(rx), self._len(ry))
        cv2.ellipse(
            self.img, self._xy(x, y), axes, 0, start, end, color, -1, cv2.LINE_AA, self.SHIFT
        )

    def line(self, points: np.ndarray, color, width: float, fill: bool = False) -> None:
        """A polyline through ``points`` [N, 2] (face units), or the filled polygon."""
        cv2, one = self.cv2, 1 << self.SHIFT
        xy = np.round((np.array([self.cx, self.cy]) + points * self.unit) * one).astype(np.int32)
        if fill:
            cv2.fillPoly(self.img, [xy], color, cv2.LINE_AA, self.SHIFT)
        else:
            thickness = max(1, round(width * self.unit))
            cv2.polylines(self.img, [xy], False, color, thickness, cv2.LINE_AA, self.SHIFT)


def _draw_face(
    pen: _Pen, speaker: _Speaker, skin: tuple, *, curve: float, brow: float, opening: float
) -> None:
    """A frontal face: mouth ``curve`` > 0 smiles, < 0 frowns; ``brow`` > 0 raises the inner brow
    ends, < 0 furrows them; ``opening`` in [0, 1] opens the mouth (talking)."""
    pen.ellipse(0, -0.08, 0.32, 0.40, speaker.hair, start=180, end=360)
    pen.ellipse(0, 0, 0.30, 0.40, skin)
    shadow = tuple(int(c * 0.6) for c in skin)
    for side in (-1, 1):
        x = side * 0.12
        # A dark socket around each eye: OpenCV's Haar face features look for it, whatever the skin.
        pen.ellipse(x, -0.10, 0.08, 0.05, shadow)
        pen.ellipse(x, -0.10, 0.05, 0.026, (245, 245, 245))
        pen.ellipse(x, -0.10, 0.025, 0.025, (30, 30, 30))
        brow_line = np.array(
            [[side * 0.05, -0.18 - brow * 0.06], [side * 0.19, -0.19 + brow * 0.02]]
        )
        pen.line(brow_line, speaker.hair, 0.025)
    pen.line(np.array([[0.0, -0.06], [-0.02, 0.08]]), tuple(int(c * 0.75) for c in skin), 0.015)
    xs = np.linspace(-1.0, 1.0, 15)
    lift = 0.2 - curve * 0.12 * xs**2
    top = np.stack([0.13 * xs, lift - opening * 0.02 * (1 - xs**2)], 1)  # [15, 2]
    bottom = np.stack([0.13 * xs, lift + opening * 0.06 * (1 - xs**2)], 1)
    pen.line(np.concatenate([top, bottom[::-1]]), _MOUTH, 0, fill=True)
    pen.line(top, _MOUTH, 0.02)


_MOUTH = (90, 20, 30)


def _render_frames(
    utt: _Utt,
    perf: _Performance,
    syllables: list[tuple[float, float]],
    *,
    num_frames: int,
    render: _Render,
    rng: np.random.Generator,
) -> np.ndarray:
    """The drawn talking face, [F, H, W, 3] uint8 RGB; the mouth opens with the syllables."""
    w, h = render.width, render.height
    side = float(min(w, h))
    speaker = _SPEAKER[utt.speaker]
    sign = {"up": 1.0, "flat": 0.0, "down": -1.0}[perf.face]
    curve = sign * perf.face_strength + speaker.smile
    brow = sign * perf.face_strength * float(rng.uniform(0.5, 1.2))
    light = float(rng.uniform(0.85, 1.15))
    skin = tuple(int(min(255, c * light)) for c in speaker.skin)
    unit = side * float(rng.uniform(0.93, 1.07))  # head size
    talk = _envelope((np.arange(num_frames) + 0.5) / render.fps, syllables)  # [F]
    jitter = np.cumsum(rng.normal(0.0, 0.012 * side, (num_frames, 2)), axis=0)  # [F, 2] pixels
    jitter = np.clip(jitter, -0.05 * side, 0.05 * side)
    background = np.empty((h, w, 3), np.uint8)
    background[:] = utt.scene
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for i in range(num_frames):
        noise = rng.normal(0.0, 5.0, (h, w, 1))  # sensor noise, the same on all channels
        frames[i] = np.clip(background + noise, 0, 255)
        pen = _Pen(frames[i], w / 2 + jitter[i, 0], h / 2 + 0.02 * side + jitter[i, 1], unit)
        _draw_face(
            pen,
            speaker,
            skin,
            curve=curve + float(rng.normal(0.0, 0.15)),
            brow=brow + float(rng.normal(0.0, 0.15)),
            opening=0.8 * talk[i] + float(rng.uniform(0.0, 0.1)),
        )
    return frames


def _render(utt: _Utt, render: _Render) -> tuple[np.ndarray, np.ndarray]:
    """Frames [F, H, W, 3] uint8 and audio [T] f32 of one utterance, from its own seed."""
    rng = np.random.default_rng(utt.seed)
    perf = _perform(utt, rng)
    num_frames = max(2, round(utt.seconds * render.fps))
    seconds = num_frames / render.fps  # audio and video end together
    n = round(seconds * render.sample_rate)
    rate = float(np.array(_VOICE["neutral"])[3])
    rate += perf.voice_strength * (_VOICE[perf.voice][3] - rate)
    syllables = _syllables(seconds, rate * float(rng.normal(1.0, 0.08)), rng)
    audio = _render_audio(utt, perf, syllables, n=n, sr=render.sample_rate, rng=rng)
    frames = _render_frames(utt, perf, syllables, num_frames=num_frames, render=render, rng=rng)
    return frames, audio


# ---------------------------------------------------------------------------------------------
# Writing
def _digest(utt: _Utt, render: _Render) -> str:
    """What a clip was rendered from; a clip whose stored digest matches is not rendered again."""
    blob = json.dumps([VERSION, asdict(utt), asdict(render)], sort_keys=True)
    return "deepmsi-synthetic " + hashlib.sha1(blob.encode()).hexdigest()


def _stored_digest(path: Path) -> str | None:
    import av

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment")
    except (av.FFmpegError, OSError):
        return None


def _encode(path: Path, frames: np.ndarray, audio: np.ndarray, render: _Render, tag: str) -> None:
    """Writes an H.264 + AAC mp4 to a temporary name, then renames it into place."""
    import av

    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        container.metadata["comment"] = tag
        video = container.add_stream("libx264", rate=render.fps)
        video.width, video.height, video.pix_fmt = render.width, render.height, "yuv420p"
        # One thread (workers parallelise) and a constant quantiser: x264's CRF rate control
        # with its lookahead gave different pictures from run to run; this is deterministic.
        video.options = {"preset": "veryfast", "qp": "20", "threads": "1"}
        # The fast coder: about 3x less CPU than the default two-loop search.
        sound = container.add_stream("aac", rate=render.sample_rate, options={"aac_coder": "fast"})
        sound.layout = "mono"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        step = 1024  # AAC frame size
        for start in range(0, len(audio), step):
            chunk = np.ascontiguousarray(audio[None, start : start + step])  # [1, T'] planar
            samples = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            samples.sample_rate, samples.pts = render.sample_rate, start
            samples.time_base = Fraction(1, render.sample_rate)
            container.mux(sound.encode(samples))
        container.mux(sound.encode(None))


def _write_clip(job: tuple[_Utt, _Render, str]) -> bool:
    """Renders and writes one clip unless an identical one is already there; True if written."""
    utt, render, root = job
    path = Path(root) / utt.file
    tag = _digest(utt, render)
    if path.is_file() and _stored_digest(path) == tag:
        return False
    frames, audio = _render(utt, render)
    _encode(path, frames, audio, render, tag)
    return True


def _clock(seconds: float) -> str:
    """MELD's timestamp format, e.g. ``00:20:57,256``."""
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _write_csv(path: Path, rows: list[_Utt]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i, u in enumerate(rows, start=1):
            writer.writerow(
                [
                    i,
                    u.text,
                    u.speaker,
                    u.emotion,
                    SENTIMENT.get(u.emotion, "negative"),
                    u.dialogue,
                    u.turn,
                    u.season,
                    u.episode,
                    _clock(u.start),
                    _clock(u.start + u.seconds),
                ]
            )


def _check(*, seconds: float, fps: int, width: int, height: int, sample_rate: int, workers: int):
    if not seconds > 0:
        raise ConfigError(f"seconds must be > 0, got {seconds}")
    if not 1 <= fps <= 120:
        raise ConfigError(f"fps must be in 1..120, got {fps}")
    if width % 2 or height % 2 or min(width, height) < 32:
        raise ConfigError(f"size must be even and at least 32 pixels, got {width}x{height}")
    if sample_rate not in (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000):
        raise ConfigError(f"sample_rate {sample_rate} is not an AAC rate (e.g. 16000, 44100)")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")


def write_corpus(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    dialogues: int | None = None,
    utterances_per_dialogue: int | tuple[int, int] = (3, 8),
    splits: Sequence[float] | Sequence[int] = (0.7, 0.1, 0.2),
    seconds: float = 1.2,
    fps: int = 10,
    size: int | tuple[int, int] = 112,
    sample_rate: int = 16000,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Writes a synthetic corpus in MELD's layout under ``out_dir`` and returns its path.

    ``dialogues`` (default 110) are divided between train/dev/test by the ``splits`` fractions,
    or ``splits`` gives the number of dialogues per split as integers. Each dialogue has
    ``utterances_per_dialogue`` turns (an int or an inclusive (min, max) range). Clips last about
    ``seconds`` (x0.8 .. x1.25), at ``fps`` frames per second, ``size`` pixels (square, or
    (width, height)) and ``sample_rate`` Hz mono audio. The defaults give the demo corpus (about
    500 utterances); ``PRESETS["meld"]`` gives MELD's size. Re-running with the same arguments
    keeps the clips already written (each clip records what it was rendered from) and every file
    is written under a temporary name and renamed, so a killed run leaves no half-written file.
    The CSV tables are written last.
    """
    width, height = (size, size) if isinstance(size, int) else size
    _check(
        seconds=seconds,
        fps=fps,
        width=width,
        height=height,
        sample_rate=sample_rate,
        workers=workers,
    )
    root = Path(out_dir)
    utts = _plan(seed, dialogues, utterances_per_dialogue, splits, seconds)
    render = _Render(fps=fps, width=width, height=height, sample_rate=sample_rate)
    for folder in SPLIT_DIRS.values():
        (root / folder).mkdir(parents=True, exist_ok=True)

    from deepmsi.progress import progress as progress_bar

    jobs = [(u, render, str(root)) for u in utts]
    bar = progress_bar(total=len(jobs), desc="synthetic clips", unit="clip", enabled=progress)
    written = 0
    if workers == 1:
        for job in jobs:
            written += _write_clip(job)
            bar.update()
    else:
        import multiprocessing

        # spawn: safe even when the caller has started threads (torch, tokenizers).
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for done in pool.imap_unordered(_write_clip, jobs, chunksize=8):
                written += done
                bar.update()
    bar.close()
    for split, name in CSV_NAMES.items():
        _write_csv(root / name, [u for u in utts if u.split == split])
    counts = Counter(u.split for u in utts)
    log.info(
        "synthetic corpus in %s: %s utterances; %d clips written, %d kept",
        root,
        ", ".join(f"{s} {counts[s]}" for s in CSV_NAMES),
        written,
        len(utts) - written,
    )
    return root
