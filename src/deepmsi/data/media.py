"""Decode speech and face frames from any container PyAV reads (mp4, avi, flv, wav, flac, ...).

Streams are found by type, never by index (CREMA-D's FLV files put a data stream first). A file
without an audio or video stream gives that modality as ``None``; a file that cannot be read
(missing, empty, truncated, not media) raises a one-line ``DataError`` naming it.
PyAV and OpenCV are imported on first use so importing this module stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepmsi.data.records import Utterance
from deepmsi.errors import DataError

log = logging.getLogger(__name__)

# Seek (instead of decoding from the top) when a segment starts this far in, and land this much
# before it so demuxers that seek coarsely still start early enough.
SEEK_AFTER_S = 2.0
SEEK_MARGIN_S = 1.0


@dataclass(frozen=True)
class MediaInfo:
    """What a header probe finds: decodable audio/video streams and the duration (s, or None)."""

    audio: bool
    video: bool
    duration: float | None


@dataclass(frozen=True)
class Clip:
    """Decoded media of one utterance: ``audio`` [T] float32 mono, ``frames`` [F,S,S,3] uint8 RGB
    face crops, and how many of the F frames had a detected face (the rest are centre crops)."""

    audio: np.ndarray | None
    frames: np.ndarray | None
    faces_found: int


def _av():
    import av
    import av.logging

    av.logging.set_level(None)  # libav's own warnings would otherwise reach the user's terminal
    return av


@contextmanager
def _open(path: str | Path) -> Iterator:
    """An open input container; every libav failure becomes ``DataError(path, ...)``."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as err:
        raise DataError(path, f"unreadable media ({_reason(err)})") from None
    try:
        yield container
    except av.error.FFmpegError as err:
        raise DataError(path, f"corrupt media ({_reason(err)})") from None
    finally:
        container.close()


def _reason(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text[:1].lower() + text[1:]


def _decodable(stream) -> bool:
    ctx = getattr(stream, "codec_context", None)
    return ctx is not None and bool(ctx.name)


def probe(path: str | Path) -> MediaInfo:
    """Read only the container header (no decoding): fast enough for thousands of clips."""
    with _open(path) as container:
        audio = any(_decodable(s) for s in container.streams.audio)
        video = any(_decodable(s) for s in container.streams.video)
        duration = container.duration / 1_000_000 if container.duration else None
    return MediaInfo(audio, video, duration)


def _seek(container, stream, start: float | None) -> None:
    """Jump to a keyframe before ``start`` when that saves decoding; stay put if seeking fails."""
    if start is None or start < SEEK_AFTER_S or stream.time_base is None:
        return
    av = _av()
    try:
        container.seek(int((start - SEEK_MARGIN_S) / stream.time_base), stream=stream)
    except av.error.FFmpegError:
        log.debug("cannot seek in %s; decoding from the start", container.name)


def decode_audio(
    path: str | Path,
    *,
    sample_rate: int = 16000,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray | None:
    """Speech as float32 mono [T] at ``sample_rate``, cut to ``[start, end)`` seconds if given.

    Channels are averaged (not libswresample's -3 dB downmix) so a mono recording copied to two
    channels keeps its level. None when the file has no audio stream.
    """
    av = _av()
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        _seek(container, stream, start)
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks: list[np.ndarray] = []  # each [C, n]
        t0: float | None = None
        for frame in container.decode(stream):
            if t0 is None:
                t0 = frame.time or 0.0
            if end is not None and frame.time is not None and frame.time >= end:
                break
            chunks += [out.to_ndarray() for out in resampler.resample(frame)]
        chunks += [out.to_ndarray() for out in resampler.resample(None)]
    if not chunks:
        if start is None and end is None:
            raise DataError(path, "audio stream has no samples")
        raise DataError(path, f"no audio samples between {start} s and {end} s")
    audio = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)  # [C, T] -> [T]
    t0 = t0 or 0.0
    first = 0 if start is None else max(0, round((start - t0) * sample_rate))
    last = len(audio) if end is None else max(0, round((end - t0) * sample_rate))
    audio = audio[first:last]
    if audio.size == 0:
        raise DataError(path, f"no audio samples between {start} s and {end} s")
    return np.ascontiguousarray(audio, dtype=np.float32)


def decode_frames(
    path: str | Path,
    *,
    num_frames: int,
    start: float | None = None,
    end: float | None = None,
) -> list[np.ndarray] | None:
    """``num_frames`` RGB uint8 [H,W,3] frames at the centres of equal parts of the segment.

    Each target time takes the decoded frame nearest to it; decoding stops after the last one,
    and seeks first when the segment starts late in a long file. A video shorter than
    ``num_frames`` frames repeats frames. None when the file has no video stream.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    with _open(path) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        seg_start, seg_end = _segment(container, stream, start, end)
        step = (seg_end - seg_start) / num_frames
        targets = [seg_start + (i + 0.5) * step for i in range(num_frames)]
        _seek(container, stream, start)
        chosen = _nearest_frames(container.decode(stream), targets, stream)
    if not chosen:
        raise DataError(path, f"no video frames between {seg_start:.2f} s and {seg_end:.2f} s")
    arrays: dict[int, np.ndarray] = {}
    for frame in chosen:
        if id(frame) not in arrays:
            arrays[id(frame)] = frame.to_ndarray(format="rgb24")
    return [arrays[id(frame)] for frame in chosen]


def _segment(container, stream, start: float | None, end: float | None) -> tuple[float, float]:
    """The segment in seconds; the end comes from the header, else from a packet scan."""
    origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    seg_start = origin if start is None else start
    if end is not None:
        return seg_start, max(end, seg_start)
    if stream.duration is not None and stream.time_base is not None:
        return seg_start, max(origin + float(stream.duration * stream.time_base), seg_start)
    if container.duration:
        return seg_start, max(container.duration / 1_000_000, seg_start)
    last = seg_start
    for packet in container.demux(stream):  # no header duration (e.g. some FLV): scan packets
        if packet.pts is not None and packet.time_base is not None:
            last = max(last, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    container.seek(0)
    return seg_start, last


def _nearest_frames(frames, targets: list[float], stream) -> list:
    """For each target time (ascending), the decoded frame closest to it."""
    rate = float(stream.average_rate or 25)
    chosen: list = []
    prev: tuple[float, Any] | None = None  # (time, frame)
    for index, frame in enumerate(frames):
        t = frame.time if frame.time is not None else index / rate
        while len(chosen) < len(targets) and t >= targets[len(chosen)]:
            target = targets[len(chosen)]
            closer = prev if prev is not None and target - prev[0] <= t - target else None
            chosen.append(frame if closer is None else closer[1])
        if len(chosen) == len(targets):
            return chosen
        prev = (t, frame)
    if prev is None:
        return []
    return chosen + [prev[1]] * (len(targets) - len(chosen))


_CASCADES: dict[str, Any] = {}


def _cascade(name: str):
    """One of OpenCV's bundled Haar cascades, loaded once per process."""
    if name not in _CASCADES:
        import cv2

        path = Path(cv2.data.haarcascades) / f"haarcascade_{name}.xml"  # type: ignore[attr-defined]
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise DataError(path, "cannot load OpenCV's face detector")
        _CASCADES[name] = cascade
    return _CASCADES[name]


Box = tuple[int, int, int, int]  # x, y, w, h in pixels


class FaceCropper:
    """Square face crops of ``image_size`` pixels around the largest face, widened by ``margin``
    of its size on each side.

    A frame is searched with the frontal-face Haar cascade on a contrast-equalised grey copy
    (scaled to ``detect_size`` pixels on the short side; faces smaller than ``min_face`` of that
    side are ignored). For a clip (``crop_clip``) frames where no frontal face is found are also
    searched for a face in profile (both ways, at most ``profile_tries`` frames: the profile
    cascade is slow), and a frame still without a face borrows the box of the nearest frame that
    has one: a speaker's head barely moves within an utterance. A clip with no face at all gets
    centred crops of the picture area (letterbox bars removed).
    """

    def __init__(
        self,
        image_size: int,
        *,
        margin: float = 0.25,
        min_face: float = 0.05,
        detect_size: int = 480,
        profile_tries: int = 2,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.image_size = image_size
        self.margin = margin
        self.min_face = min_face
        self.detect_size = detect_size
        self.profile_tries = profile_tries
        self._frontal = _cascade("frontalface_default")

    def _grey(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.detect_size / min(grey.shape))
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return cv2.equalizeHist(grey), scale

    def _search(self, grey: np.ndarray, scale: float, cascade, flip: bool = False) -> Box | None:
        smallest = max(20, int(self.min_face * min(grey.shape)))
        image = grey[:, ::-1] if flip else grey
        faces = cascade.detectMultiScale(
            np.ascontiguousarray(image),
            scaleFactor=1.1,
            minNeighbors=4,
            minSize=(smallest, smallest),
        )
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        if flip:
            x = grey.shape[1] - x - w
        return (
            int(round(x / scale)),
            int(round(y / scale)),
            int(round(w / scale)),
            int(round(h / scale)),
        )

    def detect(self, frame: np.ndarray, *, profile: bool = False) -> Box | None:
        """The largest face in an RGB [H,W,3] frame as (x, y, w, h) pixels, or None."""
        grey, scale = self._grey(frame)
        box = self._search(grey, scale, self._frontal)
        if box is None and profile:
            side = _cascade("profileface")
            box = self._search(grey, scale, side) or self._search(grey, scale, side, flip=True)
        return box

    def crop(self, frame: np.ndarray, box: Box | None) -> np.ndarray:
        """The [S,S,3] uint8 square around ``box``, or the centre of the picture area if None."""
        import cv2

        height, width = frame.shape[:2]
        if box is None:
            top, bottom, left, right = _picture_area(frame)
            side = min(bottom - top, right - left)
            cx, cy = (left + right) / 2, (top + bottom) / 2
        else:
            x, y, w, h = box
            side = min(round(max(w, h) * (1 + 2 * self.margin)), height, width)
            cx, cy = x + w / 2, y + h / 2
        x0 = int(min(max(round(cx - side / 2), 0), width - side))
        y0 = int(min(max(round(cy - side / 2), 0), height - side))
        crop = frame[y0 : y0 + side, x0 : x0 + side]
        interp = cv2.INTER_AREA if side > self.image_size else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (self.image_size, self.image_size), interpolation=interp)
        return np.ascontiguousarray(crop)

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, bool]:
        """One RGB [H,W,3] uint8 frame -> ([S,S,3] uint8 crop, whether a face was found)."""
        box = self.detect(frame)
        return self.crop(frame, box), box is not None

    def crop_clip(self, frames: list[np.ndarray]) -> tuple[np.ndarray, int]:
        """F frames of one clip -> ([F,S,S,3] uint8 crops, frames where a face was detected)."""
        boxes: list[Box | None] = [self.detect(f) for f in frames]
        middle = (len(frames) - 1) / 2
        missing = sorted(
            (i for i, b in enumerate(boxes) if b is None), key=lambda i: abs(i - middle)
        )
        for i in missing[: self.profile_tries]:
            boxes[i] = self.detect(frames[i], profile=True)
        found = [i for i, b in enumerate(boxes) if b is not None]
        used = [
            boxes[min(found, key=lambda j: abs(j - i))] if found else None
            for i in range(len(frames))
        ]
        crops = np.stack([self.crop(f, b) for f, b in zip(frames, used, strict=True)])
        return crops, len(found)


def _picture_area(frame: np.ndarray, dark: int = 16) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the frame without black letterbox or pillarbox bars."""
    grey = frame.mean(axis=2)
    rows = np.flatnonzero(grey.mean(axis=1) > dark)
    cols = np.flatnonzero(grey.mean(axis=0) > dark)
    if len(rows) < 2 or len(cols) < 2:
        return 0, frame.shape[0], 0, frame.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def load_clip(
    utt: Utterance, *, num_frames: int, image_size: int, sample_rate: int = 16000
) -> Clip:
    """Audio and face crops of one utterance; a missing stream or path gives None for it.

    ``utt.start``/``utt.end`` cut the video; they cut the audio too when it is the same file
    (a separate audio file, such as IEMOCAP's per-sentence wav, is already the utterance).
    """
    audio = None
    if utt.audio is not None:
        same = utt.video is not None and Path(utt.audio) == Path(utt.video)
        segment = (utt.start, utt.end) if same else (None, None)
        audio = decode_audio(utt.audio, sample_rate=sample_rate, start=segment[0], end=segment[1])
    frames, faces = None, 0
    if utt.video is not None:
        raw = decode_frames(utt.video, num_frames=num_frames, start=utt.start, end=utt.end)
        if raw is not None:
            frames, faces = FaceCropper(image_size).crop_clip(raw)  # [F, S, S, 3]
    return Clip(audio, frames, faces)
