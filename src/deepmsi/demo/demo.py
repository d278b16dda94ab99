"""The offline demo: synthetic corpus -> prepare -> train (cpu preset) -> evaluate -> ablation.

Needs no data and no network, and finishes in a few minutes on 2 CPU cores. It leaves under
``out``: ``corpus/`` (MELD layout), ``cache/`` (features), ``run/`` (the trained T+A+V model,
usable by ``deepmsi evaluate`` and ``deepmsi predict``), ``report.json`` + ``confusion.png``
(its test report), and ``ablation.json`` + ``ablation.md`` (T, A, V and T+A against T+A+V).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The demo's sizes, chosen so the whole demo stays well under 10 minutes on 2 cores while the
# synthetic cues are learnable (see ``deepmsi.demo.synthetic``): small faces, few frames, and a
# smaller video backbone than the cpu preset's.
# Dialogues per split: train as large as the time allows; dev and test large enough that one
# utterance moves weighted F1 by less than half a point (with 63 dev and 103 test utterances, the
# standard error of a score was about 5 points, above the gains the demo is meant to show).
CORPUS = {"splits": (70, 30, 50), "seconds": 1.2, "fps": 10, "size": 112}
PREPARE: dict[str, Any] = {"frames": 4, "image_size": 48}
MODEL = {
    "patch_size": 3,  # 48 px -> token grids 16/8/4/2
    # VSC off: stage 3 of these small faces is a 4x4 grid, and compressing it to 2x2 left the
    # fused model's video branch at the class prior even with its own head (seed 0: dev weighted
    # F1 60.9 with VSC, 76.0 without; docs/balanced-training.md). cpu and paper keep VSC.
    "vsc": False,
    "vsc_grids": (3, 2),
}
TRAIN = {"epochs": 20, "batch_size": 32, "lr": 2e-3, "patience": 0}
# The paper's training (``balanced=False``) ran 12 epochs; its video branch stays at the majority
# class, so more epochs only cost time.
PAPER_EPOCHS = 12
SINGLES = ("t", "a", "v")
# T+A shows what the video branch adds on top of text and audio.
ABLATION = (*SINGLES, "ta")
SYNTHETIC_NOTE = (
    "trained and scored on the demo's synthetic corpus (drawn faces, voiced tones, template "
    "sentences): its scores say nothing about real recordings"
)


@dataclass(frozen=True)
class DemoResult:
    """Paths and results of a demo run; ``seconds`` per stage."""

    out: Path
    run_dir: Path
    report: Any  # deepmsi.evaluation.report.Report
    ablation: Any  # deepmsi.evaluation.ablation.AblationResult
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def multimodal_wins(self) -> bool:
        """True when T+A+V beats every single modality on test weighted F1."""
        full = self.ablation.row("tav").weighted_f1
        return all(full > self.ablation.row(m).weighted_f1 for m in SINGLES)


def _timed(seconds: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    value = fn()
    seconds[name] = time.perf_counter() - t0
    log.info("demo: %s done in %.1f s", name, seconds[name])
    return value


# One torch thread, deterministic kernels: a thread count changes the order of float reductions,
# so a fixed one makes two demos on one machine print the same digits (another CPU may still
# differ in the last bits; the README shows the spread over seeds).
THREADS = 1


@contextmanager
def reproducible(threads: int = THREADS) -> Iterator[None]:
    """Run the block with ``threads`` torch threads and deterministic algorithms, then restore."""
    import torch

    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


def run_demo(
    out: str | Path = "demo-out",
    *,
    seed: int = 0,
    corpus: dict | None = None,
    train_overrides: dict | None = None,
    balanced: bool = True,
    progress: bool = True,
) -> DemoResult:
    """Run the whole pipeline on a synthetic corpus; re-running reuses finished stages.

    ``corpus`` and ``train_overrides`` shrink or grow the demo (tests use a tiny one). The same
    seed on the same machine gives the same numbers (see ``reproducible``). ``balanced`` trains
    with :func:`deepmsi.config.balanced` (the default); False runs the paper's training.
    """
    if not balanced:
        train_overrides = {"epochs": PAPER_EPOCHS, **(train_overrides or {})}
    with reproducible():
        return _run_demo(
            Path(out),
            seed=seed,
            corpus=corpus,
            train_overrides=train_overrides,
            balanced=balanced,
            progress=progress,
        )


def _run_demo(
    out: Path,
    *,
    seed: int,
    corpus: dict | None,
    train_overrides: dict | None,
    balanced: bool,
    progress: bool,
) -> DemoResult:
    from deepmsi.config import balanced as balance
    from deepmsi.config import model_preset, train_preset
    from deepmsi.data import load_dataset
    from deepmsi.data.dataset import FeatureStore
    from deepmsi.demo.synthetic import write_corpus
    from deepmsi.evaluation.ablation import Variant, ablate
    from deepmsi.evaluation.scoring import evaluate
    from deepmsi.features.preparation import PrepareOptions, prepare
    from deepmsi.runs.card import refresh_card
    from deepmsi.training.loop import train

    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    corpus_dir, cache_dir, run_dir = out / "corpus", out / "cache", out / "run"

    corpus_args = {**CORPUS, **(corpus or {})}
    _timed(
        seconds,
        "corpus",
        lambda: write_corpus(corpus_dir, seed=seed, progress=progress, **corpus_args),
    )
    dataset = load_dataset(f"meld:{corpus_dir}")
    options = PrepareOptions(**PREPARE, progress=progress)
    _timed(seconds, "prepare", lambda: prepare(dataset, cache_dir, options))

    store = FeatureStore(cache_dir)
    model_cfg = model_preset("cpu", **MODEL)
    train_cfg = train_preset("cpu", seed=seed, **{**TRAIN, **(train_overrides or {})})
    if balanced:
        model_cfg, train_cfg = balance(model_cfg, train_cfg)
    _timed(
        seconds,
        "train",
        lambda: train(store, run_dir, model_cfg, train_cfg, resume=True, progress=progress),
    )
    refresh_card(run_dir, notes=[SYNTHETIC_NOTE])
    report = _timed(
        seconds,
        "evaluate",
        lambda: evaluate(run_dir, cache_dir, "test", out=out, progress=progress),
    )
    variants = [Variant(m) for m in ABLATION] + [Variant("tav")]
    ablation = _timed(
        seconds,
        "ablation",
        lambda: ablate(
            store,
            out,
            model_cfg,
            train_cfg,
            variants=variants,
            reuse={Variant("tav"): run_dir},
            progress=progress,
        ),
    )
    for variant in variants[:-1]:  # the ablation's own runs; T+A+V is run_dir
        refresh_card(out / "runs" / variant.name, notes=[SYNTHETIC_NOTE])
    seconds["total"] = sum(seconds.values())
    return DemoResult(out, run_dir, report, ablation, seconds)
