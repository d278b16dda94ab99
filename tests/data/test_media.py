"""Media decoding on small clips written with PyAV in tmp, and on real CREMA-D and IEMOCAP clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_data import truncate, write_clip

from deepmsi.data import load_dataset
from deepmsi.data.media import FaceCropper, decode_audio, decode_frames, load_clip, probe
from deepmsi.data.records import Utterance
from deepmsi.errors import DataError

AAC_FRAME = 1024  # samples per AAC frame: the encoder pads the end to a whole frame


def peak_hz(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sample_rate)[spectrum.argmax()])


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "mp4": write_clip(root / "av.mp4", seconds=1.0, video=(64, 48, 10), audio=(44100, 2)),
        "wav": write_clip(root / "speech.wav", seconds=0.5, video=None, audio=(48000, 2)),
        "audio_only": write_clip(root / "audio_only.mp4", video=None, audio=(22050, 1)),
        "video_only": write_clip(root / "video_only.mp4", audio=None),
        "mkv": write_clip(root / "av.mkv", seconds=0.6, video=(32, 32, 10), audio=(16000, 1)),
    }


def test_mp4_audio_is_mono_16k_float32(clips):
    audio = decode_audio(clips["mp4"])
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.flags.c_contiguous
    # 1 s at 16 kHz; AAC may add up to one frame of encoder padding at the end, never lose any.
    assert 16000 <= len(audio) <= 16000 + round(16000 * AAC_FRAME / 44100)
    assert abs(peak_hz(audio, 16000) - 440) < 5  # resampled, not relabelled
    # Channels are averaged: a 0.5 tone in both channels stays 0.5 (a -3 dB downmix gives 0.35).
    assert 0.45 < np.abs(audio[1000:-1000]).max() < 0.55


def test_wav_audio_length_and_rate(clips):
    audio = decode_audio(clips["wav"])
    assert audio.dtype == np.float32 and len(audio) == 8000  # 0.5 s, 48 kHz stereo -> 16 kHz
    assert len(decode_audio(clips["wav"], sample_rate=8000)) == 4000
    assert abs(peak_hz(audio, 16000) - 440) < 5


def test_audio_segment(clips):
    audio = decode_audio(clips["wav"], start=0.1, end=0.35)
    assert abs(len(audio) - 4000) <= 1
    whole = decode_audio(clips["wav"])
    np.testing.assert_allclose(audio[100:-100], whole[1700:5500], atol=1e-4)
    with pytest.raises(DataError, match="no audio samples between"):
        decode_audio(clips["wav"], start=2.0, end=3.0)


def test_probe(clips):
    info = probe(clips["mp4"])
    assert (info.audio, info.video) == (True, True) and info.duration == pytest.approx(1.0, 0.05)
    assert (probe(clips["wav"]).audio, probe(clips["wav"]).video) == (True, False)
    assert (probe(clips["audio_only"]).audio, probe(clips["audio_only"]).video) == (True, False)
    assert (probe(clips["video_only"]).audio, probe(clips["video_only"]).video) == (False, True)


def test_missing_streams_give_none(clips):
    assert decode_frames(clips["audio_only"], num_frames=4) is None
    assert decode_audio(clips["audio_only"]) is not None
    assert decode_audio(clips["video_only"]) is None
    assert len(decode_frames(clips["video_only"], num_frames=4)) == 4
    assert decode_frames(clips["wav"], num_frames=2) is None


def test_decode_frames_picks_nearest_frames(clips):
    """10 frames at 10 fps, frame i has grey level 10 + 20 i; 4 targets at 0.125, 0.375, ... s."""
    frames = decode_frames(clips["mp4"], num_frames=4)
    assert len(frames) == 4
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    np.testing.assert_allclose([f.mean() for f in frames], [30, 90, 130, 190], atol=4)
    # More frames than the clip has: frames repeat, in time order.
    many = [f.mean() for f in decode_frames(clips["mp4"], num_frames=16)]
    assert len(many) == 16 and many == sorted(many)
    # A segment: targets at 0.5625 ... 0.9375 s.
    part = decode_frames(clips["mp4"], num_frames=4, start=0.5, end=1.0)
    np.testing.assert_allclose([f.mean() for f in part], [130, 150, 170, 190], atol=4)
    with pytest.raises(ValueError):
        decode_frames(clips["mp4"], num_frames=0)


def test_other_container(clips):
    assert len(decode_frames(clips["mkv"], num_frames=3)) == 3
    assert abs(len(decode_audio(clips["mkv"])) - 9600) <= round(16000 * AAC_FRAME / 16000)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "missing"])
def test_bad_files_raise_data_error_naming_them(tmp_path, damage):
    path = tmp_path / f"{damage}.mp4"
    if damage == "empty":
        path.touch()
    elif damage == "truncated":
        truncate(write_clip(path), keep=0.5)
    elif damage == "garbage":
        path.write_bytes(b"this is not a video " * 50)
    for decode in (probe, decode_audio, lambda p: decode_frames(p, num_frames=2)):
        with pytest.raises(DataError) as err:
            decode(path)
        assert err.value.path == str(path)
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    if damage == "empty":
        assert err.value.problem == "empty file (0 bytes)"


def test_face_cropper_falls_back_to_centre_crop():
    """No face in three colour bands: the crop is the centre square (all green), resized."""
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :50] = (255, 0, 0)
    image[:, 50:150] = (0, 255, 0)
    image[:, 150:] = (0, 0, 255)
    crop, found = FaceCropper(32)(image)
    assert not found and crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    assert (crop == (0, 255, 0)).all()
    blank = np.full((48, 64, 3), 128, np.uint8)
    crop, found = FaceCropper(96)(blank)  # upscaled when the frame is smaller than the crop
    assert not found and crop.shape == (96, 96, 3) and (crop == 128).all()
    with pytest.raises(ValueError):
        FaceCropper(0)


def test_load_clip(clips):
    path = clips["mp4"]
    utt = Utterance("u", "d", 0, "s", None, "joy", "train", video=path, audio=path, start=0.5)
    clip = load_clip(utt, num_frames=3, image_size=24)
    assert clip.frames.shape == (3, 24, 24, 3) and clip.frames.dtype == np.uint8  # [F, S, S, 3]
    assert clip.faces_found == 0
    assert 7900 <= len(clip.audio) <= 8000 + round(16000 * AAC_FRAME / 44100)  # cut at 0.5 s
    text_only = load_clip(
        Utterance("t", "d", 1, "s", "hi", "joy", "train"), num_frames=3, image_size=24
    )
    assert text_only.audio is None and text_only.frames is None


@pytest.mark.realdata
def test_real_crema_d_flv(shared_data):
    """FLV with a data stream first, VP6 video and MP3 audio: streams are found by type."""
    ds = load_dataset(f"folder:{shared_data / 'crema-d-clips'}")
    assert len(ds) == 6
    cropper = FaceCropper(64)
    for utt in ds.utterances:
        info = probe(utt.video)
        assert info.audio and info.video and 1.5 < info.duration < 2.5
        audio = decode_audio(utt.audio)
        assert abs(len(audio) / 16000 - info.duration) < 0.15 and np.abs(audio).max() > 0.01
        frames = decode_frames(utt.video, num_frames=4)
        assert len(frames) == 4 and frames[0].shape == (360, 480, 3)
        assert cropper(frames[1])[1]  # one frontal face per clip


@pytest.mark.realdata
def test_real_iemocap_clip(shared_data):
    [utt] = [u for u in load_dataset(f"folder:{shared_data / 'iemocap-clips'}").utterances[:1]]
    info = probe(utt.video)
    clip = load_clip(utt, num_frames=4, image_size=64)
    assert clip.frames.shape == (4, 64, 64, 3)
    assert abs(len(clip.audio) / 16000 - info.duration) < 0.1
