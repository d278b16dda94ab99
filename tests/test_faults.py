"""Faults: damaged run-folder files are one-line errors naming the file; a full disk during
``prepare`` leaves no half-written item and loses nothing already done; temporary files left by
a SIGKILL are removed on resume, and a SIGKILLed ``prepare`` resumes to a complete cache.

Fast on purpose (audio-only clips and the spectral encoder: no text model is loaded); the full
drill on the synthetic corpus, SIGKILLs of ``prepare`` and ``train`` at several moments and a real
size-limited file system, is ``benchmarks/faults.py``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_data import write_clip

import deepmsi.data.cache as cache_mod
from deepmsi.atomic import (
    atomic_path,
    atomic_write_text,
    remove_stale_temporaries,
    temporary_path,
)
from deepmsi.cli import main
from deepmsi.config import TrainConfig, model_preset
from deepmsi.data.cache import ITEMS, UTTERANCES, FeatureCache
from deepmsi.errors import DataError
from deepmsi.features.preparation import PrepareOptions, prepare
from deepmsi.labels import LabelSet
from deepmsi.runs import folder as runs

pytestmark = pytest.mark.usefixtures("one_thread")

AUDIO_ONLY = {"modalities": "a", "workers": 1, "progress": False}
EMOTIONS = ("neutral", "joy", "anger", "sadness", "joy", "neutral")


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory) -> Path:
    """A ``folder:`` dataset of six short wav clips (no transcripts: no text encoder)."""
    root = tmp_path_factory.mktemp("audio")
    lines = ["file,emotion,speaker"]
    for i, emotion in enumerate(EMOTIONS):
        write_clip(root / f"c{i}.wav", seconds=0.3, video=None, audio=(16000, 1))
        lines.append(f"c{i}.wav,{emotion},s{i % 3}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def _complete(cache: Path) -> list[str]:
    """Every item of the cache loads; returns the cached ids."""
    fc = FeatureCache(cache)
    ids = [r.id for r in fc.records()]
    for i in ids:
        assert fc.load(i).audio is not None
    return ids


# ---- temporary files -------------------------------------------------------------------------
def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    script = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", script], text=True, capture_output=True)
    stale = tmp_path / f".item.npz.tmp{int(dead.stdout)}"
    live = tmp_path / f".other.npz.tmp{os.getppid()}"  # the test runner's parent is running
    mine = temporary_path(tmp_path / "mine.json")  # this process is not writing it yet
    keep = tmp_path / "item.npz"
    for p in (stale, live, mine, keep):
        p.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([stale, mine])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, keep.name])
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_a_failed_atomic_write_leaves_nothing(tmp_path):
    target = tmp_path / "f.txt"
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


# ---- a full disk during prepare ----------------------------------------------------------------
def _disk_full_after(monkeypatch, n: int) -> None:
    """Every item write after the first ``n`` writes half its bytes, then fails with ENOSPC."""
    real = cache_mod.np.savez
    calls = {"n": 0}

    def savez(f, **arrays):
        calls["n"] += 1
        if calls["n"] > n:
            f.write(b"PK\x03\x04 half an item")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(f, **arrays)

    monkeypatch.setattr(cache_mod.np, "savez", savez)


def test_full_disk_names_the_item_and_keeps_what_was_done(audio_folder, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    _disk_full_after(monkeypatch, 2)
    with pytest.raises(DataError) as err:
        prepare(f"folder:{audio_folder}", out, PrepareOptions(**AUDIO_ONLY))
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message
    assert f"{out / ITEMS}/" in message and message.split(":")[0].endswith(".npz")
    assert len(list((out / ITEMS).iterdir())) == 2 and _leftovers(out) == []
    assert len(_complete(out)) == 2  # the index lists the two saved items
    monkeypatch.undo()  # space again: the re-run prepares only the rest
    result = prepare(f"folder:{audio_folder}", out, PrepareOptions(**AUDIO_ONLY))
    assert (result.cached, result.prepared) == (2, len(EMOTIONS) - 2)
    assert len(_complete(out)) == len(EMOTIONS)


def test_full_disk_is_one_line_from_the_cli(audio_folder, tmp_path, monkeypatch, capsys):
    _disk_full_after(monkeypatch, 0)
    out = tmp_path / "cache"
    argv = ["prepare", "--dataset", f"folder:{audio_folder}", "--out", str(out)]
    assert main([*argv, "--modalities", "a", "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and ".npz" in err[0]
    assert _leftovers(out) == [] and list((out / ITEMS).iterdir()) == []


# ---- SIGKILL mid-prepare -----------------------------------------------------------------------
KILL_ON_THIRD_RENAME = """
import os, signal, sys
import deepmsi.atomic as atomic
from deepmsi.features.preparation import PrepareOptions, prepare
real, seen = os.replace, []
def replace(src, dst):
    if str(dst).endswith(".npz"):
        seen.append(dst)
        if len(seen) == 3:  # the third item is written in full under its temporary name
            os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
atomic.os.replace = replace
prepare(sys.argv[1], sys.argv[2], PrepareOptions(modalities="a", workers=1, progress=False))
"""


def test_sigkilled_prepare_resumes_to_a_complete_cache(audio_folder, tmp_path):
    out = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    args = [sys.executable, "-c", KILL_ON_THIRD_RENAME, f"folder:{audio_folder}", str(out)]
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(_leftovers(out)) == 1 and not (out / UTTERANCES).exists()
    result = prepare(f"folder:{audio_folder}", out, PrepareOptions(**AUDIO_ONLY))
    assert (result.cached, result.prepared) == (2, len(EMOTIONS) - 2)
    assert _leftovers(out) == [] and len(_complete(out)) == len(EMOTIONS)


# ---- damaged run folders -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder written directly: the tiny model's config, best weights, one checkpoint."""
    import torch

    path = tmp_path_factory.mktemp("run") / "run"
    cfg = model_preset("tiny", text_dim=8, audio_dim=8, num_classes=4)
    labels = LabelSet("toy4", ("calm", "joy", "anger", "sadness"))
    runs.write_config(path, runs.RunConfig(cfg, TrainConfig(epochs=1), labels, {}))
    torch.manual_seed(0)
    model = runs.build_model(cfg)
    runs.save_weights(model, path / runs.BEST_FILE, epoch=1)
    runs.save_checkpoint(path, 1, model, {"epoch": 1})
    return path


def _config(edit):
    def damage(run: Path) -> Path:
        path = run / runs.CONFIG_FILE
        data = json.loads(path.read_text())
        path.write_text(json.dumps(edit(data)))
        return path

    return damage


def _truncate(name: str, keep: float = 0.5):
    def damage(run: Path) -> Path:
        path = run / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        return path

    return damage


def _write(name: str, data: bytes):
    def damage(run: Path) -> Path:
        (run / name).write_bytes(data)
        return run / name

    return damage


DAMAGE = {
    "config-empty": _write(runs.CONFIG_FILE, b""),
    "config-truncated": _truncate(runs.CONFIG_FILE),
    "config-not-utf8": _write(runs.CONFIG_FILE, b"\xff\xfe{garbage"),
    "config-list": _config(lambda d: [d]),
    "config-null": _config(lambda d: None),
    "config-no-model": _config(lambda d: {k: v for k, v in d.items() if k != "model"}),
    "config-unknown-key": _config(lambda d: {**d, "model": {**d["model"], "bogus": 1}}),
    "best-truncated": _truncate(runs.BEST_FILE),
    "best-garbage": _write(runs.BEST_FILE, b"\x00" * 64),
    "context-truncated": _write(runs.CONTEXT_FILE, b"\x08\x00\x00\x00\x00\x00\x00\x00{"),
    "state-truncated": _truncate(f"{runs.CHECKPOINT_DIR}/epoch_001.state.pt"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_run_file_is_one_line_naming_it(case, run_dir, tmp_path):

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    if case == "context-truncated":
        atomic_write_text(
            run / runs.CONTEXT_CONFIG_FILE,
            json.dumps({"context": {"input_dim": 8, "num_classes": 4}}),
        )
    damaged = DAMAGE[case](run)
    with pytest.raises(DataError) as err:
        if case.startswith("state"):
            runs.load_state(run, 1)
        else:
            runs.load_run(run)
    assert err.value.path == str(damaged) and "\n" not in str(err.value), str(err.value)


def test_damaged_config_from_the_cli(run_dir, tmp_path, capsys):

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / runs.CONFIG_FILE).write_text("null\n")
    assert main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"{run / runs.CONFIG_FILE}: malformed run config: null instead of a JSON object"
    assert err == [f"deepmsi evaluate: error: {expected}"]


# ---- a header-only labels.csv ----------------------------------------------------------------
def test_header_only_labels_csv_is_a_problem(tmp_path):
    from deepmsi.data import load_dataset

    (tmp_path / "labels.csv").write_text("file,emotion\r\n")
    with pytest.raises(DataError, match="no rows, only a header"):
        load_dataset(f"folder:{tmp_path}")
    dataset = load_dataset(f"folder:{tmp_path}", on_error="skip")
    assert [p.file for p in dataset.problems] == [str(tmp_path / "labels.csv")]
    assert np.size(dataset.utterances) == 0


def test_a_row_with_more_fields_than_the_header_is_a_problem(audio_folder, tmp_path):
    from deepmsi.data import load_dataset

    shutil.copyfile(audio_folder / "c0.wav", tmp_path / "c0.wav")
    text = "file,emotion,transcript\nc0.wav,joy,fine\nc0.wav,joy,hello, world\n"
    (tmp_path / "labels.csv").write_text(text)
    dataset = load_dataset(f"folder:{tmp_path}", on_error="skip")
    assert [u.text for u in dataset.utterances] == ["fine"]
    assert [p.error for p in dataset.problems] == [
        "line 3: 4 fields where the header has 3 (a comma in an unquoted value?)"
    ]


# ---- a SIGKILLed train -----------------------------------------------------------------------
def test_resume_removes_temporaries_and_rewrites_metrics(tmp_path):
    """As if SIGKILLed while renaming metrics.jsonl after the last epoch: the checkpoint is
    complete, metrics.jsonl is one epoch short and a temporary file is left."""
    from helpers_pipeline import make_cache

    from deepmsi.config import train_preset
    from deepmsi.training.loop import train

    cache = make_cache(tmp_path / "cache", n=40)
    run, model = tmp_path / "run", model_preset("tiny", modalities="ta")
    cfg = train_preset("tiny", epochs=2, patience=0)
    train(cache, run, model, cfg, progress=False)
    full = runs.read_metrics(run)
    runs.write_metrics(run, full[:1])
    left = [temporary_path(run / runs.METRICS_FILE), temporary_path(run / "checkpoints" / "x")]
    for p in left:
        p.write_text("half")
    train(cache, run, model, cfg, resume=True, progress=False)
    assert runs.read_metrics(run) == full and _leftovers(run) == []
