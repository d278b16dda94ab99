"""ONNX export of the fusion model: cached features and face frames in, class probabilities out.

The graph takes what a feature cache holds, so a deployment needs the feature encoders (text,
audio, face crops) plus this file, and no torch:

    text          [B, Dt]  float32   sentence embedding
    audio         [B, Da]  float32   utterance audio feature
    frames        [B, F, 3, S, S] float32 in [0, 1]   face crops
    text_present, audio_present, video_present   [B] bool   (False: use the learned placeholder)
    -> probabilities [B, K] float32 (softmax of the logits)

Only the modalities the run was trained with are inputs. B is dynamic.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from deepmsi.atomic import atomic_path
from deepmsi.errors import DataError
from deepmsi.modalities import frames_to_float

if TYPE_CHECKING:
    from deepmsi.models.deepmsi import DeepMSI
    from deepmsi.runs.folder import Run

__all__ = [
    "ExportResult",
    "ProbabilityModel",
    "check_feed",
    "export_onnx",
    "onnx_inputs",
    "run_onnx",
]

log = logging.getLogger(__name__)

OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    """Where the graph went, its input names in order, and the largest |onnx - torch| seen on the
    check batch (None when the check was skipped)."""

    path: Path
    inputs: tuple[str, ...]
    max_abs_diff: float | None


class ProbabilityModel(nn.Module):
    """A ``DeepMSI`` as a function of positional tensors: (features..., masks...) -> [B, K]
    softmax probabilities.

    ``DeepMSI.fuse(traceable=True)``: the video backbone runs on every sample and the placeholder
    is swapped in afterwards (no data-dependent branch in the traced graph); same numbers as
    ``DeepMSI.forward``, which the parity check compares against.
    """

    def __init__(self, model: DeepMSI) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(model.names)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        n = len(self.names)
        inputs: dict[str, torch.Tensor | None] = dict(zip(self.names, args[:n], strict=True))
        mask = dict(zip(self.names, args[n:], strict=True))
        return torch.softmax(self.model.fuse(inputs, mask, traceable=True).logits, dim=-1)


def input_names(model: DeepMSI) -> tuple[str, ...]:
    """ONNX input names for a model: feature inputs in modality order, then presence masks."""
    names = tuple(model.names)
    feature = {"text": "text", "audio": "audio", "video": "frames"}
    return tuple(feature[n] for n in names) + tuple(f"{n}_present" for n in names)


def onnx_inputs(
    model: DeepMSI,
    text: np.ndarray | None = None,
    audio: np.ndarray | None = None,
    frames: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The ONNX feed for a batch: text [B, Dt], audio [B, Da], frames [B, F, S, S, 3] uint8 (as
    cached) or [B, F, 3, S, S] float in [0, 1]; a missing modality is zeros marked absent."""
    cfg = model.cfg
    given = [x for x in (text, audio, frames) if x is not None]
    if not given:
        raise ValueError("onnx_inputs needs at least one of text, audio, frames")
    b = len(given[0])
    if frames is not None and frames.dtype == np.uint8:
        frames = frames_to_float(frames).numpy()  # -> [B, F, 3, S, S]
    shapes = {
        "text": (b, cfg.text_dim),
        "audio": (b, cfg.audio_dim),
        "video": (b, cfg.frames, 3, cfg.image_size, cfg.image_size),
    }
    values = {"text": text, "audio": audio, "video": frames}
    feed: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for name, key in zip(model.names, input_names(model), strict=False):
        x = values[name]
        masks[f"{name}_present"] = np.full(b, x is not None)
        feed[key] = np.zeros(shapes[name], np.float32) if x is None else x.astype(np.float32)
    return feed | masks


def export_onnx(
    model: DeepMSI,
    path: str | Path,
    *,
    check_inputs: dict[str, np.ndarray] | None = None,
) -> ExportResult:
    """Write ``model`` (a DeepMSI) to ``path`` as ONNX and, given ``check_inputs`` (an
    ``onnx_inputs`` feed), compare onnxruntime's probabilities with torch's on it."""
    path = Path(path)
    wrapper = ProbabilityModel(model).eval()
    names = input_names(model)
    cfg = model.cfg
    b = 2
    example = {
        "text": torch.zeros(b, cfg.text_dim),
        "audio": torch.zeros(b, cfg.audio_dim),
        "frames": torch.zeros(b, cfg.frames, 3, cfg.image_size, cfg.image_size),
    }
    args = tuple(example[k] if k in example else torch.ones(b, dtype=torch.bool) for k in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.register_custom_op_symbolic("aten::argsort", _argsort_symbolic, OPSET)
    try:
        with atomic_path(path) as tmp:
            _export(wrapper, args, tmp, names)
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::argsort", OPSET)
    log.info("exported %s (inputs %s)", path, ", ".join(names))
    diff = None
    if check_inputs is not None:
        diff = max_abs_diff(model, path, check_inputs)
        log.info("onnxruntime vs torch: max |diff| = %.2e", diff)
    return ExportResult(path, names, diff)


def _export(wrapper: nn.Module, args: tuple, path: Path, names: tuple[str, ...]) -> None:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and trace notes
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            dynamo=False,  # NOTE: the torch.export path needs onnxscript, which is not installed
            input_names=list(names),
            output_names=["probabilities"],
            dynamic_axes={k: {0: "batch"} for k in (*names, "probabilities")},
            opset_version=OPSET,
            do_constant_folding=True,
        )


def _argsort_symbolic(g, x, *args):
    """``aten::argsort`` for ONNX, including the ``stable=`` overload VSC uses.

    The stock symbolic only knows ``argsort(x, dim, descending)`` and misreads the stable
    overload ``argsort(x, stable, dim, descending)``. ONNX TopK over the whole axis is a stable
    sort: the spec breaks ties by the lower index, as ``stable=True`` requires.
    """
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as sh

    dim, descending = (args[-2], args[-1])
    dim = sh._get_const(dim, "i", "dim")
    descending = sh._get_const(descending, "b", "descending")
    size = g.op(
        "Gather", g.op("Shape", x), g.op("Constant", value_t=torch.tensor([dim], dtype=torch.int64))
    )
    _, indices = g.op("TopK", x, size, axis_i=dim, largest_i=int(descending), sorted_i=1, outputs=2)
    return indices


def run_onnx(path: str | Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    """Probabilities [B, K] from an exported graph with onnxruntime (CPU)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise DataError(path, f"cannot load ONNX model: {err}") from None
    wanted = {i.name for i in session.get_inputs()}
    return session.run(["probabilities"], {k: v for k, v in feed.items() if k in wanted})[0]


def torch_probabilities(model: DeepMSI, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The same probabilities from the torch model's own ``forward`` (the reference)."""
    tensors = {k: torch.from_numpy(v) for k, v in feed.items()}
    present = {n: tensors[f"{n}_present"] for n in model.names}
    with torch.inference_mode():
        out = model(
            text=tensors.get("text"),
            audio=tensors.get("audio"),
            frames=tensors.get("frames"),
            present=present,
        )
        return torch.softmax(out.logits, dim=-1).numpy()


def max_abs_diff(model: DeepMSI, path: str | Path, feed: dict[str, np.ndarray]) -> float:
    return float(np.abs(run_onnx(path, feed) - torch_probabilities(model, feed)).max())


def check_feed(run: Run, n: int = 8, *, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """A feed to check an export on, and where it came from: up to ``n`` items of the run's
    feature cache when it still exists, else random features and frames of the right shapes."""
    model = run.model
    if run.cache_path and Path(run.cache_path).is_dir():
        from deepmsi.data.cache import FeatureCache

        cache = FeatureCache(Path(run.cache_path))
        records = cache.records()[:n]
        if records:
            items = [cache.load(r.id) for r in records]
            feed = _stack_items(model, items)
            return feed, f"{len(items)} cached items of {run.cache_path}"
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    feed = onnx_inputs(
        model,
        rng.standard_normal((n, cfg.text_dim)).astype(np.float32),
        rng.standard_normal((n, cfg.audio_dim)).astype(np.float32),
        rng.integers(0, 256, (n, cfg.frames, cfg.image_size, cfg.image_size, 3), dtype=np.uint8),
    )
    return feed, f"{n} random inputs"


def _stack_items(model: DeepMSI, items: list) -> dict[str, np.ndarray]:
    """An ONNX feed from cached ``Features`` (missing arrays become zeros marked absent)."""
    cfg = model.cfg
    shapes = {
        "text": (cfg.text_dim,),
        "audio": (cfg.audio_dim,),
        "video": (cfg.frames, cfg.image_size, cfg.image_size, 3),
    }
    feed: dict[str, np.ndarray] = {}
    for name, key in zip(model.names, input_names(model), strict=False):
        arrays = [getattr(it, "frames" if name == "video" else name) for it in items]
        ok = [a is not None and tuple(a.shape) == shapes[name] for a in arrays]
        dtype = np.uint8 if name == "video" else np.float32
        x = np.stack(
            [
                a.astype(dtype) if k else np.zeros(shapes[name], dtype)
                for a, k in zip(arrays, ok, strict=True)
            ]
        )
        if name == "video":
            x = frames_to_float(x).numpy()  # [B, F, 3, S, S]
        feed[key] = x
        feed[f"{name}_present"] = np.array(ok)
    return feed
