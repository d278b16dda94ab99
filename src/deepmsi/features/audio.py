"""Frozen audio encoders: one fixed-size vector per utterance.

Two kinds, behind the same small interface (``name``, ``version``, ``dim``, ``sample_rate``,
``encode(waves) -> [N, D]``):

- ``SpectralEncoder`` ("spectral", the default here): fixed, deterministic statistics of speech
  (log-mel, MFCC and deltas, pitch, energy, voice quality, spectral shape, rhythm) in numpy.
  NOTE(paper): the paper uses a pretrained wav2vec 2.0. This machine is offline and has no
  pretrained speech weights, and a randomly initialised wav2vec2 gives meaningless features, so
  the default is a hand-designed descriptor set that needs no weights, is cheap enough to run in
  the decoding workers, and carries the prosodic cues (pitch, loudness, tempo, voice quality)
  that speech emotion depends on.
- ``Wav2Vec2Encoder``: any wav2vec2-style Hugging Face id or local folder (AutoFeatureExtractor +
  AutoModel), mean-pooled hidden states; use it where such weights exist.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np

from deepmsi.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPECTRAL_VERSION = "spectral-v1"


class AudioEncoder(Protocol):
    """What ``prepare`` needs from an audio encoder.

    ``in_worker`` says the encoder is cheap, picklable and needs no model, so ``prepare`` runs it
    in the decoding worker processes instead of batching it in the main process.
    """

    name: str
    sample_rate: int
    in_worker: bool

    @property
    def version(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, waves: list[np.ndarray]) -> np.ndarray: ...


# ----------------------------------------------------------------------------- spectral helpers


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
    """Triangular HTK-style mel filters, area-normalised: [n_mels, n_fft // 2 + 1] float32."""
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / (centre - lower)
    down = (upper - freqs[None, :]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= 2.0 / (upper - lower)  # equal area, as in librosa's "slaney" norm
    return fb.astype(np.float32)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: [n_in, n_out] float32 (MFCC = log-mel @ matrix)."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    m = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    m[:, 0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def frame_signal(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Overlapping frames of a 1-D signal, zero-padded at the end: [T] -> [N, length] (a view)."""
    if len(x) < length:
        x = np.pad(x, (0, length - len(x)))
    n = 1 + (len(x) - length + hop - 1) // hop
    x = np.pad(x, (0, (n - 1) * hop + length - len(x)))
    return np.lib.stride_tricks.sliding_window_view(x, length)[::hop]


def _deltas(x: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas along time (axis 0) as in HTK: [N, C] -> [N, C]."""
    n = len(x)
    if n < 2:
        return np.zeros_like(x)
    pad = np.pad(x, ((width, width), (0, 0)), mode="edge")
    num = sum(
        k * (pad[width + k : width + k + n] - pad[width - k : width - k + n])
        for k in range(1, width + 1)
    )
    return num / (2 * sum(k * k for k in range(1, width + 1)))


def _slope(y: np.ndarray, t: np.ndarray) -> float:
    """Least-squares slope of y over t (0 when fewer than two points)."""
    if len(y) < 2:
        return 0.0
    tc = t - t.mean()
    den = float(tc @ tc)
    return float(tc @ (y - y.mean()) / den) if den > 0 else 0.0


def _moments(x: np.ndarray, axis: int = 0) -> list[np.ndarray]:
    """Mean and standard deviation along an axis; zeros when empty."""
    if x.shape[axis] == 0:
        shape = x.shape[:axis] + x.shape[axis + 1 :]
        return [np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
    return [x.mean(axis), x.std(axis)]


def _contour_stats(y: np.ndarray, t: np.ndarray) -> list[float]:
    """9 functionals of a 1-D contour: mean, std, p10, p50, p90, p90-p10, slope, |delta| mean,
    delta std."""
    if len(y) == 0:
        return [0.0] * 9
    p10, p50, p90 = np.percentile(y, [10, 50, 90])
    d = np.diff(y) if len(y) > 1 else np.zeros(1)
    return [
        float(y.mean()),
        float(y.std()),
        p10,
        p50,
        p90,
        p90 - p10,
        _slope(y, t),
        float(np.abs(d).mean()),
        float(d.std()),
    ]


def yin_pitch(
    x: np.ndarray,
    sample_rate: int,
    hop: int,
    *,
    fmin: float = 60.0,
    fmax: float = 600.0,
    window: int | None = None,
    threshold: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame-wise F0 by YIN (de Cheveigne & Kawahara 2002), vectorised over frames.

    x [T] -> (f0 [N] in Hz, 0 where unvoiced; aperiodicity [N], the CMND minimum, 0 = periodic).
    """
    tau_min = max(2, int(sample_rate / fmax))
    tau_max = int(np.ceil(sample_rate / fmin))
    w = window or tau_max  # integration window, one period of the lowest F0
    frames = frame_signal(x.astype(np.float64), w + tau_max + 1, hop)  # [N, W + tau_max + 1]
    nfft = 1 << int(np.ceil(np.log2(frames.shape[1] + w)))
    spec_full = np.fft.rfft(frames, nfft)
    spec_head = np.fft.rfft(frames[:, :w], nfft)
    r = np.fft.irfft(np.conj(spec_head) * spec_full, nfft)[:, : tau_max + 1]  # [N, tau_max+1]
    sq = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)  # [N, L + 1]
    taus = np.arange(tau_max + 1)
    energy_tau = sq[:, taus + w] - sq[:, taus]  # sum_{j=tau}^{tau+w-1} x_j^2
    d = np.maximum(energy_tau[:, :1] + energy_tau - 2.0 * r, 0.0)  # [N, tau_max+1]
    cum = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
    search = cmnd[:, tau_min : tau_max + 1]
    below = search < threshold
    has = below.any(axis=1)
    idx = np.where(has, below.argmax(axis=1), search.argmin(axis=1))
    rows = np.arange(len(search))
    for _ in range(tau_max - tau_min):  # slide down to the local minimum after the first dip
        step = (idx + 1 < search.shape[1]) & (
            search[rows, np.minimum(idx + 1, search.shape[1] - 1)] < search[rows, idx]
        )
        if not step.any():
            break
        idx = idx + step
    aper = search[rows, idx]
    # parabolic interpolation around the minimum for sub-sample lag
    left = search[rows, np.maximum(idx - 1, 0)]
    right = search[rows, np.minimum(idx + 1, search.shape[1] - 1)]
    den = left - 2 * aper + right
    shift = np.where(np.abs(den) > 1e-12, 0.5 * (left - right) / np.where(den == 0, 1, den), 0.0)
    lag = idx + tau_min + np.clip(shift, -1, 1)
    f0 = np.where(aper < threshold + 0.15, sample_rate / lag, 0.0)
    return f0.astype(np.float32), aper.astype(np.float32)


@dataclass
class SpectralEncoder:
    """Fixed, deterministic speech statistics: wave [T] at 16 kHz -> feature [D] float32.

    Frames of 25 ms every 10 ms. Statistics are taken over active frames (energy within 40 dB of
    the loudest frame), so leading and trailing silence does not dilute them. Groups (see
    ``feature_names``): log-mel (64 bands: mean, std, p10/p50/p90 over active frames, and mean
    over voiced frames), MFCC 40 + deltas + delta-deltas (mean, std), pitch (YIN: voiced
    fraction, F0 semitone functionals, aperiodicity), loudness contour, spectral shape (centroid,
    bandwidth, roll-off, flatness, flux, zero-crossing rate, tilt, band energy ratios), rhythm
    (syllable-peak rate, pause fraction, voiced-segment rate and length) and the modulation
    spectrum of the loudness envelope.
    """

    n_mels: int = 64
    n_mfcc: int = 40
    sample_rate: int = SAMPLE_RATE
    name: str = "spectral"
    in_worker: bool = field(default=True, init=False)

    win: int = field(default=400, init=False)  # 25 ms
    hop: int = field(default=160, init=False)  # 10 ms
    n_fft: int = field(default=512, init=False)

    @property
    def version(self) -> str:
        return f"{SPECTRAL_VERSION}-mel{self.n_mels}-mfcc{self.n_mfcc}"

    @cached_property
    def _mel(self) -> np.ndarray:
        return mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, 50.0, self.sample_rate / 2)

    @cached_property
    def _dct(self) -> np.ndarray:
        return dct_matrix(self.n_mels, self.n_mfcc)

    @cached_property
    def _window(self) -> np.ndarray:
        return np.hanning(self.win + 2)[1:-1].astype(np.float32)

    @cached_property
    def feature_names(self) -> list[str]:
        """One name per output dimension, ``group.stat[index]``."""
        names: list[str] = []
        for stat in ("mean", "std", "p10", "p50", "p90", "voiced_mean"):
            names += [f"logmel.{stat}[{i}]" for i in range(self.n_mels)]
        for part in ("mfcc", "mfcc_d", "mfcc_dd"):
            for stat in ("mean", "std"):
                names += [f"{part}.{stat}[{i}]" for i in range(self.n_mfcc)]
        contour = ("mean", "std", "p10", "p50", "p90", "range", "slope", "dabs", "dstd")
        names += ["pitch.voiced_fraction", "pitch.aper_mean", "pitch.aper_std"]
        names += [f"pitch.st.{s}" for s in contour]
        names += [f"loudness.{s}" for s in contour]
        names += ["loudness.active_fraction", "loudness.peak_db"]
        for feat in (
            "centroid",
            "bandwidth",
            "rolloff",
            "flatness",
            "flux",
            "zcr",
            "tilt",
            "alpha",
            "hammarberg",
        ):
            names += [f"spectral.{feat}.mean", f"spectral.{feat}.std"]
        names += [
            "rhythm.peak_rate",
            "rhythm.pause_fraction",
            "rhythm.voiced_rate",
            "rhythm.voiced_len_mean",
            "rhythm.voiced_len_std",
            "rhythm.active_seconds",
        ]
        names += [f"modulation.{lo}-{hi}Hz" for lo, hi in _MOD_BANDS]
        return names

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    def encode(self, waves: list[np.ndarray]) -> np.ndarray:
        """waves: N mono float arrays [T] at ``sample_rate`` -> [N, D] float32."""
        out = np.zeros((len(waves), self.dim), np.float32)
        for i, w in enumerate(waves):
            out[i] = self.encode_one(w)
        return out

    def encode_one(self, wave: np.ndarray) -> np.ndarray:
        """One waveform [T] -> [D] float32. Deterministic; silence or empty input gives zeros."""
        x = np.asarray(wave, dtype=np.float32).reshape(-1)
        if x.size < self.win or not np.isfinite(x).all() or np.abs(x).max() < 1e-6:
            return np.zeros(self.dim, np.float32)
        x = x - x.mean()
        x = np.append(x[0], x[1:] - 0.97 * x[:-1])  # pre-emphasis: flatten the speech tilt
        frames = frame_signal(x, self.win, self.hop) * self._window  # [N, win]
        power = np.abs(np.fft.rfft(frames, self.n_fft)) ** 2  # [N, n_fft/2+1]
        mel = power @ self._mel.T  # [N, n_mels]
        logmel = np.log(mel + 1e-10).astype(np.float32)
        frame_db = 10 * np.log10(power.sum(1) + 1e-10)  # [N]
        active = frame_db > frame_db.max() - 40.0
        pitch_x = _downsample2(x) if self.sample_rate >= 16000 else x
        pitch_sr = self.sample_rate // 2 if self.sample_rate >= 16000 else self.sample_rate
        f0, aper = yin_pitch(pitch_x, pitch_sr, self.hop * pitch_sr // self.sample_rate)
        n = min(len(f0), len(frame_db))
        f0, aper = f0[:n], aper[:n]
        voiced = np.zeros(len(frame_db), bool)
        voiced[:n] = (f0 > 0) & active[:n]

        feats: list[np.ndarray | list[float]] = []
        act = logmel[active]
        feats += _moments(act)
        feats += list(np.percentile(act, [10, 50, 90], axis=0))
        feats.append(logmel[voiced].mean(0) if voiced.any() else act.mean(0))
        mfcc = logmel @ self._dct  # [N, n_mfcc]
        d1 = _deltas(mfcc)
        d2 = _deltas(d1)
        for part in (mfcc, d1, d2):
            feats += _moments(part[active])
        feats.append(self._pitch(f0, aper, voiced[:n]))
        feats.append(self._loudness(frame_db, active))
        feats.append(self._spectral(power, frames, active))
        feats.append(self._rhythm(frame_db, active, voiced))
        feats.append(_modulation(frame_db, active, 1000.0 / (self.hop * 1000 / self.sample_rate)))
        vec = np.concatenate([np.asarray(f, np.float32).reshape(-1) for f in feats])
        return np.nan_to_num(vec, nan=0.0, posinf=0.0, neginf=0.0)

    def _pitch(self, f0: np.ndarray, aper: np.ndarray, voiced: np.ndarray) -> list[float]:
        t = np.arange(len(f0)) * self.hop / self.sample_rate
        st = 12 * np.log2(np.maximum(f0[voiced], 1.0) / 100.0)  # semitones re 100 Hz
        if len(st) >= 5:
            from scipy.signal import medfilt

            st = medfilt(st, 5)  # remove isolated octave errors
        a = aper[voiced]
        return [
            float(voiced.mean()),
            *(_moments(a) if len(a) else [0.0, 0.0]),
            *_contour_stats(st, t[voiced]),
        ]

    def _loudness(self, frame_db: np.ndarray, active: np.ndarray) -> list[float]:
        t = np.arange(len(frame_db)) * self.hop / self.sample_rate
        return [
            *_contour_stats(frame_db[active], t[active]),
            float(active.mean()),
            float(frame_db.max()),
        ]

    def _spectral(self, power: np.ndarray, frames: np.ndarray, active: np.ndarray) -> list[float]:
        p = power[active]  # [Na, K]
        freqs = np.linspace(0, self.sample_rate / 2, p.shape[1])
        total = p.sum(1) + 1e-10
        centroid = (p @ freqs) / total
        bandwidth = np.sqrt((p @ freqs**2) / total - centroid**2 + 1e-6)
        cum = np.cumsum(p, 1)
        rolloff = freqs[np.minimum((cum < 0.85 * cum[:, -1:]).sum(1), len(freqs) - 1)]
        flatness = np.exp(np.log(p + 1e-10).mean(1)) / (p.mean(1) + 1e-10)
        mag = np.sqrt(p)
        mag_n = mag / (mag.sum(1, keepdims=True) + 1e-10)
        flux = np.r_[0.0, np.sqrt((np.diff(mag_n, axis=0) ** 2).sum(1))] if len(p) > 1 else [0.0]
        sign = np.signbit(frames[active])
        zcr = (sign[:, 1:] != sign[:, :-1]).mean(1)
        logp = 10 * np.log10(p + 1e-10)
        lf = np.log10(np.maximum(freqs, 50.0))
        # tilt: slope of the dB spectrum over log-frequency (50 Hz to 5 kHz)
        band = (freqs >= 50) & (freqs <= 5000)
        lfc = lf[band] - lf[band].mean()
        tilt = (logp[:, band] - logp[:, band].mean(1, keepdims=True)) @ lfc / (lfc @ lfc)
        low, high = (freqs >= 50) & (freqs < 1000), (freqs >= 1000) & (freqs < 5000)
        alpha = 10 * np.log10((p[:, high].sum(1) + 1e-10) / (p[:, low].sum(1) + 1e-10))
        lo_peak = logp[:, (freqs >= 0) & (freqs < 2000)].max(1)
        hi_peak = logp[:, (freqs >= 2000) & (freqs < 5000)].max(1)
        hammarberg = lo_peak - hi_peak
        out: list[float] = []
        for v in (
            centroid / 1000,
            bandwidth / 1000,
            rolloff / 1000,
            flatness,
            flux,
            zcr,
            tilt,
            alpha,
            hammarberg,
        ):
            v = np.asarray(v, np.float64)
            out += [float(v.mean()), float(v.std())]
        return out

    def _rhythm(self, frame_db: np.ndarray, active: np.ndarray, voiced: np.ndarray) -> list[float]:
        from scipy.signal import find_peaks

        fps = self.sample_rate / self.hop
        idx = np.flatnonzero(active)
        span = frame_db[idx[0] : idx[-1] + 1]  # from first to last active frame
        seconds = len(span) / fps
        smooth = np.convolve(span, np.ones(5) / 5, mode="same")  # 50 ms smoothing
        peaks, _ = find_peaks(
            smooth, prominence=4.0, distance=int(0.1 * fps), height=frame_db.max() - 30.0
        )
        pause = float((~active[idx[0] : idx[-1] + 1]).mean())
        v = voiced[idx[0] : idx[-1] + 1].astype(np.int8)
        edges = np.diff(np.r_[0, v, 0])
        lengths = (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)) / fps
        return [
            len(peaks) / seconds,
            pause,
            len(lengths) / seconds,
            *(_moments(lengths) if len(lengths) else [0.0, 0.0]),
            seconds,
        ]


_MOD_BANDS = ((0.5, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 16.0))


def _modulation(frame_db: np.ndarray, active: np.ndarray, fps: float) -> list[float]:
    """Share of loudness-envelope energy in modulation bands (syllable and phrase rhythm)."""
    idx = np.flatnonzero(active)
    env = frame_db[idx[0] : idx[-1] + 1]
    env = env - env.mean()
    n = max(256, 1 << int(np.ceil(np.log2(len(env)))))
    spec = np.abs(np.fft.rfft(env * np.hanning(len(env)), n)) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / fps)
    total = spec[(freqs >= _MOD_BANDS[0][0]) & (freqs < _MOD_BANDS[-1][1])].sum() + 1e-10
    return [float(spec[(freqs >= lo) & (freqs < hi)].sum() / total) for lo, hi in _MOD_BANDS]


def _downsample2(x: np.ndarray) -> np.ndarray:
    """Halve the sample rate with an anti-alias filter (pitch needs < 4 kHz)."""
    from scipy.signal import resample_poly

    return resample_poly(x, 1, 2).astype(np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling [T] -> [T * target / orig] float32."""
    if orig_sr == target_sr:
        return np.asarray(wave, np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(orig_sr, target_sr)
    return resample_poly(wave, target_sr // g, orig_sr // g).astype(np.float32)


class Wav2Vec2Encoder:
    """A frozen wav2vec2-style model (Hugging Face id or local folder): waves -> [N, D] float32,
    the mean of the last hidden states over time. Loaded on first use; pickles as its name."""

    in_worker = False
    sample_rate = SAMPLE_RATE

    def __init__(self, name: str, *, max_seconds: float = 20.0) -> None:
        self.name = name
        self.max_seconds = max_seconds

    def __getstate__(self) -> dict:
        return {"name": self.name, "max_seconds": self.max_seconds}

    def __setstate__(self, state: dict) -> None:
        # Fields only: the loaded model (a cached property) is rebuilt on first use.
        self.__dict__.update(name=state["name"], max_seconds=state["max_seconds"])

    @cached_property
    def _loaded(self):
        from transformers import AutoFeatureExtractor, AutoModel

        from deepmsi.features.text import load_pretrained

        extractor, model = load_pretrained("audio", self.name, AutoFeatureExtractor, AutoModel)
        rate = getattr(extractor, "sampling_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise ConfigError(f"audio encoder {self.name!r} expects {rate} Hz, not {SAMPLE_RATE}")
        return extractor, model

    @property
    def dim(self) -> int:
        return int(self._loaded[1].config.hidden_size)

    @cached_property
    def version(self) -> str:
        config = self._loaded[1].config.to_dict()
        text = repr(sorted((k, repr(v)) for k, v in config.items()))
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def encode(self, waves: list[np.ndarray]) -> np.ndarray:
        """One wave at a time (no padding, so a clip's vector never depends on its batch)."""
        import torch

        extractor, model = self._loaded
        limit = int(self.max_seconds * SAMPLE_RATE)
        out = np.zeros((len(waves), self.dim), np.float32)
        with torch.inference_mode():
            for i, wave in enumerate(waves):
                x = np.asarray(wave, np.float32).reshape(-1)[:limit]
                if x.size < 400:  # shorter than the first conv's receptive field
                    x = np.pad(x, (0, 400 - x.size))
                inputs = extractor(x, sampling_rate=SAMPLE_RATE, return_tensors="pt")
                hidden = model(**inputs).last_hidden_state  # [1, T', D]
                out[i] = hidden.mean(1)[0].float().numpy()
        return out


def audio_encoder(name: str = "spectral", *, sample_rate: int = SAMPLE_RATE) -> AudioEncoder:
    """``spectral`` (the built-in descriptor set) or a wav2vec2-style id or folder."""
    if name == "spectral":
        return SpectralEncoder(sample_rate=sample_rate)
    if sample_rate != SAMPLE_RATE:
        raise ConfigError(f"wav2vec2-style encoders take {SAMPLE_RATE} Hz audio, not {sample_rate}")
    return Wav2Vec2Encoder(name)
