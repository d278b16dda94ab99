"""Shared by the inference tests: a tiny trained run (the ``tiny`` and ``predictor`` fixtures of
conftest.py build it once per session), and a long video with subtitles made by joining clips."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# A few seconds of work on 2 cores: 4 dialogues of short, small synthetic clips, the tiny model
# on 2 frames of 48 px, one epoch. The real text encoder and spectral audio features are used, so
# the run's manifest names the same encoders a real run would.
CORPUS = {
    "dialogues": 4,
    "utterances_per_dialogue": 7,
    "seconds": 1.0,
    "fps": 8,
    "size": 64,
    "splits": (2, 1, 1),
}
PREPARE = {"frames": 2, "image_size": 48}
TRAIN = {"epochs": 1, "batch_size": 8, "patience": 0}


@dataclass(frozen=True)
class TinyRun:
    run_dir: Path
    corpus: Path
    cache: Path
    clips: list[Path]  # the corpus's mp4 clips, in CSV order
    texts: list[str]  # their transcripts


def build_tiny_run(root: Path) -> TinyRun:
    """Synthetic corpus -> prepare -> train the tiny preset for one epoch, under ``root``."""
    import torch

    from deepmsi.config import model_preset, train_preset
    from deepmsi.data import load_dataset
    from deepmsi.data.dataset import FeatureStore
    from deepmsi.demo.synthetic import write_corpus
    from deepmsi.features.preparation import PrepareOptions, prepare
    from deepmsi.training.loop import train

    torch.manual_seed(0)
    corpus = write_corpus(root / "corpus", seed=0, progress=False, **CORPUS)
    dataset = load_dataset(f"meld:{corpus}")
    cache = root / "cache"
    prepare(dataset, cache, PrepareOptions(**PREPARE))
    run_dir = root / "run"
    train(
        FeatureStore(cache),
        run_dir,
        model_preset("tiny", modality_dropout=0.2),
        train_preset("cpu", seed=0, **TRAIN),
        progress=False,
    )
    utts = [u for u in dataset.utterances if u.video is not None and u.video.is_file()]
    return TinyRun(run_dir, corpus, cache, [u.video for u in utts], [u.text or "" for u in utts])


def join_clips(clips: list[Path], texts: list[str], out: Path, *, gap: float = 0.4):
    """One mp4 of ``clips`` played in turn with ``gap`` seconds of black silence between them,
    plus an SRT with one cue per clip (its transcript). Returns (video path, srt path, cues as
    (start, end, text))."""
    import av
    import numpy as np

    first = av.open(str(clips[0]))
    v0 = first.streams.video[0]
    width, height, fps = v0.width, v0.height, int(round(float(v0.average_rate or 10)))
    rate = first.streams.audio[0].rate if first.streams.audio else 16000
    first.close()

    video_path = out.with_suffix(".mp4")
    cues: list[tuple[float, float, str]] = []
    with av.open(str(video_path), "w") as dst:
        vs = dst.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        aus = dst.add_stream("aac", rate=rate, layout="mono")
        n_video = n_audio = 0

        def put_frames(rgb: list[np.ndarray]) -> None:
            nonlocal n_video
            for img in rgb:
                frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
                frame.pts = n_video
                n_video += 1
                for packet in vs.encode(frame):
                    dst.mux(packet)

        def put_audio(samples: np.ndarray) -> None:
            nonlocal n_audio
            for lo in range(0, len(samples), 1024):
                chunk = samples[lo : lo + 1024].astype(np.float32)[None]  # [1, n]
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate, n_audio
                n_audio += chunk.shape[1]
                for packet in aus.encode(frame):
                    dst.mux(packet)

        def pad_to(t: float) -> None:  # video and audio both reach time t
            put_frames([np.zeros((height, width, 3), np.uint8)] * max(0, round(t * fps) - n_video))
            put_audio(np.zeros(max(0, round(t * rate) - n_audio), np.float32))

        for clip, text in zip(clips, texts, strict=True):
            start = n_video / fps
            with av.open(str(clip)) as src:
                frames = [f.to_ndarray(format="rgb24") for f in src.decode(src.streams.video[0])]
            from deepmsi.data.media import decode_audio

            wave = decode_audio(clip, sample_rate=rate)
            put_frames(frames)
            put_audio(wave if wave is not None else np.zeros(0, np.float32))
            end = max(n_video / fps, n_audio / rate)
            pad_to(end)
            cues.append((round(start, 3), round(end, 3), text))
            pad_to(end + gap)
        for packet in vs.encode(None):
            dst.mux(packet)
        for packet in aus.encode(None):
            dst.mux(packet)

    srt_path = out.with_suffix(".srt")
    srt_path.write_text(
        "".join(
            f"{i}\n{_srt_time(a)} --> {_srt_time(b)}\n{t}\n\n"
            for i, (a, b, t) in enumerate(cues, 1)
        )
    )
    return video_path, srt_path, cues


def _srt_time(t: float) -> str:
    ms = round(t * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def corpus_rows(corpus: Path, split: str = "test") -> list[dict]:
    """Rows of a synthetic corpus's CSV (``Utterance``, ``Emotion``...)."""
    name = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
    with (corpus / name[split]).open(newline="") as f:
        return list(csv.DictReader(f))
