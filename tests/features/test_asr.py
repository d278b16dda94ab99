"""Speech recognition: a tiny random Whisper through the real loading and decoding path,
PocketSphinx's shipped models on a real clip, one-line errors, word error rates, and prepare
writing machine transcripts that the manifest counts."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from helpers_asr import write_tiny_whisper

from deepmsi.errors import ConfigError
from deepmsi.features.asr import (
    CHUNK_S,
    SAMPLE_RATE,
    TimedText,
    Transcript,
    _phrases,
    load_recognizer,
    normalise_words,
    word_errors,
)

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_SPHINX = importlib.util.find_spec("pocketsphinx") is not None


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory):
    return write_tiny_whisper(tmp_path_factory.mktemp("asr") / "tiny-whisper")


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * SAMPLE_RATE)).astype("f4")


def test_whisper_phrases_lie_inside_the_audio(whisper_dir):
    recognizer = load_recognizer(str(whisper_dir))
    for seconds in (3.0, CHUNK_S + 7.0):  # one window; two windows, the second offset by 30 s
        heard = recognizer.transcribe(_noise(seconds))
        assert isinstance(heard, Transcript) and heard.phrases
        assert heard.text == " ".join(p.text for p in heard.phrases)
        for p in heard.phrases:
            assert 0.0 <= p.start <= p.end <= seconds + 1e-6 and p.text.strip()
        assert [p.start for p in heard.phrases] == sorted(p.start for p in heard.phrases)
    assert max(p.end for p in heard.phrases) > CHUNK_S  # the second window was transcribed
    assert len(recognizer.version) == 12


def test_bad_sources_are_one_line_errors(tmp_path, whisper_dir):
    with pytest.raises(ConfigError, match="hf download") as err:
        load_recognizer(str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(err.value) and "\n" not in str(err.value)
    not_whisper = tmp_path / "not-whisper"
    not_whisper.mkdir()
    (not_whisper / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="not-whisper"):
        load_recognizer(str(not_whisper))
    with pytest.raises(ConfigError, match="SOURCE"):
        load_recognizer(" ")


def test_words_group_into_phrases_at_pauses():
    words = [TimedText(0.0, 0.3, "a"), TimedText(0.4, 0.7, "b"), TimedText(1.5, 1.8, "c")]
    assert _phrases(words, 0.5) == (TimedText(0.0, 0.7, "a b"), TimedText(1.5, 1.8, "c"))
    assert Transcript("a", (TimedText(0, 1, "a"),)).shifted(2).phrases == (TimedText(2, 3, "a"),)


def test_word_errors_match_a_hand_count():
    assert normalise_words("Okay--you're fine. [LAUGHTER] Who?") == [
        "okay",
        "you're",
        "fine",
        "who",
    ]
    assert word_errors("the cat sat", "the cat sat") == (0, 3)
    assert word_errors("the cat sat", "a cat sat down") == (2, 3)  # one substitution, one insertion
    assert word_errors("the cat sat", "") == (3, 3)
    assert word_errors("", "noise") == (1, 0)


@pytest.mark.realdata
@pytest.mark.skipif(not HAS_SPHINX, reason="pocketsphinx not installed (pip install deepmsi[asr])")
def test_pocketsphinx_hears_a_real_clip(shared_data):
    from deepmsi.data.media import decode_audio

    root = shared_data / "iemocap-clips"
    with (root / "labels.csv").open(newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["utterance_id"] == "Ses01F_impro02_M005")
    wave = decode_audio(root / row["file"], sample_rate=SAMPLE_RATE)
    heard = load_recognizer("pocketsphinx").transcribe(wave)
    seconds = len(wave) / SAMPLE_RATE
    assert len(heard.text.split()) >= 3 and all(
        0 <= p.start < p.end <= seconds for p in heard.phrases
    )
    assert "<" not in heard.text and "[" not in heard.text and "(" not in heard.text
    errors, words = word_errors(row["transcript"], heard.text)
    assert words == 20 and errors < 20  # it hears some of it (WER is measured in benchmarks/)


def test_prepare_transcribes_items_without_text(tmp_path, whisper_dir, tiny):
    """A folder dataset whose clips have no transcript: prepare writes machine transcripts,
    encodes them, and the manifest counts them; a re-run reuses them."""
    from deepmsi.data import load_dataset
    from deepmsi.features.preparation import PrepareOptions, prepare

    clips = tiny.clips[:3]
    folder = tmp_path / "folder"
    folder.mkdir()
    rows = ["file,emotion,transcript"]
    for i, clip in enumerate(clips):
        (folder / clip.name).write_bytes(clip.read_bytes())
        rows.append(f"{clip.name},joy,{'a human said this' if i == 0 else ''}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    options = PrepareOptions(frames=2, image_size=48, modalities="ta", asr=str(whisper_dir))
    result = prepare(load_dataset(f"folder:{folder}"), tmp_path / "cache", options)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["transcripts"]["human"] == 1
    assert manifest["transcripts"]["asr"] == str(whisper_dir)
    records = result.cache.records()
    assert sum(1 for r in records if r.text) == 1 + manifest["transcripts"]["machine"]
    assert next(r for r in records if r.text == "a human said this")
    again = prepare(load_dataset(f"folder:{folder}"), tmp_path / "cache", options)
    assert again.cached == 3 and again.prepared == 0


def test_an_uncached_hub_id_offline_is_one_line(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE") as err:
        load_recognizer("someone/no-such-whisper")
    assert "someone/no-such-whisper" in str(err.value) and "\n" not in str(err.value)
