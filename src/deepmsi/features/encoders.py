"""The frozen encoders of a cache, built in one place for ``prepare`` and for ``predict``.

A cache's manifest names its encoders; a run records that manifest. :func:`encoders_from_manifest`
rebuilds exactly those encoders from it, so a prediction encodes its input the way the training
data was encoded (``test_features_match_the_cache_and_probabilities_match_the_model`` in
``tests/inference/test_predictor.py`` checks the vectors agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepmsi.errors import ConfigError

if TYPE_CHECKING:
    from deepmsi.features.audio import AudioEncoder
    from deepmsi.features.text import TextEncoder

DEFAULT_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Encoders:
    """The text and audio encoders of a cache (None for a modality it does not hold)."""

    text: TextEncoder | None
    audio: AudioEncoder | None


def build_encoders(
    text: str | None, audio: str | None, *, sample_rate: int = DEFAULT_SAMPLE_RATE
) -> Encoders:
    """Encoders by name: ``text`` a Hugging Face id or folder (or "minilm"), ``audio``
    "spectral" or a wav2vec2-style id or folder; None skips that modality."""
    from deepmsi.features.audio import audio_encoder
    from deepmsi.features.text import TextEncoder

    return Encoders(
        text=TextEncoder(text) if text else None,
        audio=audio_encoder(audio, sample_rate=sample_rate) if audio else None,
    )


def encoders_from_manifest(manifest: Mapping[str, Any], modalities: str = "ta") -> Encoders:
    """The encoders a cache manifest names, for the modalities asked (letters of "ta")."""
    names = {}
    for letter, key in (("t", "text_encoder"), ("a", "audio_encoder")):
        if letter not in modalities:
            continue
        spec = manifest.get(key) or {}
        if not spec.get("name"):
            raise ConfigError(f"the run's cache manifest names no {key.replace('_', ' ')}")
        names[letter] = spec["name"]
    rate = int(manifest.get("sample_rate") or DEFAULT_SAMPLE_RATE)
    return build_encoders(names.get("t"), names.get("a"), sample_rate=rate)
