"""The synthetic corpus: MELD layout, real H.264+AAC clips, determinism, and complementary cues."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from helpers_data import MELD_COLUMNS  # the official header, written out independently of src

from deepmsi.cli import main
from deepmsi.demo.synthetic import CSV_NAMES, SPLIT_DIRS, write_corpus
from deepmsi.errors import ConfigError
from deepmsi.labels import MELD7

TINY = {"size": 64, "fps": 6, "seconds": 0.8, "progress": False}


def rows_of(root: Path) -> dict[str, list[dict]]:
    out = {}
    for split, name in CSV_NAMES.items():
        with open(root / name, encoding="utf-8", newline="") as f:
            out[split] = list(csv.DictReader(f))
    return out


def clip_of(root: Path, split: str, row: dict) -> Path:
    return root / SPLIT_DIRS[split] / f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}.mp4"


def decode(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Frames [F, H, W, 3] uint8, audio [T] f32 and stream facts of one clip."""
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        facts = {
            "video_codec": video.codec_context.name,
            "audio_codec": audio.codec_context.name,
            "sample_rate": audio.sample_rate,
            "channels": audio.codec_context.channels,
            "fps": float(video.average_rate),
        }
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        sound = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frames, sound, facts


def seconds_of(stamp: str) -> float:
    h, m, rest = stamp.split(":")
    s, ms = rest.split(",")
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 220 tiny utterances: enough for the complementarity check, fast to write."""
    return write_corpus(tmp_path_factory.mktemp("synth") / "meld", seed=0, dialogues=40, **TINY)


def test_layout_is_meld(corpus: Path) -> None:
    tables = rows_of(corpus)
    for split, rows in tables.items():
        with open(corpus / CSV_NAMES[split], encoding="utf-8", newline="") as f:
            assert next(csv.reader(f)) == MELD_COLUMNS
        assert [int(r["Sr No."]) for r in rows] == list(range(1, len(rows) + 1))
        assert {r["Emotion"] for r in rows} == set(MELD7.names), split  # every class, every split
        assert min(int(r["Dialogue_ID"]) for r in rows) == 0  # MELD numbers dialogues per split
        for r in rows:
            assert clip_of(corpus, split, r).is_file()
            assert r["Utterance"].strip() and r["Speaker"]
            assert re.fullmatch(r"\d\d:\d\d:\d\d,\d\d\d", r["StartTime"])
            assert seconds_of(r["EndTime"]) > seconds_of(r["StartTime"])
            expected = {"neutral": "neutral", "joy": "positive", "surprise": "positive"}
            assert r["Sentiment"] == expected.get(r["Emotion"], "negative")
        turns = Counter(r["Dialogue_ID"] for r in rows)
        assert min(turns.values()) >= 3 and max(turns.values()) <= 8
    every = [r for rows in tables.values() for r in rows]
    counts = Counter(r["Emotion"] for r in every)
    assert counts.most_common(1)[0][0] == "neutral"
    assert len({r["Speaker"] for r in every}) >= 4
    clips = {p.relative_to(corpus) for p in corpus.rglob("*.mp4")}
    assert len(clips) == len(every)
    assert not [p for p in corpus.rglob("*") if p.name.endswith(".tmp")]


def test_clips_are_h264_aac_and_decode(corpus: Path) -> None:
    rows = rows_of(corpus)["dev"]
    for r in rows:
        frames, sound, facts = decode(clip_of(corpus, "dev", r))
        assert facts["video_codec"] == "h264" and facts["audio_codec"] == "aac"
        assert facts["sample_rate"] == 16000 and facts["channels"] == 1
        assert frames.shape[1:] == (64, 64, 3)
        length = seconds_of(r["EndTime"]) - seconds_of(r["StartTime"])
        assert len(frames) == max(2, round(length * 6))
        # AAC pads the last frame: the decoded audio covers the video, plus < 2 AAC frames.
        assert 0 <= len(sound) / 16000 - len(frames) / 6 < 2 * 1024 / 16000 + 0.01
        assert 0.001 < np.sqrt(np.mean(sound**2)) < 1.0  # a sound, not silence
        assert frames.std() > 10  # a picture, not a flat frame


def test_faces_are_detected_by_haar(corpus: Path) -> None:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    rows = rows_of(corpus)["test"][:25]
    found = []
    for r in rows:
        frames, _, _ = decode(clip_of(corpus, "test", r))
        gray = cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_RGB2GRAY)
        found.append(len(cascade.detectMultiScale(gray, 1.1, 5, minSize=(24, 24))) > 0)
    assert np.mean(found) >= 0.8


def test_same_seed_same_corpus_whatever_the_workers(tmp_path: Path) -> None:
    options = dict(seed=5, dialogues=9, utterances_per_dialogue=(3, 4), **TINY)
    a = write_corpus(tmp_path / "a", workers=1, **options)
    b = write_corpus(tmp_path / "b", workers=2, **options)
    c = write_corpus(tmp_path / "c", workers=1, **{**options, "seed": 6})
    for name in CSV_NAMES.values():
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / CSV_NAMES["train"]).read_bytes() != (c / CSV_NAMES["train"]).read_bytes()
    clips = sorted(p.relative_to(a) for p in a.rglob("*.mp4"))
    assert clips == sorted(p.relative_to(b) for p in b.rglob("*.mp4"))
    for clip in clips:
        fa, sa, _ = decode(a / clip)
        fb, sb, _ = decode(b / clip)
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_array_equal(sa, sb)
    fc, _, _ = decode(c / clips[0])
    assert fa.shape != fc.shape or not np.array_equal(decode(a / clips[0])[0], fc)


def test_rerun_keeps_finished_clips_and_redoes_changed_ones(tmp_path: Path) -> None:
    options = dict(seed=1, dialogues=9, utterances_per_dialogue=3, **TINY)
    root = write_corpus(tmp_path, **options)
    clips = sorted(root.rglob("*.mp4"))
    before = {p: p.stat().st_mtime_ns for p in clips}
    clips[0].write_bytes(b"")  # a clip lost or damaged since
    write_corpus(tmp_path, **options)
    assert decode(clips[0])[0].shape[0] > 0
    assert all(p.stat().st_mtime_ns == before[p] for p in clips[1:])
    write_corpus(tmp_path, **{**options, "fps": 4})  # other settings: every clip redone
    assert all(p.stat().st_mtime_ns != before[p] for p in clips[1:])
    assert len(decode(clips[1])[0]) == max(2, round(float(_length(root, clips[1])) * 4))


def _length(root: Path, clip: Path) -> float:
    split = next(s for s, d in SPLIT_DIRS.items() if clip.parent.name == d)
    dia, utt = re.fullmatch(r"dia(\d+)_utt(\d+)\.mp4", clip.name).groups()
    row = next(
        r for r in rows_of(root)[split] if (r["Dialogue_ID"], r["Utterance_ID"]) == (dia, utt)
    )
    return seconds_of(row["EndTime"]) - seconds_of(row["StartTime"])


def test_a_killed_run_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    real = av.VideoFrame.from_ndarray
    calls = {"n": 0}

    def killed_mid_clip(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 22:  # the 5th clip or so, with its file open and half written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", killed_mid_clip)
    with pytest.raises(KeyboardInterrupt):
        write_corpus(tmp_path, seed=2, dialogues=9, utterances_per_dialogue=3, **TINY)
    monkeypatch.undo()
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert 2 <= len(left) < 27 and all(p.suffix == ".mp4" for p in left)  # no temp file, no CSV
    for path in left:
        assert len(decode(path)[0]) >= 2
    write_corpus(tmp_path, seed=2, dialogues=9, utterances_per_dialogue=3, **TINY)  # resumes
    assert len(list(tmp_path.rglob("*.mp4"))) == 27


@pytest.mark.parametrize(
    "options",
    [
        {"size": 63},
        {"size": (64, 16)},
        {"splits": (0.5, 0.1, 0.1)},
        {"splits": (5, 2, 2), "dialogues": 10},
        {"splits": (0.8, 0.1)},
        {"dialogues": 2},
        {"utterances_per_dialogue": (4, 2)},
        {"fps": 0},
        {"seconds": 0},
        {"sample_rate": 12345},
        {"workers": 0},
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, options: dict) -> None:
    with pytest.raises(ConfigError):
        write_corpus(tmp_path, **{**TINY, **options})
    assert not list(tmp_path.rglob("*.mp4"))


def test_cli_writes_and_reports_counts(tmp_path: Path, capsys) -> None:
    argv = ["synth", "--out", str(tmp_path), "--dialogues", "9", "--utterances-per-dialogue", "3"]
    argv += ["--size", "64", "--fps", "6", "--seconds", "0.8", "--splits", "3", "3", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out
    assert re.search(r"train\s+9 utterances\s+3 dialogues", out)
    assert len(list(tmp_path.rglob("*.mp4"))) == 27
    assert main(["synth", "--out", str(tmp_path), "--size", "63"]) == 2


# ---------------------------------------------------------------------------------------------
# Complementarity: each modality alone is clearly worse than the three together.
def audio_features(sound: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Loudness, pitch (autocorrelation), pitch slope, brightness and syllable-rate statistics."""
    hop, win = sr // 100, sr // 25
    frames = np.lib.stride_tricks.sliding_window_view(sound, win)[::hop]  # [N, win]
    db = 20 * np.log10(np.sqrt((frames**2).mean(1)) + 1e-6)
    voiced = db > db.max() - 20
    windowed = frames[voiced] * np.hanning(win)
    spectrum = np.abs(np.fft.rfft(windowed, 2 * win)) ** 2
    autocorr = np.fft.irfft(spectrum)[:, :win]
    lo, hi = sr // 400, sr // 70
    pitch = np.log2(sr / (lo + np.argmax(autocorr[:, lo:hi], 1)))
    when = np.flatnonzero(voiced) / len(frames)
    slope = np.polyfit(when, pitch, 1)[0] if len(pitch) > 2 else 0.0
    freqs = np.fft.rfftfreq(2 * win, 1 / sr)
    centroid = (spectrum * freqs).sum(1) / (spectrum.sum(1) + 1e-9)
    envelope = np.convolve(db, np.ones(5) / 5, "same")
    onsets = np.sum(np.diff((envelope > np.median(envelope)).astype(int)) == 1)
    return np.array(
        [
            db[voiced].mean(),
            db[voiced].std(),
            np.median(pitch),
            pitch.std(),
            slope,
            np.log(centroid.mean()),
            onsets / (len(sound) / sr),
            voiced.mean(),
        ]
    )


def video_features(frames: np.ndarray, grid: int = 16) -> np.ndarray:
    """The mean grey face region, downsampled to grid x grid pixels."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    h, w = gray[0].shape
    side = int(0.9 * min(h, w))
    y, x = (h - side) // 2, (w - side) // 2
    small = [
        cv2.resize(g[y : y + side, x : x + side], (grid, grid), interpolation=cv2.INTER_AREA)
        for g in gray
    ]
    return np.mean(small, 0).reshape(-1) / 255.0


def test_modalities_are_complementary(corpus: Path) -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = [(s, r) for s, table in rows_of(corpus).items() for r in table]
    labels = np.array([r["Emotion"] for _, r in rows])
    text = CountVectorizer().fit_transform([r["Utterance"] for _, r in rows]).toarray()
    audio, video = [], []
    for split, r in rows:
        frames, sound, _ = decode(clip_of(corpus, split, r))
        audio.append(audio_features(sound))
        video.append(video_features(frames))
    views = {"text": text, "audio": np.array(audio), "video": np.array(video)}
    views["all"] = np.hstack([StandardScaler().fit_transform(v) for v in views.values()])
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    accuracy = {}
    for name, x in views.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        predicted = cross_val_predict(model, x, labels, cv=folds)
        accuracy[name] = float(np.mean(predicted == labels))
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    for name in ("text", "audio", "video"):
        assert accuracy[name] > majority + 0.05, (name, accuracy, majority)  # each carries a cue
        assert accuracy["all"] > accuracy[name] + 0.1, accuracy  # ... but only part of it
