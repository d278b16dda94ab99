"""The three modalities: one alphabet, one validator, one tensor layout per modality.

Configs and the CLI name a subset by letters (``"tav"``, ``"ta"``: short to type, fixed order);
model inputs, outputs and reports use the full names. Video travels as uint8 frames
[..., F, S, S, 3] (what decoding gives and the cache stores) and enters the model as float
[..., F, 3, S, S] in [0, 1]; :func:`frames_to_float` is the one place that converts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepmsi.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

LETTERS = "tav"
NAMES = ("text", "audio", "video")
NAME_OF = dict(zip(LETTERS, NAMES, strict=True))  # "t" -> "text"
LETTER_OF = {name: letter for letter, name in NAME_OF.items()}  # "text" -> "t"


def parse_modalities(letters: str, what: str = "modalities") -> str:
    """Normalise a subset given by letters to canonical order (``"vt"`` -> ``"tv"``).

    Raises ConfigError for an empty string, an unknown letter or a repeated one.
    """
    if (
        not isinstance(letters, str)
        or not letters
        or set(letters) - set(LETTERS)
        or len(set(letters)) != len(letters)
    ):
        raise ConfigError(f"{what}={letters!r} must be a non-empty subset of {LETTERS!r}")
    return "".join(m for m in LETTERS if m in letters)


def names_of(letters: str) -> tuple[str, ...]:
    """Full names of a subset, in the fixed order text, audio, video."""
    return tuple(NAME_OF[m] for m in LETTERS if m in letters)


def letters_of(names: tuple[str, ...] | list[str]) -> str:
    """Letters of a collection of full names, in canonical order."""
    return "".join(LETTER_OF[n] for n in NAMES if n in names)


def frames_to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 frames [..., F, S, S, 3] -> float32 [..., F, 3, S, S] in [0, 1]."""
    import torch

    x = torch.as_tensor(frames)
    return x.movedim(-1, -3).float().div_(255.0)  # [..., F, S, S, 3] -> [..., F, 3, S, S]
