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
