"""deepmsi: multimodal emotion recognition (DeepMSI-MER) from raw media to predictions.

The public API, one line per step (names load on first use, so ``import deepmsi`` stays light)::

    ds = deepmsi.load_dataset("meld:data/MELD")                     # utterance table
    deepmsi.inspect_dataset(ds)                                       # what is there, broken
    deepmsi.prepare(ds, "cache", deepmsi.PrepareOptions(frames=8))    # frozen features + faces
    deepmsi.finetune_text(ds, "encoder", deepmsi.FinetuneOptions())  # optional: text encoder
    deepmsi.train("cache", "run", deepmsi.model_preset("cpu"), deepmsi.train_preset("cpu"))
    deepmsi.evaluate("run", split="test", out="eval")                 # report.json
    deepmsi.Predictor.from_run("run").predict("clip.mp4", text="hi")  # a Prediction
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": "deepmsi.data.spec",
    "inspect_dataset": "deepmsi.data.inventory",
    "prepare": "deepmsi.features.preparation",
    "PrepareOptions": "deepmsi.features.preparation",
    "finetune_text": "deepmsi.features.finetune",
    "FinetuneOptions": "deepmsi.features.finetune",
    "model_preset": "deepmsi.config",
    "ModelConfig": "deepmsi.config",
    "train": "deepmsi.training.loop",
    "train_preset": "deepmsi.config",
    "TrainConfig": "deepmsi.config",
    "evaluate": "deepmsi.evaluation.scoring",
    "Predictor": "deepmsi.inference.predictor",
    "Prediction": "deepmsi.inference.results",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deepmsi' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
