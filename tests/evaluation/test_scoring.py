"""Scoring a trained run on another labelled dataset: prepared on the fly with the run's encoders,
labels mapped onto the run's set, unmapped labels reported and left out (never scored)."""

from __future__ import annotations

import csv
import json

from deepmsi.cli import main
from deepmsi.data.cache import FeatureCache


def test_evaluate_another_dataset_with_a_label_map(tiny, tmp_path):
    # A folder dataset in RAVDESS-like vocabulary over the tiny run's clips.
    names = ["calm", "happy", "angry", "calm", "boredom", "sad"]
    folder = tmp_path / "other"
    folder.mkdir()
    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "emotion", "transcript", "speaker"])
        for i, (clip, name) in enumerate(zip(tiny.clips, names, strict=False)):
            (folder / clip.name).write_bytes(clip.read_bytes())
            w.writerow([clip.name, name, tiny.texts[i], f"s{i % 2}"])
    mapping = {"calm": "neutral", "happy": "joy", "angry": "anger", "sad": "sadness"}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--run",
        str(tiny.run_dir),
        "--dataset",
        f"folder:{folder}",
        "--label-map",
        str(tmp_path / "map.json"),
        "--split",
        "all",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["utterances"] == 5  # boredom maps to nothing: left out, not scored
    assert report["left_out"] == {"boredom": 1}
    assert (
        report["labels"]
        == json.loads((tiny.run_dir / "config.json").read_text())["labels"]["names"]
    )
    # the on-the-fly cache was made with the run's encoders and frame geometry
    run_manifest = json.loads((tiny.run_dir / "config.json").read_text())["cache"]["manifest"]
    made = FeatureCache(out / "cache").manifest
    for key in ("text_encoder", "audio_encoder", "frames", "image_size", "sample_rate"):
        assert made[key] == run_manifest[key], key


def test_evaluate_refuses_an_incompatible_cache(tiny, tmp_path, capsys):
    from helpers_pipeline import make_cache

    other = make_cache(tmp_path / "toy", n=20)
    assert main(["evaluate", "--run", str(tiny.run_dir), "--cache", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(other) in err and "the run expects" in err


def test_evaluate_in_bf16_says_so(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--run", str(tiny.run_dir), "--split", "all", "--out", str(out)]
    assert main([*argv, "--precision", "bf16"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["precision"] == "bf16"
    assert "video backbone in bf16" in capsys.readouterr().out
    assert main(argv) == 0  # the default puts the run's backbone back in fp32
    assert json.loads((out / "report.json").read_text())["precision"] == "fp32"
