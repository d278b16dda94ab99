"""Cutting long recordings on speech: the detectors against known speech times (synthetic, and
real clips joined with silence), phrase splitting, and ``predict`` without subtitles, with and
without a speech recogniser."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from helpers_asr import write_tiny_whisper
from helpers_inference import join_clips

from deepmsi.errors import ConfigError
from deepmsi.features.asr import SAMPLE_RATE, TimedText
from deepmsi.inference.predictor import Predictor
from deepmsi.inference.segmentation import (
    MAX_UTTERANCE_S,
    SpeechSegment,
    speech_regions,
    split_region,
)

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_SILERO = importlib.util.find_spec("silero_vad") is not None
DETECTORS = ["energy", pytest.param("silero", marks=pytest.mark.skipif(
    not HAS_SILERO, reason="silero-vad not installed (pip install deepmsi[asr])"))]  # fmt: skip
TOLERANCE_S = 0.5


def _voiced(seconds: float, f0: float, rng: np.random.Generator) -> np.ndarray:
    """Speech-like sound: harmonics of a wobbling f0, opened and closed at a syllable rate."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)) ** 2
    return (0.2 * wave * syllables).astype(np.float32)


def _layout(parts: list[tuple[str, float]], seed: int = 0) -> tuple[np.ndarray, list]:
    """Speech and silence in turn (with a faint noise floor); returns the wave and the true
    speech spans."""
    rng = np.random.default_rng(seed)
    waves, truth, t = [], [], 0.0
    for kind, seconds in parts:
        if kind == "speech":
            waves.append(_voiced(seconds, rng.uniform(110, 220), rng))
            truth.append((t, t + seconds))
        else:
            waves.append(np.zeros(int(seconds * SAMPLE_RATE), np.float32))
        t += seconds
    wave = np.concatenate(waves)
    return wave + rng.normal(0, 1e-3, len(wave)).astype(np.float32), truth


def _boundaries_match(found, truth, tol=TOLERANCE_S) -> bool:
    return len(found) == len(truth) and all(
        abs(a - ta) <= tol and abs(b - tb) <= tol
        for (a, b), (ta, tb) in zip(found, truth, strict=True)
    )


def test_synthetic_speech_between_silences():
    """The energy detector on harmonic bursts (Silero, a speech model, rightly hears no speech
    in them; it is checked on real clips below)."""
    parts = [("silence", 1.0), ("speech", 2.0), ("silence", 1.5), ("speech", 3.0)]
    parts += [("silence", 0.8), ("speech", 1.2), ("silence", 1.0)]
    wave, truth = _layout(parts)
    found = speech_regions(wave, detector="energy")
    assert _boundaries_match(found, truth), (found, truth)


def test_silence_and_steady_noise_are_no_speech():
    rng = np.random.default_rng(0)
    assert speech_regions(np.zeros(5 * SAMPLE_RATE, np.float32), detector="energy") == []
    hum = rng.normal(0, 0.01, 5 * SAMPLE_RATE).astype(np.float32)
    assert speech_regions(hum, detector="energy") == []
    assert speech_regions(np.zeros(100, np.float32)) == []  # shorter than any utterance


def test_long_speech_is_cut_below_the_limit():
    wave, _ = _layout([("speech", 2.0), ("silence", 0.2)] * 32)  # 70 s, pauses too short to cut
    found = speech_regions(wave, detector="energy")
    assert len(found) >= 3 and all(b - a <= MAX_UTTERANCE_S for a, b in found)
    assert found[0][0] == pytest.approx(0.0, abs=0.2)
    assert found[-1][1] == pytest.approx(70.3, abs=0.2)


def test_phrases_cut_a_region_between_them():
    phrases = [TimedText(1.2, 2.0, "hello there"), TimedText(3.0, 4.1, "how are you")]
    got = split_region(1.0, 4.5, phrases)
    assert got == [SpeechSegment(1.0, 2.5, "hello there"), SpeechSegment(2.5, 4.5, "how are you")]
    # Times outside the region are clipped; a sliver joins its neighbour; no words: no text.
    odd = [TimedText(0.0, 1.05, "a"), TimedText(1.1, 9.0, "b"), TimedText(9.0, 9.0, "c")]
    assert split_region(1.0, 4.5, odd) == [SpeechSegment(1.0, 4.5, "a b c")]
    assert split_region(1.0, 2.0, []) == [SpeechSegment(1.0, 2.0, "")]


# ---- predict ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return write_tiny_whisper(tmp_path_factory.mktemp("asr") / "tiny-whisper")


def test_predict_cuts_a_joined_video_on_speech(predictor, tiny, tmp_path, whisper_dir):
    video, _, cues = join_clips(tiny.clips[:5], tiny.texts[:5], tmp_path / "talk", gap=1.0)
    plain = Predictor(predictor.run, vad="energy")
    pred = plain.predict(video, speech=True)
    spans = [(s.start, s.end) for s in pred.segments]
    assert _boundaries_match(spans, [(a, b) for a, b, _ in cues]), (spans, cues)
    assert all(s.text is None and "text" not in s.modalities for s in pred.segments)
    assert pred.asr is None and pred.to_dict()["transcript_source"] is None
    # A 10-s video is one utterance unless asked; cutting on speech excludes a window.
    assert len(plain.predict(video).segments) == 1
    with pytest.raises(ConfigError, match="only one"):
        plain.predict(video, window=2.0, speech=True)

    heard = Predictor(predictor.run, vad="energy", asr=str(whisper_dir)).predict(video)
    assert len(heard.segments) == 1 and heard.segments[0].transcribed
    pred = Predictor(predictor.run, vad="energy", asr=str(whisper_dir)).predict(video, speech=True)
    for seg in pred.segments:
        assert seg.text_source == "asr" and "text" in seg.modalities
        assert any(a - TOLERANCE_S <= seg.start < seg.end <= b + TOLERANCE_S for a, b, _ in cues)
    out = json.loads(json.dumps(pred.to_dict()))
    assert out["asr"] == str(whisper_dir) and out["transcript_source"] == "asr"
    assert out["transcript"] == " ".join(s.text for s in pred.segments if s.text)


def test_a_missing_transcript_says_how_to_get_one(predictor, tiny, caplog):
    fresh = Predictor(predictor.run)
    with caplog.at_level("WARNING", logger="deepmsi.inference.predictor"):
        pred = fresh.predict(tiny.clips[0])
        fresh.predict(tiny.clips[1])
    assert "text" not in pred.segments[0].modalities
    warnings = [r.getMessage() for r in caplog.records if "no transcript" in r.getMessage()]
    assert len(warnings) == 1 and "--asr pocketsphinx" in warnings[0]


def test_cli_asr_errors_are_one_line(tiny, tmp_path, capsys):
    from deepmsi.cli import main

    missing = tmp_path / "no-model"
    assert main(["predict", "--run", str(tiny.run_dir), str(tiny.clips[0]), "--asr", str(missing)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-model" in err[0] and "pocketsphinx" in err[0]


# ---- real clips ------------------------------------------------------------------------------
def _real_clips(shared_data, n: int):
    root = shared_data / "iemocap-clips"
    with (root / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [root / r["file"] for r in rows[:n]], [r["transcript"] for r in rows[:n]]


@pytest.mark.realdata
@pytest.mark.parametrize("detector", DETECTORS)
def test_real_clips_joined_with_silence(shared_data, detector):
    """Eight real clips with 1.5 s of silence between them: no utterance crosses a join, each
    lies within its clip (0.5 s either side), and each clip with a second or more of speech
    (heard alone) gets at least one."""
    from deepmsi.data.media import decode_audio

    clips, _ = _real_clips(shared_data, 8)
    gap = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
    waves, spans, t = [], [], 0.0
    for clip in clips:
        wave = decode_audio(clip, sample_rate=SAMPLE_RATE)
        waves += [wave, gap]
        spans.append((t, t + len(wave) / SAMPLE_RATE))
        t += (len(wave) + len(gap)) / SAMPLE_RATE
    found = speech_regions(np.concatenate(waves), detector=detector)
    assert found
    for a, b in found:
        assert any(lo - TOLERANCE_S <= a < b <= hi + TOLERANCE_S for lo, hi in spans), (a, b)
    for (lo, hi), wave in zip(spans, waves[::2], strict=True):
        alone = speech_regions(wave, detector=detector)
        inside = [(a, b) for a, b in found if lo - TOLERANCE_S <= a and b <= hi + TOLERANCE_S]
        if sum(b - a for a, b in alone) >= 1.0:
            assert inside, (lo, hi, alone)


@pytest.mark.realdata
def test_cli_predict_real_video_with_asr(shared_data, tiny, tmp_path, whisper_dir, capsys):
    """Three real clips joined into one video, no transcript, no subtitles: `deepmsi predict
    --asr DIR --speech` gives machine-transcribed segments inside the clips."""
    from deepmsi.cli import main

    clips, texts = _real_clips(shared_data, 3)
    video, _, cues = join_clips(clips, texts, tmp_path / "real", gap=1.5)
    argv = ["predict", "--run", str(tiny.run_dir), str(video), "--speech", "--json"]
    assert main([*argv, "--asr", str(whisper_dir), "--no-contributions"]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert out["asr"] == str(whisper_dir) and out["segments"]
    for seg in out["segments"]:
        assert seg["text_source"] == "asr"
        assert any(
            a - TOLERANCE_S <= seg["start"] < seg["end"] <= b + TOLERANCE_S for a, b, _ in cues
        )
    assert {i for i, (a, b, _) in enumerate(cues) for s in out["segments"] if a <= s["start"] < b}


def test_serve_transcribes_uploads_without_a_transcript(predictor, tiny, whisper_dir):
    from fastapi.testclient import TestClient

    from deepmsi.serve import create_app

    heard = Predictor(predictor.run, asr=str(whisper_dir))
    clip = tiny.clips[0]
    with TestClient(create_app(predictor=heard)) as client:
        assert client.get("/health").json()["asr"] == str(whisper_dir)
        r = client.post("/predict", files={"file": (clip.name, clip.read_bytes(), "video/mp4")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["transcript_source"] == "asr" and body["asr"] == str(whisper_dir)
        assert body["segments"][0]["text_source"] == "asr"
        given = client.post(
            "/predict",
            files={"file": (clip.name, clip.read_bytes(), "video/mp4")},
            data={"transcript": "a human wrote this"},
        ).json()
        assert given["transcript_source"] == "given" and given["asr"] is None


def test_asking_for_silero_without_it_is_one_line(monkeypatch):
    from deepmsi.inference import segmentation

    monkeypatch.setattr(segmentation, "_silero", lambda: None)
    with pytest.raises(ConfigError, match="silero-vad"):
        speech_regions(np.zeros(SAMPLE_RATE, np.float32), detector="silero")
    assert segmentation.detector_name("auto") == "energy"
