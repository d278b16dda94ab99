"""Shared test fixtures. Real data lives in ../shared/data; tests that need it skip without it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; skips the test (with the reason) when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one intra-op thread: tiny ops gain nothing from two, results are exact,
    and on a shared 2-core machine a second thread waiting at every op's barrier makes them many
    times slower. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny trained run (synthetic corpus -> prepare -> one epoch), built once per session."""
    from helpers_inference import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def predictor(tiny):
    """A warm ``Predictor`` of the tiny run."""
    from deepmsi.inference.predictor import Predictor

    return Predictor.from_run(tiny.run_dir)
