"""Model cards: train writes one, evaluate refreshes it with per-class test scores, the facts
match the run folder, and a run folder without one (or with a damaged one) still gets one."""

from __future__ import annotations

import json
import shutil

import pytest

from deepmsi.runs.card import CARD_JSON, CARD_MD, build_card, read_card, refresh_card

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def run_copy(tiny, tmp_path):
    """A copy of the tiny run (tests here rewrite its card)."""
    return shutil.copytree(tiny.run_dir, tmp_path / "run")


def test_train_writes_a_card_with_the_run_facts(tiny):
    from deepmsi.data.cache import FeatureCache
    from deepmsi.runs.folder import read_config, read_metrics

    card = read_card(tiny.run_dir)
    assert card is not None and (tiny.run_dir / CARD_MD).is_file()
    config = read_config(tiny.run_dir)
    splits = json.loads((tiny.run_dir / "splits.json").read_text())
    cache = FeatureCache(tiny.cache)
    assert card.labels == list(config.labels.names) and card.label_set == config.labels.name
    assert card.dataset["sizes"] == {
        "train": len(splits["train"]),
        "dev": len(splits["dev"]),
        "test": len(cache.records("test")),
    }
    assert card.dataset["name"] == "meld"
    best = [h for h in read_metrics(tiny.run_dir) if h["best"]][-1]
    assert card.selection["epoch"] == best["epoch"]
    assert card.selection["dev"]["weighted_f1"] == best["dev_weighted_f1"]
    assert card.training["seed"] == config.train_config.seed == 0
    assert card.model["modalities"] == ["text", "audio", "video"]
    assert card.model["text_encoder"]["name"] == cache.manifest["text_encoder"]["name"]
    assert card.model["video"]["initialised_from"] == "scratch"
    assert card.versions["torch"] and card.versions["deepmsi"]
    # other tests of the session may have evaluated the run since: train's command comes first
    assert card.commands[0] == "python: deepmsi.train(...)"
    fresh = build_card(tiny.run_dir)  # what train wrote, before any evaluation
    assert fresh.test is None and "not scored on its test split yet" in " ".join(fresh.limits)
    clips = card.dataset["train_video_clips"]
    assert f"video trained from scratch on {clips} clips" in card.limits[0]
    text = (tiny.run_dir / CARD_MD).read_text()
    for heading in (
        "## Data",
        "## Model",
        "## Training and selection",
        "## Test metrics",
        "## Known limits",
        "## Commands that made it",
    ):
        assert heading in text
    assert ", ".join(card.labels) in text  # the label order, as the model outputs it
    summary = card.summary()
    assert "\n" not in summary and card.label_set in summary and "epoch" in summary


def test_evaluate_refreshes_the_card_with_per_class_test_scores(run_copy, capsys):
    from deepmsi.cli import main
    from deepmsi.evaluation.scoring import evaluate

    refresh_card(run_copy)  # start from train's card, whatever the session did to the run
    (run_copy / CARD_JSON).write_text(
        json.dumps({**build_card(run_copy).to_dict(), "commands": ["python: deepmsi.train(...)"]})
    )
    report = evaluate(run_copy, split="test", progress=False)
    card = read_card(run_copy)
    assert card.test is not None and card.test["weighted_f1"] == report.weighted_f1
    assert {k: v["f1"] for k, v in card.test["per_class"].items()} == {
        k: v["f1"] for k, v in report.per_class.items()
    }
    assert card.commands == ["python: deepmsi.train(...)", "python: deepmsi.evaluate(...)"]
    text = (run_copy / CARD_MD).read_text()
    assert "| label | precision | recall | F1 | support |" in text
    assert all(f"| {name} |" in text for name in card.labels)
    assert "test wF1" in card.summary()

    assert main(["evaluate", "--run", str(run_copy), "--split", "dev"]) == 0
    capsys.readouterr()
    card = read_card(run_copy)
    assert card.commands[-1] == f"deepmsi evaluate --run {run_copy} --split dev"
    assert [e["split"] for e in card.evaluations] == ["test", "dev"]  # the test one is kept
    assert "## Other evaluations" in (run_copy / CARD_MD).read_text()


def test_old_or_damaged_run_folders_still_get_a_card(run_copy, caplog):
    from deepmsi.inference.predictor import Predictor

    (run_copy / CARD_JSON).unlink()
    (run_copy / CARD_MD).unlink()
    assert read_card(run_copy) is None
    assert Predictor.from_run(run_copy).card.labels == build_card(run_copy).labels
    (run_copy / CARD_JSON).write_text("[1, 2")
    assert read_card(run_copy) is None and "unreadable model card" in caplog.text
    card = refresh_card(run_copy, notes=["recorded in a noisy room"])
    assert card is not None and read_card(run_copy).notes == ["recorded in a noisy room"]
    assert "- recorded in a noisy room" in (run_copy / CARD_MD).read_text()


def test_a_read_only_run_folder_is_not_an_error(run_copy, monkeypatch, caplog):
    import deepmsi.runs.card as card_module

    def refuse(path, text):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(card_module, "atomic_write_text", refuse)
    assert refresh_card(run_copy) is None
    assert "model card not written" in caplog.text
