"""Small generated inputs for reader, media and inspect tests: MELD CSVs and clips written with
PyAV (no real data)."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_clip(
    path: Path,
    *,
    seconds: float = 1.0,
    video: tuple[int, int, int] | None = (64, 48, 10),
    audio: tuple[int, int] | None = (44100, 2),
    fmt: str | None = None,
) -> Path:
    """Write a clip: ``video`` = (width, height, fps) as H.264, ``audio`` = (rate, channels) as
    AAC (mp4 and friends) or 16-bit PCM (wav); None leaves that stream out.

    Frame i is a grey level ramp (value 10 + 20 i) so a test can tell frames apart; the audio is a
    440 Hz tone at amplitude 0.5 in every channel.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    is_wav = path.suffix.lower() == ".wav"
    with av.open(str(path), "w", format=fmt) as container:
        vstream = astream = None
        if video is not None:
            width, height, fps = video
            vstream = container.add_stream("libx264", rate=fps)
            vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
            vstream.options = {"preset": "ultrafast", "threads": "1"}
        if audio is not None:
            rate, channels = audio
            layout = "mono" if channels == 1 else "stereo"
            if is_wav:
                astream = container.add_stream("pcm_s16le", rate=rate, layout=layout)
            else:
                astream = container.add_stream("aac", rate=rate, layout=layout)
        if vstream is not None:
            for i in range(round(seconds * fps)):
                image = np.full((height, width, 3), (10 + 20 * i) % 256, dtype=np.uint8)
                container.mux(vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(vstream.encode(None))
        if astream is not None:
            total = round(seconds * rate)
            t = np.arange(total) / rate
            wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            step = 1024
            for start in range(0, total, step):
                chunk = np.repeat(wave[None, start : start + step], channels, axis=0)  # [C, n]
                if is_wav:
                    pcm = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)  # packed [1, n*C]
                    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
                else:
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate, frame.pts = rate, start
                frame.time_base = Fraction(1, rate)
                container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


MELD_COLUMNS = [
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
]


def write_meld_csv(
    path: Path, rows: list[tuple], columns: list[str] = MELD_COLUMNS, encoding: str = "utf-8"
) -> Path:
    """``rows``: (dialogue, utterance, speaker, emotion, text) in file order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for i, (dia, utt, speaker, emotion, text) in enumerate(rows, 1):
            writer.writerow(
                {
                    "Sr No.": i,
                    "Utterance": text,
                    "Speaker": speaker,
                    "Emotion": emotion,
                    "Sentiment": "neutral",
                    "Dialogue_ID": dia,
                    "Utterance_ID": utt,
                    "Season": 1,
                    "Episode": 1,
                    "StartTime": "00:00:01,000",
                    "EndTime": "00:00:02,000",
                }
            )
    return path
