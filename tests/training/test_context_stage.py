"""The dialogue-context stage (``--context``): training writes a head, evaluate and Predictor read
dialogues through it, online heads never see later turns, and context helps where it must."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
from helpers_pipeline import make_cache, make_dialogue_cache

import deepmsi.runs.folder as ckpt
from deepmsi.config import TrainConfig, model_preset, train_preset
from deepmsi.data.cache import Features
from deepmsi.data.dataset import FeatureDataset, FeatureStore
from deepmsi.data.subtitles import Cue
from deepmsi.errors import ConfigError
from deepmsi.evaluation.scoring import evaluate
from deepmsi.runs.folder import load_run, read_config
from deepmsi.runs.predict import context_probabilities, group_dialogues
from deepmsi.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

MODES = ("online", "offline")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"), n=80, seed=0)


def _train(cache, out, mode: str, *, resume: bool = False):
    cfg = train_preset("tiny", epochs=2, context=mode)
    model = model_preset("tiny", modality_dropout=0.2)
    return train(cache, out, model, cfg, resume=resume, progress=False)


@pytest.fixture(scope="module")
def runs(cache, tmp_path_factory):
    """One tiny run per mode on the toy cache (dialogues of 5 turns): mode -> (dir, result)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    return {mode: (root / mode, _train(cache, root / mode, mode)) for mode in MODES}


class _Poisoned(FeatureStore):
    """The cache with every turn from ``turn`` on replaced by other features."""

    def __init__(self, cache, turn: int) -> None:
        super().__init__(cache)
        self.turn = {r.id: r.turn for r in self.records()}
        self.first = turn

    def load(self, utt_id: str) -> Features:
        f = super().load(utt_id)
        if self.turn[utt_id] < self.first:
            return f
        rng = np.random.default_rng(zlib.crc32(utt_id.encode()))
        return Features(
            None if f.text is None else (5 * rng.normal(size=f.text.shape)).astype(np.float32),
            None if f.audio is None else (5 * rng.normal(size=f.audio.shape)).astype(np.float32),
            None if f.frames is None else (255 - f.frames),
        )


# ---- configuration ---------------------------------------------------------------------------
def test_context_option_is_checked():
    assert TrainConfig().context == "none"
    with pytest.raises(ConfigError, match="context"):
        TrainConfig(context="sometimes")
    with pytest.raises(ConfigError, match="context"):
        TrainConfig(context=True)
    assert TrainConfig.from_dict(TrainConfig(context="online").to_dict()).context == "online"


def test_cli_context_option_reaches_the_train_config():
    import argparse

    from deepmsi.cli.train import add_config_options, build_configs

    p = argparse.ArgumentParser()
    add_config_options(p)
    assert build_configs(p.parse_args(["--context", "offline"]))[1].context == "offline"
    assert build_configs(p.parse_args([]))[1].context == "none"
    with pytest.raises(SystemExit):
        p.parse_args(["--context", "future"])


def test_dialogues_are_grouped_by_split_and_ordered_by_turn():
    from deepmsi.data.records import Utterance

    recs = [
        Utterance("b1", "d", 1, "B", "x", "joy", "dev"),
        Utterance("a0", "d", 0, "A", "x", "joy", "dev"),
        Utterance("t0", "d", 0, "Z", "x", "joy", "test"),  # same id, another split
        Utterance("b2", "d", 2, "A", "x", "joy", "dev"),
    ]
    dialogues = {d.key: d for d in group_dialogues(recs)}
    assert set(dialogues) == {("dev", "d"), ("test", "d")}
    assert dialogues["dev", "d"].rows == (1, 0, 3)  # turns 0, 1, 2
    assert dialogues["dev", "d"].speakers == (0, 1, 0)  # A, B, A
    assert dialogues["test", "d"].rows == (2,)


# ---- training and evaluation -----------------------------------------------------------------
def test_training_with_context_writes_a_head_and_evaluate_uses_it(runs, cache, tmp_path):
    run_dir, result = runs["online"]
    assert (run_dir / ckpt.CONTEXT_FILE).is_file() and (
        run_dir / ckpt.CONTEXT_CONFIG_FILE
    ).is_file()
    saved = json.loads((run_dir / ckpt.CONTEXT_CONFIG_FILE).read_text())
    assert saved["context"]["causal"] is True
    assert read_config(run_dir).train_config.context == "online"
    assert 1 <= result.context_epoch <= 40 and 0 <= result.context_dev["weighted_f1"] <= 1
    assert saved["epoch"] == result.context_epoch and saved["dev"] == result.context_dev
    run = load_run(run_dir)
    assert run.context is not None and run.context_mode == "online"

    report = evaluate(run, None, "test", out=tmp_path / "eval", progress=False)
    data = json.loads((tmp_path / "eval/report.json").read_text())
    assert data["context"] == "online" and "dialogue context: online" in report.table()
    # the scores are those of the head over the test split's own dialogues
    store = FeatureStore(cache)
    test = store.records("test")
    ds = FeatureDataset(store, test, run.model_config)
    probs = context_probabilities(run.model, run.context, ds)
    cm = np.zeros((len(run.labels),) * 2, np.int64)
    np.add.at(cm, (ds.targets, probs.argmax(1)), 1)
    assert report.confusion == cm.tolist()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    # a run without context says so
    plain = train(
        cache,
        tmp_path / "plain",
        model_preset("tiny"),
        train_preset("tiny", epochs=1),
        progress=False,
    )
    assert not (plain.run_dir / ckpt.CONTEXT_FILE).exists() and plain.context_dev is None
    assert evaluate(plain.run_dir, None, "test", progress=False).context == "none"


def test_other_epochs_load_without_the_head(runs):
    """The head was fitted on the best epoch's vectors; other weights must not use it."""
    run_dir, result = runs["offline"]
    other = next(e for e in ckpt.completed_epochs(run_dir) if e != result.best_epoch)
    assert load_run(run_dir, checkpoint=other).context is None
    assert load_run(run_dir, checkpoint=result.best_epoch).context_mode == "offline"


@pytest.mark.parametrize("mode", MODES)
def test_online_turns_never_see_later_turns(runs, cache, mode):
    run = load_run(runs[mode][0])
    clean_store, poisoned_store = FeatureStore(cache), _Poisoned(cache, turn=3)
    recs = clean_store.records("dev")
    clean, poisoned = (
        context_probabilities(run.model, run.context, FeatureDataset(s, recs, run.model_config))
        for s in (clean_store, poisoned_store)
    )
    early = [i for i, r in enumerate(recs) if r.turn < 3]
    late = [i for i, r in enumerate(recs) if r.turn >= 3]
    assert early and late
    assert np.abs(clean[late] - poisoned[late]).max() > 1e-3, "the poison reached the model"
    if mode == "online":
        np.testing.assert_allclose(poisoned[early], clean[early], atol=1e-6)
    else:  # the whole dialogue: earlier turns read the poisoned ones
        assert np.abs(clean[early] - poisoned[early]).max() > 1e-4


def test_context_helps_where_the_label_is_announced_by_the_previous_turn(tmp_path):
    """Each turn's features carry the next turn's class: utterance by utterance every label is
    a guess, with the previous turn most of them are known."""
    cache = make_dialogue_cache(tmp_path / "cache", dialogues=40, turns=6, seed=0)
    result = train(
        cache,
        tmp_path / "run",
        model_preset("tiny", modalities="ta"),
        train_preset("tiny", context="online"),
        progress=False,
    )
    with_context = load_run(result.run_dir)
    alone = load_run(result.run_dir)
    alone.context = None  # the same utterance model, utterance by utterance
    for split in ("dev", "test"):
        ctx = evaluate(with_context, None, split, progress=False)
        utt = evaluate(alone, None, split, progress=False)
        assert (ctx.context, utt.context) == ("online", "none")
        assert utt.accuracy < 0.45, "the fixture leaks the label into the turn's own features"
        assert ctx.accuracy > utt.accuracy + 0.25, (split, ctx.accuracy, utt.accuracy)
    assert result.context_dev["weighted_f1"] > result.best_dev["weighted_f1"] + 0.25


def test_resume_after_a_crash_in_the_context_stage(runs, cache, tmp_path, monkeypatch):
    """All epochs were saved, the head was not: resuming fits the same head as an unbroken run."""
    from safetensors.torch import load_file

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(ckpt, "save_context", crash)
    with pytest.raises(RuntimeError, match="killed"):
        _train(cache, tmp_path / "cut", "online")
    monkeypatch.undo()
    assert not (tmp_path / "cut" / ckpt.CONTEXT_FILE).exists()
    resumed = _train(cache, tmp_path / "cut", "online", resume=True)
    full_dir, full = runs["online"]
    assert resumed.context_epoch == full.context_epoch
    assert resumed.context_dev == full.context_dev
    a = load_file(full_dir / ckpt.CONTEXT_FILE)
    b = load_file(tmp_path / "cut" / ckpt.CONTEXT_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- Predictor -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def context_predictor(tiny, tmp_path_factory):
    """A Predictor of an online-context run trained on the tiny run's cache."""
    from deepmsi.inference.predictor import Predictor

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ctx_run") / "run"
    cfg = train_preset("cpu", seed=0, epochs=1, batch_size=8, patience=0, context="online")
    train(
        FeatureStore(tiny.cache),
        out,
        model_preset("tiny", modality_dropout=0.2),
        cfg,
        progress=False,
    )
    return Predictor.from_run(out)


def _cues(texts: list[str], speakers: list[str | None] | None = None) -> list[Cue]:
    speakers = speakers or [None] * len(texts)
    return [
        Cue(2.0 * i, 2.0 * i + 1.5, t, s)
        for i, (t, s) in enumerate(zip(texts, speakers, strict=True))
    ]


def _probs(prediction) -> np.ndarray:
    return np.array([[s.probabilities[k] for k in prediction.labels] for s in prediction.segments])


def test_predictor_single_clip_is_a_one_turn_dialogue(context_predictor, tiny):
    p = context_predictor
    assert p.context_mode == "online"
    clip, text = tiny.clips[0], tiny.texts[0]
    pred = p.predict(clip, text=text)
    assert len(pred.segments) == 1
    inputs = p._encode(clip, p._spans(clip, text, None, None))
    frames = torch.from_numpy(inputs.frames).permute(0, 1, 4, 2, 3).float() / 255

    def head_probs(present: dict[str, bool]) -> np.ndarray:
        with torch.inference_mode():
            out = p.model(
                torch.from_numpy(inputs.text),
                torch.from_numpy(inputs.audio),
                frames,
                present={k: torch.tensor([v]) for k, v in present.items()},
            )
            x = out.joint[None]  # [1, 1, D]: one dialogue of one turn
            logits = p.context(x, torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=bool))
            return torch.softmax(logits, -1)[0, 0].numpy()

    want = head_probs({m: True for m in ("text", "audio", "video")})
    np.testing.assert_allclose(_probs(pred)[0], want, atol=1e-5)
    seg = pred.segments[0]
    k = p.labels.index(seg.label)
    assert set(seg.contributions) == {"text", "audio", "video"}
    for name, value in seg.contributions.items():
        without = head_probs({m: m != name for m in ("text", "audio", "video")})
        assert value == pytest.approx(seg.confidence - without[k], abs=1e-5)


def test_predictor_online_segments_ignore_later_segments(context_predictor, tiny):
    texts = tiny.texts[:5]
    clean = _probs(context_predictor.predict(subtitles=_cues(texts)))
    changed = texts[:3] + ["I am absolutely furious about this!", "Nothing ever goes right."]
    poisoned = _probs(context_predictor.predict(subtitles=_cues(changed)))
    assert np.abs(clean[3:] - poisoned[3:]).max() > 1e-4, "the change reached the model"
    np.testing.assert_allclose(poisoned[:3], clean[:3], atol=1e-6)
    # ... but earlier turns do reach later ones (it is a dialogue, not five clips)
    reordered = _probs(context_predictor.predict(subtitles=_cues([texts[1], *texts[1:]])))
    assert np.abs(reordered[1:] - clean[1:]).max() > 1e-4


def test_predictor_speakers_come_from_the_cues(context_predictor, tiny):
    texts = tiny.texts[:4]
    unnamed = _probs(context_predictor.predict(subtitles=_cues(texts)))
    one = _probs(context_predictor.predict(subtitles=_cues(texts, ["Ann"] * 4)))
    two = _probs(context_predictor.predict(subtitles=_cues(texts, ["Ann", "Bob", "Ann", "Bob"])))
    np.testing.assert_allclose(one, unnamed, atol=1e-6)  # one speaker unless the cues name two
    assert np.abs(two - unnamed).max() > 1e-5
