"""The offline demo end to end on a shrunken corpus: every stage runs and leaves its files, the run
folder is usable by predict, and a re-run reuses the finished stages."""

from __future__ import annotations

import json

import pytest

from deepmsi.demo.demo import ABLATION, run_demo

SMALL = {
    "dialogues": 4,
    "utterances_per_dialogue": 7,
    "seconds": 0.8,
    "fps": 6,
    "size": 64,
    "splits": (2, 1, 1),
}


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, corpus=SMALL, train_overrides={"epochs": 1}, progress=False)
    for name in ("report.json", "confusion.png", "ablation.json", "ablation.md"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "ablation.json").read_text())
    assert sorted(r["modalities"] for r in rows) == sorted([*ABLATION, "tav"])
    report = json.loads((out / "report.json").read_text())
    assert report["utterances"] == result.report.utterances > 0
    assert isinstance(result.multimodal_wins, bool)
    # every run folder of the demo has a model card; the T+A+V run's has the test scores
    from deepmsi.demo.demo import SYNTHETIC_NOTE
    from deepmsi.runs.card import read_card

    for run_dir in [result.run_dir, *(out / "runs" / m for m in ABLATION)]:
        card = read_card(run_dir)
        assert card is not None and (run_dir / "MODEL_CARD.md").is_file(), run_dir
        assert card.notes == [SYNTHETIC_NOTE] and card.test is not None
        assert card.commands[0] == "python: deepmsi.train(...)"
    assert read_card(result.run_dir).test["weighted_f1"] == report["weighted_f1"]

    from deepmsi.inference.predictor import Predictor

    clip = sorted((out / "corpus" / "output_repeated_splits_test").glob("*.mp4"))[0]
    prediction = Predictor.from_run(result.run_dir).predict(clip, text="I am so happy")
    assert prediction.label in prediction.labels

    again = run_demo(out, corpus=SMALL, train_overrides={"epochs": 1}, progress=False)
    assert again.seconds["prepare"] < result.seconds["prepare"]  # the cache is reused
    assert again.report.weighted_f1 == result.report.weighted_f1  # and the trained run


@pytest.mark.slow
def test_two_demos_print_the_same_numbers_whatever_the_callers_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    tables = []
    for i, threads in enumerate((1, 2)):
        torch.set_num_threads(threads)
        result = run_demo(
            tmp_path / f"d{i}", corpus=SMALL, train_overrides={"epochs": 2}, progress=False
        )
        rows = json.loads((tmp_path / f"d{i}" / "ablation.json").read_text())
        tables.append([(r["modalities"], r["accuracy"], r["weighted_f1"]) for r in rows])
        assert torch.get_num_threads() == threads  # restored afterwards
        assert result.report.utterances > 0
    torch.set_num_threads(before)
    assert tables[0] == tables[1]
