"""Two-process DDP training on CPU (torchrun, gloo): it trains, and the dev metrics it logs are
those of the whole dev split (gathered predictions), not an average of per-rank scores; the
dialogue-context stage embeds on both ranks and fits its head on rank 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from helpers_pipeline import make_cache

from deepmsi.data.cache import FeatureCache
from deepmsi.data.dataset import FeatureDataset, FeatureStore
from deepmsi.evaluation.scoring import evaluate
from deepmsi.metrics import compute_metrics
from deepmsi.runs.folder import completed_epochs, load_run, read_metrics
from deepmsi.runs.predict import predict_dataset

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed not available"
)


def test_torchrun_two_processes_gathers_predictions(tmp_path):
    cache = make_cache(tmp_path / "cache", n=70, seed=1)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "deepmsi",
        "train",
        "--cache",
        str(cache),
        "--out",
        str(run),
        "--preset",
        "tiny",
        "--epochs",
        "2",
        "--no-progress",
        "--device",
        "cpu",
        "--context",
        "online",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    assert proc.stdout.count("trained 2 epochs") == 1, "only rank 0 prints"

    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    dev = FeatureCache(cache).records("dev")
    # Each rank scored half of the dev split; the logged numbers cover all of it ...
    assert all(r["dev_utterances"] == len(dev) for r in rows)
    # ... and equal a single-process evaluation of the same weights on the whole split.
    torch.set_num_threads(1)
    for epoch in completed_epochs(run):
        trained = load_run(run, checkpoint=epoch)
        ds = FeatureDataset(FeatureStore(cache), dev, trained.model_config)
        pred = predict_dataset(trained.model, ds, batch_size=16)
        m = compute_metrics(pred.y_true, pred.y_pred, trained.labels.names)
        row = rows[epoch - 1]
        assert row["dev_weighted_f1"] == pytest.approx(m.weighted_f1, abs=1e-12)
        assert row["dev_accuracy"] == pytest.approx(m.accuracy, abs=1e-12)
    # The head was fitted on rank 0 from both ranks' vectors; its dev score, as printed, is what
    # a single process gets from the saved run.
    assert proc.stdout.count("dialogue context (online)") == 1
    printed = re.search(r"dialogue context \(online\).*weighted F1 ([\d.]+)", proc.stdout)
    report = evaluate(run, None, "dev", progress=False)
    assert report.context == "online"
    assert printed and float(printed.group(1)) == pytest.approx(100 * report.weighted_f1, abs=0.006)
