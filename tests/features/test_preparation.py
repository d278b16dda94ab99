"""prepare: features per utterance, resumable, atomic, refuses mixed caches, parallel = serial,
any Hugging Face encoder folder loads (tiny random models saved here), bad clips named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import deepmsi.features.preparation as prepare_mod
from deepmsi.cli import main
from deepmsi.data import load_dataset
from deepmsi.data.cache import ITEMS, FeatureCache
from deepmsi.demo.synthetic import write_corpus
from deepmsi.errors import ConfigError, DataError
from deepmsi.features.audio import SpectralEncoder
from deepmsi.features.preparation import PrepareOptions, prepare

SMALL = {"frames": 2, "image_size": 32, "workers": 1, "progress": False}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(
        tmp_path_factory.mktemp("corpus") / "meld",
        seed=3,
        dialogues=4,
        utterances_per_dialogue=7,
        splits=(2, 1, 1),
        seconds=0.8,
        fps=8,
        size=64,
        progress=False,
    )


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> FeatureCache:
    """An uninterrupted serial prepare of the corpus."""
    return prepare(
        f"meld:{corpus}", tmp_path_factory.mktemp("ref") / "cache", PrepareOptions(**SMALL)
    ).cache


def _same_features(a: FeatureCache, b: FeatureCache) -> None:
    assert [r.id for r in a.records()] == [r.id for r in b.records()]
    for r in a.records():
        x, y = a.load(r.id), b.load(r.id)
        np.testing.assert_allclose(x.text, y.text, atol=1e-6)
        np.testing.assert_array_equal(x.audio, y.audio)
        np.testing.assert_array_equal(x.frames, y.frames)


def test_every_utterance_gets_its_features(corpus, reference):
    dataset = load_dataset(f"meld:{corpus}")
    records = reference.records()
    assert [r.id for r in records] == [u.id for u in dataset.utterances]
    m = reference.manifest
    assert m["text_encoder"]["name"] == "minilm" and m["text_encoder"]["dim"] == 384
    assert m["audio_encoder"]["name"] == "spectral" and m["frames"] == 2
    assert reference.labels.names == dataset.labels.names
    item = reference.load(records[0].id)
    assert item.text.shape == (384,) and item.text.dtype == np.float32
    assert item.audio.shape == (reference.audio_dim,) and np.abs(item.audio).sum() > 0
    assert item.frames.shape == (2, 32, 32, 3) and item.frames.dtype == np.uint8
    # distinct utterances give distinct features (nothing is a constant placeholder)
    other = reference.load(records[1].id)
    assert not np.allclose(item.text, other.text) and not np.allclose(item.audio, other.audio)


def test_rerun_skips_cached_items(corpus, reference, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(reference.path, out)
    victim = reference.records()[3].id
    reference_item = reference.load(victim)
    FeatureCache(out).item_path(victim).unlink()
    result = prepare(f"meld:{corpus}", out, PrepareOptions(**SMALL))
    assert result.prepared == 1 and result.cached == len(reference.records()) - 1
    np.testing.assert_array_equal(FeatureCache(out).load(victim).frames, reference_item.frames)


def test_killed_prepare_leaves_no_half_entry_and_resumes(corpus, reference, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    real_write = prepare_mod.write_item
    calls = {"n": 0}

    def write_then_die(path, features):
        calls["n"] += 1
        if calls["n"] == 7:  # dies in the middle of writing the 7th entry
            path.with_name(f".{path.name}.tmp1").write_bytes(b"half")
            raise KeyboardInterrupt
        real_write(path, features)

    monkeypatch.setattr(prepare_mod, "write_item", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare(f"meld:{corpus}", out, PrepareOptions(**SMALL))
    done = sorted(p.name for p in (out / ITEMS).glob("*.npz"))
    assert len(done) == 6  # what was finished is kept, and only that
    assert [r.id for r in FeatureCache(out).records()] == [r.id for r in reference.records()][
        :6
    ]  # the partial cache is consistent: it lists only finished items
    monkeypatch.setattr(prepare_mod, "write_item", real_write)
    result = prepare(f"meld:{corpus}", out, PrepareOptions(**SMALL))
    assert result.cached == 6 and result.prepared == len(reference.records()) - 6
    _same_features(FeatureCache(out), reference)


def test_a_cache_made_differently_is_refused(corpus, reference, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(reference.path, out)
    with pytest.raises(DataError, match="frames"):
        prepare(f"meld:{corpus}", out, PrepareOptions(**{**SMALL, "frames": 3}))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a feature cache"):
        prepare(f"meld:{corpus}", tmp_path / "junk", PrepareOptions(**SMALL))


def test_two_workers_give_the_same_features(corpus, reference, tmp_path):
    result = prepare(
        f"meld:{corpus}", tmp_path / "cache", PrepareOptions(**{**SMALL, "workers": 2})
    )
    assert len(reference.records()) >= prepare_mod.MIN_PARALLEL  # the pool really ran
    _same_features(result.cache, reference)


def _corrupt_one(corpus: Path, tmp_path: Path) -> tuple[Path, Path]:
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    clip = sorted((copy / "train_splits").glob("*.mp4"))[2]
    clip.write_bytes(clip.read_bytes()[:300])  # truncated
    return copy, clip


def test_bad_clip_raises_naming_it_and_keeps_earlier_items(corpus, tmp_path):
    copy, clip = _corrupt_one(corpus, tmp_path)
    out = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        prepare(f"meld:{copy}", out, PrepareOptions(**SMALL))
    assert str(clip) in str(err.value) and "\n" not in str(err.value)
    assert len(list((out / ITEMS).glob("*.npz"))) >= 1  # the work before it is not lost


def test_bad_clip_is_skipped_and_listed(corpus, tmp_path):
    copy, clip = _corrupt_one(corpus, tmp_path)
    result = prepare(
        f"meld:{copy}", tmp_path / "cache", PrepareOptions(**{**SMALL, "on_error": "skip"})
    )
    assert [p.file for p in result.problems] == [str(clip)]
    total = len(load_dataset(f"meld:{copy}").utterances)
    assert len(result.cache.records()) == total - 1
    assert result.cache.problems()[0].id == result.problems[0].id


def test_cli_prepare_json(corpus, tmp_path, capsys):
    out = tmp_path / "cache"
    code = main(
        [
            "prepare",
            "--dataset",
            f"meld:{corpus}",
            "--out",
            str(out),
            "--frames",
            "2",
            "--image-size",
            "32",
            "--modalities",
            "ta",
            "--workers",
            "1",
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["utterances"] == summary["prepared"] > 0 and summary["problems"] == []
    cache = FeatureCache(out)
    assert cache.manifest["frames"] is None  # video was not asked for
    assert cache.load(cache.records()[0].id).frames is None
    assert main(["prepare", "--dataset", f"meld:{tmp_path}/nowhere", "--out", str(out)]) == 2
    assert "nowhere: no such file" in capsys.readouterr().err


# ---- any Hugging Face folder loads: tiny random models saved here -----------------------------
def _tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz")
    (folder).mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def _tiny_wav2vec2(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(folder)
    return folder


def test_local_hugging_face_encoders(corpus, tmp_path):
    bert, w2v = _tiny_bert(tmp_path / "bert"), _tiny_wav2vec2(tmp_path / "w2v")
    options = PrepareOptions(
        **{**SMALL, "text_encoder": str(bert), "audio_encoder": str(w2v), "modalities": "ta"}
    )
    cache = prepare(f"meld:{corpus}", tmp_path / "cache", options).cache
    assert cache.text_dim == 24 and cache.audio_dim == 16
    a, b = (cache.load(r.id) for r in cache.records()[:2])
    assert a.text.shape == (24,) and a.audio.shape == (16,)
    assert not np.allclose(a.text, b.text) and not np.allclose(a.audio, b.audio)
    assert cache.manifest["text_encoder"]["name"] == str(bert)


def test_unloadable_encoder_is_a_one_line_error(corpus, tmp_path):
    options = PrepareOptions(**{**SMALL, "text_encoder": str(tmp_path / "no-model")})
    with pytest.raises(ConfigError, match="cannot load text encoder") as err:
        prepare(f"meld:{corpus}", tmp_path / "cache", options)
    assert "\n" not in str(err.value)


@pytest.mark.realdata
def test_real_crema_d_flv_clips(shared_data, tmp_path):
    """FLV with a data stream first, VP6 video and MP3 audio: every clip gives all three."""
    result = prepare(
        f"folder:{shared_data / 'crema-d-clips'}",
        tmp_path / "cache",
        PrepareOptions(frames=4, image_size=64, workers=1, progress=False),
    )
    records = result.cache.records()
    assert len(records) == 6 and not result.problems
    for r in records:
        item = result.cache.load(r.id)
        assert item.text is not None and item.audio is not None and item.frames is not None
        assert item.frames.shape == (4, 64, 64, 3) and item.frames.std() > 5
    assert result.faces_found >= 0.8 * result.frames_total  # a frontal face in every clip


@pytest.mark.realdata
@pytest.mark.slow
def test_real_iemocap_clips_prepare_and_train(shared_data, tmp_path):
    """All 129 real clips decode (16 kHz speech of the clip's length, faces in most), and the
    cache trains: the whole pipeline on real media."""
    from deepmsi.config import model_preset, train_preset
    from deepmsi.data.media import probe
    from deepmsi.training.loop import train

    result = prepare(
        f"folder:{shared_data / 'iemocap-clips'}",
        tmp_path / "cache",
        PrepareOptions(frames=2, image_size=48, workers=2, progress=False),
    )
    cache = result.cache
    records = cache.records()
    assert len(records) == 129 and not result.problems
    with_face = 0
    for r in records:
        item = cache.load(r.id)
        assert item.text is not None and item.frames is not None and item.frames.std() > 5
        assert item.audio is not None and np.abs(item.audio).sum() > 0
        with_face += item.faces > 0
    assert with_face >= 0.8 * len(records), with_face
    # speech is cut to the clip: the spectral "active seconds" feature is within the clip length
    active = SpectralEncoder().feature_names.index("rhythm.active_seconds")
    for r in records[:10]:
        assert 0.2 < cache.load(r.id).audio[active] <= probe(r.video).duration + 0.1
    run = train(
        cache,
        tmp_path / "run",
        model_preset("tiny"),
        train_preset("tiny", epochs=1),
        progress=False,
    )
    assert run.epochs_run == 1 and (tmp_path / "run" / "best.safetensors").is_file()
