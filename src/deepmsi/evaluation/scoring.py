"""Scoring a trained run on a split of its own cache or on another labelled dataset.

The report holds true per-class precision/recall/F1 from the confusion matrix. Labels of another
dataset are mapped onto the run's label set (:mod:`deepmsi.evaluation.labelmap`); utterances
whose label maps to nothing are counted in ``left_out`` and never scored.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from deepmsi.data.dataset import FeatureDataset, FeatureStore
from deepmsi.data.records import Dataset, Utterance
from deepmsi.errors import ConfigError, DataError
from deepmsi.evaluation.labelmap import map_labels, read_label_map
from deepmsi.evaluation.report import Report
from deepmsi.metrics import compute_metrics
from deepmsi.models import SwinV2, set_precision
from deepmsi.runs.card import OWN, current_command, evaluation_entry, refresh_card
from deepmsi.runs.folder import Run, load_run
from deepmsi.runs.predict import context_probabilities, predict_dataset

log = logging.getLogger(__name__)


def _check_compatible(run: Run, cache) -> None:
    """A cache must hold features of the sizes (and encoders) the run was trained on."""
    cfg = run.model_config
    problems = []
    if "t" in cfg.modalities and cache.text_dim and cache.text_dim != cfg.text_dim:
        problems.append(f"text features are {cache.text_dim}-d, the run expects {cfg.text_dim}")
    if "a" in cfg.modalities and cache.audio_dim and cache.audio_dim != cfg.audio_dim:
        problems.append(f"audio features are {cache.audio_dim}-d, the run expects {cfg.audio_dim}")
    m = cache.manifest
    if (
        "v" in cfg.modalities
        and m.get("frames")
        and (m.get("frames"), m.get("image_size"))
        != (
            cfg.frames,
            cfg.image_size,
        )
    ):
        problems.append(
            f"frames are {m.get('frames')} x {m.get('image_size')} px, the run expects "
            f"{cfg.frames} x {cfg.image_size}"
        )
    for key in ("text_encoder", "audio_encoder"):
        ours, theirs = _encoder_id(run.cache_manifest, key), _encoder_id(m, key)
        if ours and theirs and ours != theirs:
            problems.append(f"{key} is {theirs}, the run was trained on {ours}")
    if problems:
        raise DataError(cache.path, "; ".join(problems))


def _encoder_id(manifest: Mapping, key: str) -> str | None:
    value = manifest.get(key) or (manifest.get("encoders") or {}).get(key.split("_")[0])
    if isinstance(value, Mapping):
        value = value.get("name") or value.get("id")
    return str(value) if value else None


def score(
    run: Run,
    store,
    records: Sequence[Utterance],
    *,
    split: str,
    label_map: Mapping[str, str | None] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Report:
    """Score ``records`` of a :class:`~deepmsi.data.dataset.FeatureStore` with ``run``.

    A run with a dialogue-context head reads each dialogue made of ``records`` alone, so no
    other split's turns reach a prediction.
    """
    import torch

    kept, targets, left_out = map_labels(records, run.labels, label_map)
    if left_out:
        log.warning(
            "left out %d utterances whose label is not in %s: %s",
            sum(left_out.values()),
            run.labels.name,
            left_out,
        )
    if not kept:
        raise DataError(store.cache.path, f"no utterance of split {split!r} has a scorable label")
    dataset = FeatureDataset(store, kept, run.model_config, targets=targets)
    device = next(run.model.parameters()).device
    with torch.inference_mode():
        if run.context is None:
            probs = predict_dataset(
                run.model, dataset, batch_size=batch_size, device=device, progress=progress
            ).probs
        else:
            probs = context_probabilities(
                run.model,
                run.context,
                dataset,
                batch_size=batch_size,
                device=device,
                progress=progress,
            )
    m = compute_metrics(dataset.targets, probs.argmax(axis=1), run.labels.names)
    precision = next((v.precision for v in run.model.modules() if isinstance(v, SwinV2)), "fp32")
    return Report(
        **m.to_dict(),
        split=split,
        left_out=left_out,
        context=run.context_mode,
        precision=precision,
    )


def prepare_for_run(run: Run, dataset: Dataset | str, cache_dir: str | Path):
    """Prepare a dataset with the encoders and options recorded in the run's cache manifest."""
    from deepmsi.data.cache import FeatureCache
    from deepmsi.features.preparation import PrepareOptions, prepare

    if isinstance(dataset, str):
        from deepmsi.data import load_dataset

        dataset = load_dataset(dataset, on_error="skip")
    options = PrepareOptions.from_manifest(run.cache_manifest)
    prepare(dataset, Path(cache_dir), options)
    return FeatureCache(Path(cache_dir))


def evaluate(
    run: Run | str | Path,
    data=None,
    split: str = "test",
    label_map: Mapping[str, str | None] | str | Path | None = None,
    *,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    precision: str = "fp32",
) -> Report:
    """Score a run on ``split`` of ``data`` and (with ``out``) write report.json + confusion.png.

    ``data``: None (the run's own cache), a ``FeatureCache`` or cache folder, or a labelled
    ``Dataset``/dataset spec (``meld:DIR``...), which is prepared first with the run's encoders
    into ``cache_dir`` (default ``out/cache``, else a temporary folder). ``split="all"`` scores
    every labelled utterance. ``label_map`` (a mapping or a JSON/CSV file) renames the data's
    labels onto the run's label set. ``precision`` "bf16" runs the video backbone in bfloat16.
    """
    from deepmsi.data.cache import FeatureCache

    if not isinstance(run, Run):
        run = load_run(run)
    set_precision(run.model, precision)
    if isinstance(label_map, (str, Path)):
        label_map = read_label_map(label_map)
    tmp = None
    if data is None:
        if not run.cache_path:
            raise ConfigError(f"{run.path}: run records no cache; pass a cache or dataset")
        cache = FeatureCache(Path(run.cache_path))
    elif isinstance(data, FeatureCache):
        cache = data
    elif isinstance(data, Dataset) or (isinstance(data, str) and _looks_like_spec(data)):
        if cache_dir is None:
            if out is not None:
                cache_dir = Path(out) / "cache"
            else:
                tmp = tempfile.TemporaryDirectory(prefix="deepmsi-eval-")
                cache_dir = tmp.name
        cache = prepare_for_run(run, data, cache_dir)
    else:
        cache = FeatureCache(Path(data))
    try:
        _check_compatible(run, cache)
        store = FeatureStore(cache)
        records = cache.records(None if split == "all" else split)
        if not records:
            raise DataError(cache.path, f"no utterances in split {split!r}")
        report = score(
            run,
            store,
            records,
            split=split,
            label_map=label_map,
            batch_size=batch_size,
            progress=progress,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    if out is not None:
        report.save(out)
    entry = evaluation_entry(report.to_dict(), data=_data_name(run, data, cache), epoch=run.epoch)
    refresh_card(
        run.path, evaluation=entry, command=current_command("python: deepmsi.evaluate(...)")
    )
    return report


def _data_name(run: Run, data, cache) -> str:
    """How the model card names what was scored: ``OWN`` for the run's own cache."""
    if run.cache_path and Path(cache.path).resolve() == Path(run.cache_path).resolve():
        return OWN
    if isinstance(data, Dataset):
        return f"dataset {data.name}"
    return str(data if isinstance(data, str) else cache.path)


def _looks_like_spec(text: str) -> bool:
    from deepmsi.data.spec import READERS

    kind, sep, _ = text.partition(":")
    return bool(sep) and kind.strip().lower() in READERS
