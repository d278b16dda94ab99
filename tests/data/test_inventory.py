"""``deepmsi inspect`` and ``inspect_dataset``: counts, modalities actually present, problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_data import truncate, write_clip, write_meld_csv

from deepmsi.cli import main
from deepmsi.data import Dataset, Utterance
from deepmsi.data.inventory import inspect_dataset
from deepmsi.errors import DataError
from deepmsi.labels import MELD7


@pytest.fixture(scope="module")
def meld(tmp_path_factory) -> Path:
    """MELD layout: train has clips (one good, one truncated, one empty, one audio-only) and an
    unknown label; dev and test are text-only."""
    root = tmp_path_factory.mktemp("meld")
    write_meld_csv(
        root / "train_sent_emo.csv",
        [
            (0, 0, "Ross", "joy", "Hi."),
            (0, 1, "Rachel", "anger", "No."),
            (1, 0, "Joey", "neutral", "Hey."),
            (1, 1, "Monica", "sadness", "Oh."),
            (1, 2, "Phoebe", "happyish", "La."),
        ],
    )
    write_meld_csv(root / "dev_sent_emo.csv", [(0, 0, "A", "fear", "Eek."), (0, 1, "B", "joy", "")])
    write_meld_csv(root / "test_sent_emo.csv", [(3, 0, "C", "disgust", "Ugh.")])
    clips = root / "train_splits"
    write_clip(clips / "dia0_utt0.mp4", seconds=0.5, video=(32, 32, 8), audio=(16000, 1))
    truncate(write_clip(clips / "dia0_utt1.mp4", seconds=0.5, video=(32, 32, 8)))
    (clips / "dia1_utt0.mp4").touch()
    write_clip(clips / "dia1_utt1.mp4", seconds=0.5, video=None, audio=(16000, 1))
    return root


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["inspect", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_shape(meld, capsys):
    code, out, err = run_cli(capsys, "--dataset", f"meld:{meld}", "--json")
    assert code == 0
    report = json.loads(out)  # stdout is one JSON object; the progress bar is on stderr
    assert "probing media" in err
    assert list(report["splits"]) == ["train", "dev", "test"]
    for split in report["splits"].values():
        assert set(split) == {"utterances", "dialogues", "labels"}
        assert list(split["labels"]) == list(MELD7.names)
    train = report["splits"]["train"]
    assert (train["utterances"], train["dialogues"]) == (4, 2)
    assert train["labels"] == {
        "neutral": 1,
        "surprise": 0,
        "fear": 0,
        "sadness": 1,
        "joy": 1,
        "disgust": 0,
        "anger": 1,
    }
    assert report["splits"]["dev"]["utterances"] == 2 and report["splits"]["test"]["dialogues"] == 1
    # text: every non-empty transcript; audio/video: only streams a probe finds in a real file.
    assert report["modalities"] == {"text": 6, "audio": 2, "video": 1}
    assert report["dataset"] == "meld" and report["label_set"] == "meld7"

    root = meld.resolve()
    problems = {p["id"]: p for p in report["problems"]}
    assert all(set(p) == {"id", "file", "error"} for p in report["problems"])
    assert len(report["problems"]) == 3
    assert problems["train_dia1_utt2"]["file"] == str(root / "train_sent_emo.csv")
    assert "unknown label 'happyish'" in problems["train_dia1_utt2"]["error"]
    truncated = problems["train_dia0_utt1"]
    assert truncated["file"] == str(root / "train_splits" / "dia0_utt1.mp4")
    assert "unreadable media" in truncated["error"]
    assert problems["train_dia1_utt0"]["error"] == "empty file (0 bytes)"


def test_no_probe_counts_existing_files(meld, capsys):
    code, out, _ = run_cli(capsys, "--dataset", f"meld:{meld}", "--json", "--no-probe")
    report = json.loads(out)
    assert code == 0 and report["media_probed"] is False
    # The truncated clip and the audio-only clip count as both audio and video unprobed.
    assert report["modalities"] == {"text": 6, "audio": 3, "video": 3}
    assert sorted(p["id"] for p in report["problems"]) == ["train_dia1_utt0", "train_dia1_utt2"]


def test_table(meld, capsys):
    code, out, _ = run_cli(capsys, "--dataset", f"meld:{meld}")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "dataset meld (labels: meld7)"
    assert lines[1].split() == ["split", "utterances", "dialogues", *MELD7.names]
    assert lines[2].split() == ["train", "4", "2", "1", "0", "0", "1", "1", "0", "1"]
    assert lines[5].split()[:3] == ["all", "7", "4"]
    assert "modalities: text 6/7, audio 2/7, video 1/7" in out
    assert "problems: 3" in out and "dia0_utt1.mp4: unreadable media" in out


def test_on_error_raise_stops_with_one_line(meld, capsys):
    code, out, err = run_cli(capsys, "--dataset", f"meld:{meld}", "--on-error", "raise")
    assert code == 2 and out == ""
    [line] = [x for x in err.splitlines() if "error" in x]
    assert line.startswith("deepmsi inspect: error: ") and "unknown label 'happyish'" in line


def test_missing_path_exits_2(tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    code, out, err = run_cli(capsys, "--dataset", f"folder:{missing}", "--json")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"deepmsi inspect: error: {missing}: no such file or directory"
    ]


def test_bad_spec_exits_2(capsys):
    code, _, err = run_cli(capsys, "--dataset", "mosi:/data")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown dataset kind" in err


def test_shared_media_is_probed_once(tmp_path, monkeypatch):
    """IEMOCAP-style: utterances cut from one dialogue video; a broken one is one problem."""
    import deepmsi.data.media as media

    good = write_clip(tmp_path / "good.mp4", seconds=0.5, video=(32, 32, 8), audio=None)
    broken = tmp_path / "dialog.avi"
    broken.write_bytes(b"RIFF" + b"\0" * 60)
    wav = write_clip(tmp_path / "u1.wav", seconds=0.2, video=None, audio=(16000, 1))
    utts = [
        Utterance("u0", "d", 0, "F", "a", "joy", "train", video=good, audio=None, start=0, end=1),
        Utterance("u1", "d", 1, "M", "b", "joy", "train", video=good, audio=wav),
        Utterance("u2", "e", 0, "F", None, "fear", "test", video=broken, audio=None),
        Utterance("u3", "e", 1, "M", "", "fear", "test", video=broken, audio=None),
    ]
    dataset = Dataset("toy", MELD7, utts)
    calls = []
    real_probe = media.probe
    monkeypatch.setattr(media, "probe", lambda p: calls.append(p) or real_probe(p))

    inv = inspect_dataset(dataset, progress=False)
    assert sorted(calls) == sorted([good, broken, wav])  # each file opened once
    assert inv.modalities == {"text": 2, "audio": 1, "video": 2}
    assert inv.splits["train"].dialogues == 1 and inv.splits["test"].labels["fear"] == 2
    [problem] = inv.problems
    assert problem.id is None and problem.file == str(broken)
    assert problem.error.endswith("(used by 2 utterances)")
    assert inv.to_dict()["problems"] == [problem.to_dict()]

    with pytest.raises(DataError) as err:
        inspect_dataset(dataset, on_error="raise", progress=False)
    assert err.value.path == str(broken)


def test_dataset_problems_are_kept(tmp_path):
    dataset = Dataset("toy", MELD7, [], problems=[])
    assert inspect_dataset(dataset).to_dict() == {
        "dataset": "toy",
        "label_set": "meld7",
        "splits": {},
        "modalities": {"text": 0, "audio": 0, "video": 0},
        "media_probed": True,
        "problems": [],
    }


@pytest.mark.realdata
def test_real_crema_d(shared_data, capsys):
    code, out, _ = run_cli(capsys, "--dataset", f"folder:{shared_data / 'crema-d-clips'}", "--json")
    report = json.loads(out)
    assert code == 0 and report["problems"] == []
    assert report["modalities"] == {"text": 6, "audio": 6, "video": 6}
    assert report["splits"]["train"]["utterances"] == 6


@pytest.mark.realdata
def test_real_ravdess_and_meld(shared_data):
    ravdess = inspect_dataset(f"folder:{shared_data / 'ravdess'}", progress=False).to_dict()
    assert [s["utterances"] for s in ravdess["splits"].values()] == [840, 120, 120]
    assert ravdess["modalities"] == {"text": 0, "audio": 1080, "video": 0}
    assert ravdess["problems"] == []
    meld = inspect_dataset(f"meld:{shared_data / 'meld'}").to_dict()
    assert [s["utterances"] for s in meld["splits"].values()] == [9989, 1109, 2610]
    assert meld["modalities"]["audio"] == meld["modalities"]["video"] == 0
