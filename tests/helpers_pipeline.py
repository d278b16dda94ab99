"""A small feature cache written directly (no media, no encoders), for training tests.

Each class shifts the mean of the text, audio and frame features, so a model can learn it; some
utterances lack a modality, as in real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepmsi.data.cache import (
    ITEMS,
    MANIFEST,
    UTTERANCES,
    Features,
    item_key,
    record_to_dict,
    write_item,
    write_json,
    write_jsonl,
)
from deepmsi.data.records import Utterance
from deepmsi.labels import LabelSet

LABELS = LabelSet("toy4", ("calm", "joy", "anger", "sadness"))
TEXT_DIM, AUDIO_DIM, FRAMES, SIZE = 12, 10, 2, 48


def make_cache(path: Path, *, n: int = 80, seed: int = 0) -> Path:
    """``n`` utterances in dialogues of 5 turns; splits train/dev/test by dialogue (60/20/20)."""
    rng = np.random.default_rng(seed)
    (path / ITEMS).mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        dialogue = i // 5
        split = ("train", "train", "train", "dev", "test")[dialogue % 5]
        k = int(rng.integers(len(LABELS)))
        utt = Utterance(
            f"d{dialogue}_u{i % 5}",
            f"d{dialogue}",
            i % 5,
            f"s{i % 3}",
            f"utterance {i}",
            LABELS.names[k],
            split,
        )
        text = (rng.normal(size=TEXT_DIM) + 1.5 * np.eye(TEXT_DIM)[k]).astype(np.float32)
        audio = (rng.normal(size=AUDIO_DIM) + 1.5 * np.eye(AUDIO_DIM)[k]).astype(np.float32)
        frames = rng.integers(0, 60, (FRAMES, SIZE, SIZE, 3)) + 40 * k
        features = Features(
            text if i % 7 else None,  # some utterances have no transcript ...
            audio if i % 11 else None,  # ... no audio ...
            frames.astype(np.uint8) if i % 13 else None,  # ... or no video
            faces=0,
        )
        write_item(path / ITEMS / f"{item_key(utt.id)}.npz", features)
        records.append(utt)
    return _write_index(path, "toy", records, frames=FRAMES, image_size=SIZE)


def _write_index(path: Path, dataset: str, records: list[Utterance], **manifest) -> Path:
    """The manifest (toy text and audio encoders, plus ``manifest``) and the utterance table."""
    write_json(
        path / MANIFEST,
        {
            "format": 1,
            "dataset": dataset,
            "labels": LABELS.to_dict(),
            "text_encoder": {"name": "toy-text", "version": "1", "dim": TEXT_DIM},
            "audio_encoder": {"name": "toy-audio", "version": "1", "dim": AUDIO_DIM},
            **manifest,
            "sample_rate": 16000,
        },
    )
    write_jsonl(path / UTTERANCES, [record_to_dict(r) for r in records])
    return path


def make_dialogue_cache(path: Path, *, dialogues: int = 40, turns: int = 6, seed: int = 0) -> Path:
    """Text + audio only, where a turn's own features say nothing about its label: each turn
    carries the class of the *next* turn (a turn "announces" the emotion that follows). Only a
    model that reads the previous turn can label turns 1.. (turn 0 is a guess); utterance by
    utterance every turn is at chance. Splits by dialogue as in :func:`make_cache`."""
    rng = np.random.default_rng(seed)
    (path / ITEMS).mkdir(parents=True, exist_ok=True)
    records = []
    for d in range(dialogues):
        split = ("train", "train", "train", "dev", "test")[d % 5]
        ys = rng.integers(len(LABELS), size=turns + 1)  # ys[turns]: announced by the last turn
        for t in range(turns):
            utt = Utterance(
                f"c{d}_u{t}",
                f"c{d}",
                t,
                f"s{(d + t) % 2}",
                f"turn {t}",
                LABELS.names[int(ys[t])],
                split,
            )
            nxt = int(ys[t + 1])
            text = rng.normal(size=TEXT_DIM) + 3.0 * np.eye(TEXT_DIM)[nxt]
            audio = rng.normal(size=AUDIO_DIM) + 3.0 * np.eye(AUDIO_DIM)[nxt]
            features = Features(text.astype(np.float32), audio.astype(np.float32), None, faces=0)
            write_item(path / ITEMS / f"{item_key(utt.id)}.npz", features)
            records.append(utt)
    return _write_index(path, "toy-dialogue", records)
