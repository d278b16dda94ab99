"""Text-encoder fine-tuning with past turns (``deepmsi.features.finetune``, ``prepare
--finetune-text``): it learns a word cue a random encoder cannot read, the folder loads as a
normal encoder that reads past turns exactly as it was trained, prepare and the Predictor feed it
those turns, finished folders are reused, and bad input is one clear error. A tiny random BERT
with a small word vocabulary stands in for MiniLM."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import deepmsi.features.finetune as finetune_mod
from deepmsi.cli import main
from deepmsi.data.records import Dataset, Utterance
from deepmsi.errors import ConfigError, DataError
from deepmsi.features.finetune import FinetuneOptions, finetune_text
from deepmsi.features.preparation import FINETUNED_TEXT, PrepareOptions, prepare
from deepmsi.features.text import (
    FINETUNED_CONFIG,
    DialogueText,
    TextEncoder,
    in_conversation,
    with_past_turns,
)
from deepmsi.labels import LabelSet

WORDS = ["great", "awful", "the", "a", "is", "was", "day", "food", "it", "so", "very", "and"]
SPEAKERS = ("ann", "bob")
LABELS = LabelSet("two", ("joy", "anger"))
# lr well above the MiniLM recipe's 5e-5: a random 2-layer encoder has nothing to keep
TEXT_ONLY = PrepareOptions(modalities="t", workers=1, progress=False)
FAST = {"past": 2, "frozen_layers": 1, "epochs": 6, "lr": 1e-2, "batch_size": 16, "progress": False}


def _tiny_bert(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    """A random BERT (hidden 32, 2 layers) whose vocabulary holds the corpus words."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", "|", *SPEAKERS, *WORDS]
    folder.mkdir(parents=True)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def _dialogues(
    splits=(("train", 24), ("dev", 6), ("test", 2)),
    turns: int = 6,
    seed: int = 0,
    text: bool = True,
    labelled: bool = True,
) -> Dataset:
    """Two-speaker dialogues; a turn is "joy" when it says "great", "anger" when "awful"."""
    rng = random.Random(seed)
    utts = []
    for split, n in splits:
        for d in range(n):
            for t in range(turns):
                label = rng.choice(LABELS.names)
                words = [rng.choice(WORDS[2:]) for _ in range(4)]
                words.insert(rng.randrange(5), "great" if label == "joy" else "awful")
                utts.append(
                    Utterance(
                        f"{split}{d}_{t}",
                        f"{split}{d}",
                        t,
                        SPEAKERS[t % 2],
                        " ".join(words) if text else None,
                        label if labelled else None,
                        split,
                    )
                )
    return Dataset("synthetic", LABELS, utts)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return _tiny_bert(tmp_path_factory.mktemp("base") / "bert")


@pytest.fixture(scope="module")
def tuned(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned") / "encoder"
    return finetune_text(
        _dialogues(), out, FinetuneOptions(base=str(base), **FAST), predict_all=True
    )


# ---- fine-tuning -----------------------------------------------------------------------------
def test_finetune_learns_a_word_cue(base, tuned):
    """Chance is 0.5 weighted F1 on a balanced 2-class dev set; the cue word is learnt."""
    assert tuned.trained and len(tuned.history) == FAST["epochs"]
    assert tuned.dev_weighted_f1 >= 0.9
    assert tuned.dev_weighted_f1 == max(h.dev_weighted_f1 for h in tuned.history)
    assert tuned.history[tuned.best_epoch - 1].dev_weighted_f1 == tuned.dev_weighted_f1
    spec = json.loads((tuned.path / FINETUNED_CONFIG).read_text())
    assert spec["past"] == 2 and spec["pooling"] == "target" and spec["max_len"] == 128
    assert spec["base"] == str(base) and spec["dev_weighted_f1"] == tuned.dev_weighted_f1
    assert [e["epoch"] for e in spec["epochs"]] == list(range(1, FAST["epochs"] + 1))
    assert (tuned.path / finetune_mod.HEAD).is_file()
    assert not list(tuned.path.parent.glob(".*tmp*"))  # the temporary folder was renamed


def test_only_the_top_layers_learn(base, tuned):
    """Embeddings and the bottom ``frozen_layers`` layers keep the base weights; the top changes.
    The saved folder loads with the plain Hugging Face loader."""
    from transformers import AutoModel

    before = AutoModel.from_pretrained(base).state_dict()
    after = AutoModel.from_pretrained(tuned.path).state_dict()
    for name, w in after.items():
        same = bool((w == before[name]).all())
        if name.startswith(("embeddings.", "encoder.layer.0.")):
            assert same, name
        elif name.startswith("encoder.layer.1.") and name.endswith("weight"):
            assert not same, name


def test_dev_split_is_carved_from_train_dialogues():
    ds = _dialogues(splits=(("train", 20),))
    ex = finetune_mod._examples(ds, past=2)
    dialogue = {u.id: u.dialogue_id for u in ds.utterances}
    train = {dialogue[ex.ids[i]] for i in ex.train}
    dev = {dialogue[ex.ids[i]] for i in ex.dev}
    assert len(dev) == 2 and not train & dev and len(train) == 18
    reordered = Dataset(ds.name, ds.labels, list(reversed(ds.utterances)))
    again = finetune_mod._examples(reordered, past=2)
    assert {dialogue[again.ids[i]] for i in again.dev} == dev  # deterministic, order-free


# ---- the encoder reads past turns as trained --------------------------------------------------
def test_encoder_pools_the_target_with_past_turns(tuned):
    enc = TextEncoder(str(tuned.path))
    assert enc.past == 2 and enc.dim == 32
    item = DialogueText("the great day", "ann", ("bob: it was awful", "ann: so", "bob: the food"))
    older = DialogueText(item.text, item.speaker, ("ann: very", *item.past[1:]))  # oldest differs
    other = DialogueText(item.text, item.speaker, ("bob: it was awful", "ann: so", "bob: a day"))
    v = enc.encode([item, older, other, DialogueText(item.text, item.speaker)])
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)  # only the last `past` turns are read
    assert not np.allclose(v[0], v[2], atol=1e-4)  # a different recent turn changes the vector
    assert not np.allclose(v[0], v[3], atol=1e-4)
    # The same vectors the fine-tune computed (from fp16 cached states) for every utterance.
    items = with_past_turns(_dialogues().utterances, enc.past)
    again = enc.encode([items[i] for i in tuned.ids])
    np.testing.assert_allclose(again, tuned.embeddings, atol=2e-2)
    assert np.abs(again - tuned.embeddings).mean() < 2e-3


def test_past_zero_ignores_context(tuned, tmp_path):
    folder = shutil.copytree(tuned.path, tmp_path / "p0")
    spec = json.loads((folder / FINETUNED_CONFIG).read_text())
    (folder / FINETUNED_CONFIG).write_text(json.dumps({**spec, "past": 0}))
    enc = TextEncoder(str(folder))
    assert enc.past == 0 and enc.version != TextEncoder(str(tuned.path)).version
    v = enc.encode(
        [
            DialogueText("a great day", "ann", ("bob: awful",)),
            DialogueText("a great day", "ann", ("bob: so very great",)),
            DialogueText("a great day", "ann"),
        ]
    )
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)
    np.testing.assert_allclose(v[0], v[2], atol=1e-6)


def test_plain_encoder_reads_text_alone(base):
    enc = TextEncoder(str(base))
    assert enc.past == 0
    alone = enc.encode(["a great day"])
    np.testing.assert_array_equal(
        alone, enc.encode([DialogueText("a great day", "ann", ("bob: x",))])
    )


def test_in_conversation_keeps_recent_turns_with_text():
    items = in_conversation(["hi", None, "so", "ok"], ["ann", "bob", None, "bob"], past=2)
    assert items[0] == DialogueText("hi", "ann", ())
    assert items[1] == DialogueText("", "bob", ("ann: hi",))
    assert items[3] == DialogueText("ok", "bob", ("ann: hi", "so"))
    assert items[3].pair(2) == ("bob: ok", "so | ann: hi")
    assert items[3].pair(1) == ("bob: ok", "so") and items[3].pair(0) == ("bob: ok", "")


# ---- prepare ---------------------------------------------------------------------------------
def test_prepare_feeds_past_turns(tuned, tmp_path):
    ds = _dialogues(splits=(("test", 2),))
    options = TEXT_ONLY.replace(text_encoder=str(tuned.path))
    cache = prepare(ds, tmp_path / "cache", options).cache
    spec = cache.manifest["text_encoder"]
    assert spec["past"] == 2 and spec["name"] == str(tuned.path) and spec["dim"] == 32
    enc = TextEncoder(str(tuned.path))
    third = ds.utterances[2]
    expected = DialogueText(
        third.text, third.speaker, tuple(f"{u.speaker}: {u.text}" for u in ds.utterances[:2])
    )
    stored = cache.load(third.id).text
    np.testing.assert_allclose(stored, enc.encode([expected])[0], atol=1e-5)
    assert not np.allclose(stored, enc.encode([third.text])[0], atol=1e-4)
    first = ds.utterances[0]  # no past turns: the same as the text alone with its speaker
    np.testing.assert_allclose(
        cache.load(first.id).text,
        enc.encode([DialogueText(first.text, first.speaker)])[0],
        atol=1e-5,
    )


def test_prepare_finetune_text_resumes(base, tmp_path, monkeypatch):
    ds = _dialogues(splits=(("train", 6), ("dev", 2), ("test", 1)), turns=4)
    tune = FinetuneOptions(**{**FAST, "epochs": 1})
    options = TEXT_ONLY.replace(text_encoder=str(base), finetune_text=tune)
    assert options.finetune_text.base == str(base)  # the base is the text encoder
    out = tmp_path / "cache"
    first = prepare(ds, out, options)
    folder = out / FINETUNED_TEXT
    assert (folder / FINETUNED_CONFIG).is_file()
    manifest = first.cache.manifest["text_encoder"]
    assert manifest["name"] == str(folder.resolve()) and manifest["past"] == 2
    assert first.prepared == len(ds.utterances)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(finetune_mod, "_finetune", no_training)
    again = prepare(ds, out, options)
    assert again.prepared == 0 and again.cached == len(ds.utterances)
    with pytest.raises(ConfigError, match="fine-tuned differently.*epochs"):
        prepare(ds, out, options.replace(finetune_text=tune.replace(epochs=2)))
    # the folder is a normal encoder for a plain prepare too
    plain = prepare(ds, tmp_path / "plain", TEXT_ONLY.replace(text_encoder=str(folder)))
    some = ds.utterances[3].id
    np.testing.assert_allclose(plain.cache.load(some).text, first.cache.load(some).text, atol=1e-6)


# ---- bad input -------------------------------------------------------------------------------
def test_bad_input_is_one_clear_error(base, tmp_path):
    opts = FinetuneOptions(base=str(base), **FAST)
    with pytest.raises(DataError, match="no utterance has text"):
        finetune_text(_dialogues(text=False), tmp_path / "a", opts)
    with pytest.raises(DataError, match="no labelled utterance"):
        finetune_text(_dialogues(labelled=False), tmp_path / "b", opts)
    with pytest.raises(DataError, match="fewer than 2 train dialogues"):
        finetune_text(_dialogues(splits=(("train", 1),)), tmp_path / "c", opts)
    with pytest.raises(ConfigError, match="cannot load text encoder") as err:
        finetune_text(_dialogues(), tmp_path / "d", opts.replace(base=str(tmp_path / "none")))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="frozen_layers 5 > the 2 layers"):
        finetune_text(_dialogues(), tmp_path / "e", opts.replace(frozen_layers=5))
    with pytest.raises(ConfigError, match="past must be an integer >= 0"):
        FinetuneOptions(past=-1)
    with pytest.raises(ConfigError, match="lr"):
        FinetuneOptions(lr=0.0)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a fine-tuned text encoder"):
        finetune_text(_dialogues(), tmp_path / "taken", opts)
    with pytest.raises(ConfigError, match="differs from text_encoder"):
        PrepareOptions(text_encoder=str(base), finetune_text=FinetuneOptions(base="other"))
    assert not list(tmp_path.glob("[a-e]"))  # nothing half-written


# ---- CLI and Predictor -----------------------------------------------------------------------
class _Asked(Exception):
    pass


def test_cli_prepare_finetune_options(monkeypatch, capsys):
    import deepmsi.data
    import deepmsi.features.preparation as prepare_mod

    def fake_prepare(dataset, out, options):
        raise _Asked(options)

    monkeypatch.setattr(
        deepmsi.data, "load_dataset", lambda spec, on_error, labels=None: _dialogues()
    )
    monkeypatch.setattr(prepare_mod, "prepare", fake_prepare)
    args = ["prepare", "--dataset", "meld:x", "--out", "c", "--text-encoder", "some/bert"]
    with pytest.raises(_Asked) as asked:
        main(
            [
                *args,
                "--finetune-text",
                "--text-past",
                "3",
                "--finetune-epochs",
                "2",
                "--finetune-frozen-layers",
                "1",
            ]
        )
    tune = asked.value.args[0].finetune_text
    assert (tune.base, tune.past, tune.epochs, tune.frozen_layers) == ("some/bert", 3, 2, 1)
    with pytest.raises(_Asked) as asked:
        main(args)
    assert asked.value.args[0].finetune_text is None
    assert main([*args, "--text-past", "3"]) == 2
    assert "only apply with --finetune-text" in capsys.readouterr().err
    assert main([*args, "--finetune-frozen-layers", "1"]) == 2
    assert "only apply with --finetune-text" in capsys.readouterr().err
    assert main([*args, "--finetune-text", "--finetune-epochs", "0"]) == 2
    assert "epochs must be an integer >= 1" in capsys.readouterr().err


def test_cli_prepare_finetune_text_end_to_end(tmp_path, capsys):
    """MELD CSVs (text only) -> fine-tune with the CLI defaults (2 frozen layers, so a 3-layer
    encoder) -> a cache whose features read 2 past turns."""
    from helpers_data import write_meld_csv

    ds = _dialogues(splits=(("train", 4), ("dev", 2), ("test", 1)), turns=4)
    for split in ("train", "dev", "test"):
        rows = [
            (u.dialogue_id[len(split) :], u.turn, u.speaker, u.label, u.text)
            for u in ds.split(split)
        ]
        write_meld_csv(tmp_path / "meld" / f"{split}_sent_emo.csv", rows)
    base = _tiny_bert(tmp_path / "bert", layers=3)
    out = tmp_path / "cache"
    args = [
        "prepare",
        "--dataset",
        f"meld:{tmp_path / 'meld'}",
        "--out",
        str(out),
        "--text-encoder",
        str(base),
        "--modalities",
        "t",
        "--workers",
        "1",
        "--no-progress",
        "--finetune-text",
        "--text-past",
        "2",
        "--finetune-epochs",
        "1",
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prepared"] == len(ds.utterances) and not summary["problems"]
    spec = json.loads((out / FINETUNED_TEXT / FINETUNED_CONFIG).read_text())
    assert spec["past"] == 2 and spec["options"]["frozen_layers"] == 2
    assert json.loads((out / "manifest.json").read_text())["text_encoder"]["past"] == 2


class _Recorder:
    """A text encoder stand-in that records what it is asked to encode."""

    def __init__(self, past: int) -> None:
        self.past, self.seen = past, []

    def encode(self, items):
        self.seen.extend(items)
        return np.ones((len(items), 3), np.float32)


@pytest.mark.parametrize("past", [0, 2])
def test_predictor_feeds_earlier_segments_as_past_turns(past):
    from deepmsi.inference.predictor import Predictor, _Span

    predictor = Predictor.__new__(Predictor)
    predictor.text_encoder = _Recorder(past)
    predictor.audio_encoder = predictor._cropper = None
    predictor.config = SimpleNamespace(text_dim=3)
    predictor.last_timings = {}
    texts = ["hello", None, "so", "ok"]
    spans = [_Span(start=float(i), end=i + 1.0, text=t) for i, t in enumerate(texts)]
    inputs = predictor._encode(None, spans)
    assert inputs.present["text"].tolist() == [True, False, True, True]
    seen = predictor.text_encoder.seen
    if past == 0:
        assert seen == ["hello", "so", "ok"]
    else:
        assert seen == [
            DialogueText("hello"),
            DialogueText("so", "", ("hello",)),
            DialogueText("ok", "", ("hello", "so")),
        ]
