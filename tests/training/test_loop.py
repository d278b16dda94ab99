"""Training loop, exact resume, reports, protocols (tiny preset on a tiny generated cache)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_pipeline import make_cache
from safetensors.torch import load_file
from sklearn.metrics import f1_score

import deepmsi.evaluation.protocols as protocols
import deepmsi.runs.folder as ckpt
import deepmsi.training.loop as train_mod
from deepmsi.config import TrainConfig, model_preset, train_preset
from deepmsi.errors import ConfigError
from deepmsi.evaluation.labelmap import map_labels, read_label_map
from deepmsi.evaluation.scoring import evaluate
from deepmsi.labels import MELD7
from deepmsi.runs.folder import load_run, read_metrics
from deepmsi.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"), n=80, seed=0)


def _model():
    # dropout and modality dropout on: resume must restore the RNG stream too
    return model_preset("tiny", dropout=0.2, modality_dropout=0.3)


def _no_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


class _Killed(Exception):
    pass


def test_train_writes_a_run_folder(cache, tmp_path):
    result = train(
        cache, tmp_path / "run", _model(), train_preset("tiny", epochs=2), progress=False
    )
    run = tmp_path / "run"
    assert (run / "config.json").is_file() and (run / "best.safetensors").is_file()
    assert ckpt.completed_epochs(run) == [1, 2]
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert result.best_epoch == int(np.argmax([r["dev_weighted_f1"] for r in rows])) + 1
    loaded = load_run(run)
    assert loaded.labels.names == tuple(
        json.loads((cache / "manifest.json").read_text())["labels"]["names"]
    )
    assert loaded.epoch == result.best_epoch
    assert loaded.model_config.num_classes == len(loaded.labels)
    # an existing run is never overwritten silently
    with pytest.raises(ConfigError, match="--resume"):
        train(cache, run, _model(), train_preset("tiny", epochs=2), progress=False)


def test_resume_after_epoch_1_matches_uninterrupted(cache, tmp_path, monkeypatch):
    cfg = train_preset("tiny", epochs=3, seed=7)
    full = train(cache, tmp_path / "full", _model(), cfg, progress=False)

    save = ckpt.save_checkpoint

    def save_then_die(run_dir, epoch, *args, **kwargs):
        save(run_dir, epoch, *args, **kwargs)
        if epoch == 1:
            raise _Killed  # the process dies right after epoch 1's checkpoint

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        train(cache, tmp_path / "cut", _model(), cfg, progress=False)
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    assert ckpt.completed_epochs(tmp_path / "cut") == [1]

    resumed = train(cache, tmp_path / "cut", _model(), cfg, resume=True, progress=False)
    assert _no_time(resumed.history) == _no_time(full.history)
    assert resumed.best_dev == full.best_dev and resumed.best_epoch == full.best_epoch
    a, b = (
        load_file(tmp_path / "full/best.safetensors"),
        load_file(tmp_path / "cut/best.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _no_time(read_metrics(tmp_path / "cut")) == _no_time(full.history)
    # a different seed gives a different run (the comparison above can fail)
    other = train(cache, tmp_path / "other", _model(), cfg.replace(seed=8), progress=False)
    assert _no_time(other.history) != _no_time(full.history)


def test_resume_refuses_a_changed_config(cache, tmp_path):
    train(cache, tmp_path / "r", _model(), train_preset("tiny", epochs=1), progress=False)
    with pytest.raises(ConfigError, match="train.lr"):
        train(
            cache,
            tmp_path / "r",
            _model(),
            train_preset("tiny", epochs=1, lr=0.5),
            resume=True,
            progress=False,
        )


def test_report_fields_and_files(cache, tmp_path):
    train(cache, tmp_path / "run", _model(), train_preset("tiny", epochs=1), progress=False)
    report = evaluate(tmp_path / "run", None, "test", out=tmp_path / "eval", progress=False)
    data = json.loads((tmp_path / "eval/report.json").read_text())
    assert {
        "labels",
        "accuracy",
        "weighted_f1",
        "macro_f1",
        "per_class",
        "confusion",
        "split",
        "utterances",
    } <= set(data)
    assert data["split"] == "test" and data["utterances"] == report.utterances > 0
    assert set(data["per_class"]) == set(data["labels"])
    for scores in data["per_class"].values():
        assert set(scores) == {"precision", "recall", "f1", "support"}
    cm = np.array(data["confusion"])
    assert cm.shape == (len(data["labels"]),) * 2 and cm.sum() == data["utterances"]
    # per-class F1 from the confusion matrix equals sklearn's on the same predictions
    y_true = np.repeat(np.arange(len(cm)), cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(len(cm)), row) for row in cm])
    sk = f1_score(y_true, y_pred, labels=range(len(cm)), average=None, zero_division=0)
    assert [data["per_class"][n]["f1"] for n in data["labels"]] == pytest.approx(sk)
    assert (tmp_path / "eval/confusion.png").stat().st_size > 1000


def test_label_map_leaves_unmapped_labels_out(tmp_path):
    from deepmsi.data.records import Utterance

    recs = [
        Utterance(f"u{i}", "d", i, "s", "x", lab, "test")
        for i, lab in enumerate(["calm", "happy", "angry", "calm", "boredom"])
    ]
    (tmp_path / "m.csv").write_text("old,new\ncalm,neutral\n")
    kept, targets, left = map_labels(recs, MELD7, read_label_map(tmp_path / "m.csv"))
    assert [r.label for r in kept] == ["calm", "happy", "angry", "calm"]
    assert [MELD7.names[t] for t in targets] == ["neutral", "joy", "anger", "neutral"]
    assert left == {"boredom": 1}
    (tmp_path / "m.json").write_text('{"calm": "neutral", "happy": null}')
    kept, _, left = map_labels(recs, MELD7, read_label_map(tmp_path / "m.json"))
    assert left == {"happy": 1, "boredom": 1} and len(kept) == 3


def test_train_config_overrides_are_checked():
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig().replace(learning_rate=1e-3)
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs="3")
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
    assert TrainConfig.from_dict(TrainConfig(seed=3).to_dict()) == TrainConfig(seed=3)


def test_video_learning_rate_scale_makes_a_second_group() -> None:
    model = ckpt.build_model(model_preset("tiny"))
    one = train_mod._param_groups(model, train_preset("tiny", lr=1e-3))
    assert len(one) == 1 and len(one[0]["params"]) == len(list(model.parameters()))
    rest, video = train_mod._param_groups(model, train_preset("tiny", lr=1e-3, video_lr_scale=0.5))
    assert video["lr"] == pytest.approx(5e-4) and rest["lr"] == pytest.approx(1e-3)
    video_ids = {id(p) for p in model.video.parameters()}
    assert {id(p) for p in video["params"]} == video_ids
    assert not video_ids & {id(p) for p in rest["params"]}
    assert len(rest["params"]) + len(video["params"]) == len(list(model.parameters()))


def test_unimodal_weight_needs_unimodal_heads(cache, tmp_path):
    with pytest.raises(ConfigError, match="unimodal_heads"):
        train(cache, tmp_path / "run", _model(), train_preset("tiny", unimodal_weight=1.0))


def test_unimodal_training_logs_its_term(cache, tmp_path):
    result = train(
        cache,
        tmp_path / "run",
        model_preset("tiny", unimodal_heads=True),
        train_preset("tiny", epochs=1, unimodal_weight=1.0, video_lr_scale=0.5),
        progress=False,
    )
    assert result.history[0]["train_unimodal"] > 0


def test_kfold10_never_selects_on_the_scored_fold(cache, tmp_path, monkeypatch):
    current: dict[str, object] = {}
    selected: dict[str, set[str]] = {}
    scored: dict[str, list[str]] = {}

    real_train, real_select, real_score = protocols.train, train_mod.evaluate_split, protocols.score

    def spy_train(store, run_dir, *args, **kwargs):
        current["fold"] = str(run_dir)
        selected[str(run_dir)] = set()
        return real_train(store, run_dir, *args, **kwargs)

    def spy_select(model, dataset, *args, **kwargs):
        selected[current["fold"]] |= {r.id for r in dataset.records}
        return real_select(model, dataset, *args, **kwargs)

    def spy_score(run, store, records, **kwargs):
        scored[str(run.path)] = [r.id for r in records]
        return real_score(run, store, records, **kwargs)

    monkeypatch.setattr(protocols, "train", spy_train)
    monkeypatch.setattr(train_mod, "evaluate_split", spy_select)
    monkeypatch.setattr(protocols, "score", spy_score)
    result = protocols.kfold(
        cache,
        tmp_path / "cv",
        model_preset("tiny"),
        train_preset("tiny", epochs=1),
        folds=10,
        progress=False,
    )

    assert len(result.folds) == 10 and set(scored) == set(selected)
    all_ids = {r["id"] for r in map(json.loads, (cache / "utterances.jsonl").open())}
    tested = [i for ids in scored.values() for i in ids]
    assert sorted(tested) == sorted(all_ids)  # every utterance scored exactly once
    for fold in result.folds:
        key = str(fold.run_dir)
        assert selected[key], "the epoch was chosen on something"
        assert not selected[key] & set(scored[key]), "selection saw the scored fold"
        assert not set(fold.train_ids) & set(scored[key])
        assert selected[key] == set(fold.dev_ids)
    summary = json.loads((tmp_path / "cv/protocol.json").read_text())
    wf1 = [f.report.weighted_f1 for f in result.folds]
    assert summary["mean"]["weighted_f1"] == pytest.approx(np.mean(wf1))
    assert summary["std"]["weighted_f1"] == pytest.approx(np.std(wf1, ddof=1))


def test_bf16_training_runs_under_autocast_with_float32_weights(cache, tmp_path, monkeypatch):
    seen = []
    real = train_mod.DeepMSILoss.__call__

    def spy(self, out, labels):  # what the loss sees: logits made under bf16 autocast
        seen.append((out.logits.dtype, torch.is_autocast_enabled("cpu")))
        return real(self, out, labels)

    monkeypatch.setattr(train_mod.DeepMSILoss, "__call__", spy)
    cfg = train_preset("tiny", epochs=1, precision="bf16")
    result = train(cache, tmp_path / "bf16", _model(), cfg, progress=False)
    assert seen and all(autocast for _, autocast in seen)
    assert np.isfinite(result.history[0]["train_loss"])
    run = load_run(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    assert run.train_config.precision == "bf16"  # recorded; prediction defaults to fp32
    with pytest.raises(ConfigError, match="precision"):
        train_preset("tiny", precision="fp16")
