"""Dataset readers on small generated layouts (MELD CSVs, an IEMOCAP tree, labels.csv folders),
their errors on bad input, and the real annotation files in ../shared/data."""

from __future__ import annotations

import csv
import pickle
from collections import Counter
from pathlib import Path

import pytest
from helpers_data import MELD_COLUMNS, write_meld_csv

from deepmsi.data import load_dataset, parse_spec
from deepmsi.errors import ConfigError, DataError
from deepmsi.labels import IEMOCAP6, MELD7, RAVDESS8

MELD_CLIP_DIRS = {
    "train": "train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}


MELD_ROWS = {
    # Dialogue 1 comes first in the file and its turns are out of order: the reader sorts them.
    "train": [
        (1, 1, "Ross", "anger", "No!"),
        (1, 0, "Monica", "surprise", "Ross?"),
        (0, 0, "Chandler", "neutral", "Could this BE any simpler?"),
        (0, 1, "Joey", "joy", "How you doin'?"),
        (0, 2, "Chandler", "sadness", "Iâ€™m fine."),  # mojibake, as in circulating copies
    ],
    "dev": [(0, 0, "Rachel", "fear", "What was that?"), (0, 1, "Phoebe", "disgust", "Ew.")],
    "test": [(0, 0, "Ross", "neutral", "")],  # an empty transcript
}


def make_meld(root: Path, *, nested: bool = False, clips: bool = False) -> Path:
    """MELD's CSVs in ``root`` (or ``root/<split>/`` when ``nested``, as in MELD.Raw), and
    placeholder clips (the reader only indexes them) for every train utterance but dia0_utt2."""
    for split, rows in MELD_ROWS.items():
        folder = root / split if nested else root
        write_meld_csv(folder / f"{split}_sent_emo.csv", rows)
        if clips:
            clip_dir = folder / MELD_CLIP_DIRS[split]
            clip_dir.mkdir(parents=True, exist_ok=True)
            for dia, utt, *_ in rows:
                if (split, dia, utt) != ("train", 0, 2):
                    (clip_dir / f"dia{dia}_utt{utt}.mp4").touch()
            (clip_dir / "._dia0_utt0.mp4").touch()  # macOS metadata: ignored
            (clip_dir / "notes.txt").touch()  # not a video: ignored
    return root


# --- MELD ---------------------------------------------------------------------------------


def test_meld_text_only(tmp_path):
    ds = load_dataset(f"meld:{make_meld(tmp_path)}")
    assert ds.name == "meld" and ds.labels is MELD7 and ds.problems == []
    assert ds.splits == ["train", "dev", "test"]
    assert [len(ds.split(s)) for s in ds.splits] == [5, 2, 1]
    train = ds.split("train")
    # Sorted by (dialogue, utterance); turns count within each dialogue; ids carry the split.
    assert [u.id for u in train] == [
        "train_dia0_utt0",
        "train_dia0_utt1",
        "train_dia0_utt2",
        "train_dia1_utt0",
        "train_dia1_utt1",
    ]
    assert [u.turn for u in train] == [0, 1, 2, 0, 1]
    assert [u.label for u in train] == ["neutral", "joy", "sadness", "surprise", "anger"]
    assert train[3].dialogue_id == "train_dia1" and train[3].speaker == "Monica"
    assert train[2].text == "I’m fine."  # the mojibake was repaired
    assert ds.split("dev")[0].id == "dev_dia0_utt0"  # dialogue ids restart per split
    assert ds.split("test")[0].text is None
    assert all(u.audio is None and u.video is None for u in ds.utterances)
    assert ds.label_counts("train") == {
        "neutral": 1,
        "surprise": 1,
        "fear": 0,
        "sadness": 1,
        "joy": 1,
        "disgust": 0,
        "anger": 1,
    }


def test_meld_with_clips_in_meld_raw_layout(tmp_path):
    ds = load_dataset(f"meld:{make_meld(tmp_path, nested=True, clips=True)}")
    by_id = {u.id: u for u in ds.utterances}
    assert len(by_id) == 8 and ds.problems == []
    clip = by_id["train_dia1_utt0"].video
    assert clip == tmp_path.resolve() / "train" / "train_splits" / "dia1_utt0.mp4"
    assert by_id["train_dia1_utt0"].audio == clip  # the clip's own audio track
    assert by_id["dev_dia0_utt1"].video.parent.name == "dev_splits_complete"
    assert by_id["test_dia0_utt0"].video.parent.name == "output_repeated_splits_test"
    # A clip the release lacks leaves that utterance without media; it is not an error.
    missing = by_id["train_dia0_utt2"]
    assert missing.video is None and missing.audio is None and missing.modalities == ("text",)
    assert by_id["train_dia0_utt0"].modalities == ("text", "audio", "video")


def test_meld_reads_windows_1252_csv(tmp_path):
    rows = [(0, 0, "Joey", "joy", "Café au lait"), (0, 1, "Ross", "neutral", "Okay.")]
    write_meld_csv(tmp_path / "train_sent_emo.csv", rows, encoding="cp1252")
    ds = load_dataset(f"meld:{tmp_path}")
    assert [u.text for u in ds.utterances] == ["Café au lait", "Okay."]


def test_meld_unknown_label(tmp_path):
    make_meld(tmp_path)
    rows = [*MELD_ROWS["dev"], (1, 0, "Rachel", "happyish", "Hm.")]
    csv_path = write_meld_csv(tmp_path / "dev_sent_emo.csv", rows)
    with pytest.raises(DataError) as err:
        load_dataset(f"meld:{tmp_path}")
    assert err.value.path == str(csv_path.resolve())
    assert "line 4" in err.value.problem and "unknown label 'happyish'" in err.value.problem
    assert "\n" not in str(err.value)

    ds = load_dataset(f"meld:{tmp_path}", on_error="skip")
    assert len(ds) == 8 and "dev_dia1_utt0" not in {u.id for u in ds.utterances}
    [problem] = ds.problems
    assert problem.id == "dev_dia1_utt0" and problem.file == str(csv_path.resolve())
    assert "unknown label" in problem.error


def test_meld_restricted_label_set(tmp_path):
    """``labels=`` narrows the set: MELD labels outside IEMOCAP-6 become problems."""
    ds = load_dataset(f"meld:{make_meld(tmp_path)}", on_error="skip", labels="iemocap6")
    assert ds.labels is IEMOCAP6
    kept = Counter(u.label for u in ds.utterances)
    assert kept == {"neutral": 2, "sad": 1, "angry": 1}  # sadness and anger are aliases
    assert sorted(p.id for p in ds.problems) == [
        "dev_dia0_utt0",
        "dev_dia0_utt1",
        "train_dia0_utt1",
        "train_dia1_utt0",
    ]


def test_meld_missing_column(tmp_path):
    make_meld(tmp_path)
    columns = [c for c in MELD_COLUMNS if c != "Emotion"]
    csv_path = write_meld_csv(tmp_path / "test_sent_emo.csv", MELD_ROWS["test"], columns)
    with pytest.raises(DataError, match="missing column.*Emotion") as err:
        load_dataset(f"meld:{tmp_path}")
    assert err.value.path == str(csv_path.resolve())
    ds = load_dataset(f"meld:{tmp_path}", on_error="skip")
    assert ds.splits == ["train", "dev"]  # the other files are still read
    assert [p.file for p in ds.problems] == [str(csv_path.resolve())]


def test_meld_bad_ids_and_duplicates(tmp_path):
    rows = [(0, 0, "A", "joy", "a"), (0, 0, "B", "anger", "again"), ("x", 1, "C", "fear", "c")]
    csv_path = write_meld_csv(tmp_path / "train_sent_emo.csv", rows)
    ds = load_dataset(f"meld:{tmp_path}", on_error="skip")
    assert [(u.id, u.label) for u in ds.utterances] == [("train_dia0_utt0", "joy")]
    errors = sorted(p.error for p in ds.problems)
    assert errors[0].startswith("duplicate utterance id 'train_dia0_utt0'")
    assert "bad Dialogue_ID/Utterance_ID" in errors[1] and "line 4" in errors[1]
    assert str(csv_path.resolve()) in {p.file for p in ds.problems}


def test_meld_not_a_meld_folder(tmp_path):
    with pytest.raises(DataError, match="no MELD annotation files") as err:
        load_dataset(f"meld:{tmp_path}")
    assert err.value.path == str(tmp_path.resolve())


# --- IEMOCAP --------------------------------------------------------------------------------

# (utterance suffix, start, end, raw label, transcript); listed out of time order on purpose.
IEMOCAP_TURNS = [
    ("F001", 4.0, 5.0, "exc", "We got the apartment!"),
    ("F000", 1.0, 2.0, "neu", "Excuse me."),
    ("M000", 2.5, 3.5, "fru", "Do you have your forms?"),
    ("M001", 5.5, 6.5, "hap", "That is wonderful."),
    ("F002", 7.0, 8.0, "xxx", "Hm."),  # no agreement: outside the 6 classes, dropped
    ("M002", 8.5, 9.5, "sad", "I miss her."),
    ("F003", 10.0, 11.0, "ang", "Get out."),
    ("M003", 11.5, 12.5, "sur", "Really?"),  # outside the 6 classes, dropped
]
KEPT_PER_DIALOGUE = 6


def iemocap_dialogues(session: int) -> list[str]:
    return [f"Ses0{session}F_impro01", f"Ses0{session}M_script01_1"]


def make_iemocap(root: Path, *, bad_text: str | None = None) -> Path:
    """A synthetic ``IEMOCAP_full_release`` under ``root``: 5 sessions x 2 dialogues.

    Placeholder media (the reader does not decode): every wav but ``<dialog>_M002.wav``; the
    dialogue avi only in Session 1. ``bad_text`` names an utterance whose transcript line is not
    UTF-8.
    """
    release = root / "IEMOCAP_full_release"
    for session in range(1, 6):
        base = release / f"Session{session}"
        for folder in ("dialog/EmoEvaluation", "dialog/transcriptions", "dialog/avi/DivX"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        for dialog in iemocap_dialogues(session):
            emo = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            lines = []
            for suffix, start, end, raw, text in IEMOCAP_TURNS:
                uid = f"{dialog}_{suffix}"
                emo += [
                    f"[{start:.4f} - {end:.4f}]\t{uid}\t{raw}\t[2.5000, 2.5000, 2.5000]",
                    "C-E1:\tNeutral;\t()",
                    "",
                ]
                text_bytes = text.encode() if uid != bad_text else b"caf\xe9 au lait"
                stamp = f"[{start:08.4f}-{end:08.4f}]".encode()
                lines.append(uid.encode() + b" " + stamp + b": " + text_bytes)
                if suffix != "M002":
                    wav = base / "sentences" / "wav" / dialog / f"{uid}.wav"
                    wav.parent.mkdir(parents=True, exist_ok=True)
                    wav.touch()
            lines.append(b"M: [BREATHING]")  # non-utterance lines are skipped
            (base / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(emo))
            (base / "dialog" / "transcriptions" / f"{dialog}.txt").write_bytes(b"\n".join(lines))
            if session == 1:
                (base / "dialog" / "avi" / "DivX" / f"{dialog}.avi").touch()
        (base / "dialog" / "EmoEvaluation" / "._Ses01F_impro01.txt").write_bytes(b"\0\1junk")
    return release


def test_iemocap_tree(tmp_path):
    release = make_iemocap(tmp_path)
    ds = load_dataset(f"iemocap:{release}")
    assert ds.name == "iemocap" and ds.labels is IEMOCAP6 and ds.problems == []
    assert len(ds) == 10 * KEPT_PER_DIALOGUE
    # Excited is its own class, apart from happy; xxx and sur are left out.
    assert ds.label_counts() == {
        "happy": 10,
        "sad": 10,
        "neutral": 10,
        "angry": 10,
        "excited": 10,
        "frustrated": 10,
    }
    dialogues_of = {s: {u.dialogue_id for u in ds.split(s)} for s in ds.splits}
    assert dialogues_of["test"] == set(iemocap_dialogues(5))  # Session 5 is test
    train_dialogues = {d for s in range(1, 5) for d in iemocap_dialogues(s)}
    assert len(dialogues_of["dev"]) == 1  # round(0.1 * 8) dialogues, at least one
    assert dialogues_of["dev"] | dialogues_of["train"] == train_dialogues
    assert not dialogues_of["dev"] & dialogues_of["train"]

    utts = [u for u in ds.utterances if u.dialogue_id == "Ses01F_impro01"]
    assert [u.id[-4:] for u in utts] == ["F000", "M000", "F001", "M001", "M002", "F003"]
    assert [u.turn for u in utts] == list(range(KEPT_PER_DIALOGUE))
    first = utts[0]
    assert (first.start, first.end, first.text, first.label) == (1.0, 2.0, "Excuse me.", "neutral")
    assert first.speaker == "Ses01F" and utts[1].speaker == "Ses01M"
    assert first.video == release.resolve() / "Session1/dialog/avi/DivX/Ses01F_impro01.avi"
    assert first.audio == release.resolve() / "Session1/sentences/wav/Ses01F_impro01" / (
        "Ses01F_impro01_F000.wav"
    )
    assert utts[4].audio is None  # its wav is missing
    assert all(u.video is None for u in ds.utterances if not u.id.startswith("Ses01"))


def test_iemocap_tree_is_deterministic_and_found_from_parent(tmp_path):
    make_iemocap(tmp_path)
    a = load_dataset(f"iemocap:{tmp_path}")  # the parent of IEMOCAP_full_release
    b = load_dataset(f"iemocap:{tmp_path / 'IEMOCAP_full_release'}")
    assert [(u.id, u.split) for u in a.utterances] == [(u.id, u.split) for u in b.utterances]
    assert [u.split for u in a.utterances] == sorted(
        (u.split for u in a.utterances), key=["train", "dev", "test"].index
    )


def test_iemocap_non_utf8_transcript(tmp_path):
    bad = "Ses02M_script01_1_F001"
    release = make_iemocap(tmp_path, bad_text=bad)
    transcript = release.resolve() / "Session2/dialog/transcriptions/Ses02M_script01_1.txt"
    with pytest.raises(DataError, match="not valid UTF-8") as err:
        load_dataset(f"iemocap:{release}")
    assert err.value.path == str(transcript)
    ds = load_dataset(f"iemocap:{release}", on_error="skip")
    assert len(ds) == 10 * KEPT_PER_DIALOGUE - 1
    assert [(p.id, p.file) for p in ds.problems] == [(bad, str(transcript))]


def test_iemocap_not_a_release(tmp_path):
    with pytest.raises(DataError, match="no Session1..5") as err:
        load_dataset(f"iemocap:{tmp_path}")
    assert err.value.path == str(tmp_path.resolve())


def write_cosmic_pickle(path: Path, labels: dict[str, list[int]]) -> Path:
    speakers = {d: ["M" if i % 2 else "F" for i in range(len(v))] for d, v in labels.items()}
    sentences = {d: [f"line {i}" for i in range(len(v))] for d, v in labels.items()}
    dialogs = list(labels)
    data = [speakers, labels, sentences, dialogs[:-1], dialogs[-1:], []]  # train, test, valid
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path


def test_iemocap_pickle(tmp_path):
    labels = {"Ses01F_impro01": [0, 4, 2], "Ses05M_script02_2": [5, 9, 1]}  # 9: no such class
    path = write_cosmic_pickle(tmp_path / "cosmic_iemocap.pkl", labels)
    with pytest.raises(DataError, match="unknown label '9'"):
        load_dataset(f"iemocap:{path}")
    ds = load_dataset(f"iemocap:{path}", on_error="skip")
    assert [(u.id, u.label, u.split, u.speaker) for u in ds.utterances] == [
        ("Ses01F_impro01_000", "happy", "train", "Ses01F"),
        ("Ses01F_impro01_001", "excited", "train", "Ses01M"),
        ("Ses01F_impro01_002", "neutral", "train", "Ses01F"),
        ("Ses05M_script02_2_000", "frustrated", "test", "Ses05F"),
        ("Ses05M_script02_2_002", "sad", "test", "Ses05F"),
    ]
    assert [(p.id, p.file) for p in ds.problems] == [("Ses05M_script02_2_001", str(path))]


def test_iemocap_bad_pickle(tmp_path):
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataError, match="not a readable pickle") as err:
        load_dataset(f"iemocap:{path}")
    assert err.value.path == str(path.resolve())


# --- folder (labels.csv) --------------------------------------------------------------------


def write_labels(root: Path, rows: list[dict], touch: bool = True) -> Path:
    """``root/labels.csv`` from ``rows`` (columns from the first row) and empty media files."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "labels.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if touch:
        for row in rows:
            media = root / row["file"]
            media.parent.mkdir(parents=True, exist_ok=True)
            media.touch()
    return path


def test_folder_with_split_column(tmp_path):
    rows = [
        {"file": "a/x.mp4", "emotion": "Happy", "split": "train", "transcript": "yay"},
        {"file": "b/x.mp4", "emotion": "sad", "split": "val", "transcript": ""},
        {"file": "c.wav", "emotion": "neu", "split": "Test", "transcript": "ok"},
    ]
    write_labels(tmp_path, rows)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.labels is IEMOCAP6  # the smallest built-in set holding every label
    assert ds.name == tmp_path.name and ds.problems == []
    by_id = {u.id: u for u in ds.utterances}
    # Two files share the stem "x": their ids come from the relative path.
    assert sorted(by_id) == ["a_x", "b_x", "c"]
    assert [(u.split, u.label) for u in ds.utterances] == [
        ("train", "happy"),
        ("dev", "sad"),
        ("test", "neutral"),
    ]
    assert by_id["a_x"].video == by_id["a_x"].audio == tmp_path.resolve() / "a" / "x.mp4"
    assert by_id["c"].video is None and by_id["c"].audio == tmp_path.resolve() / "c.wav"
    assert by_id["b_x"].text is None and by_id["c"].text == "ok"
    assert by_id["c"].dialogue_id == "c" and by_id["c"].turn == 0
    # The CSV itself may be given, too.
    assert len(load_dataset(f"folder:{tmp_path / 'labels.csv'}")) == 3


def test_folder_label_set_choice(tmp_path):
    write_labels(tmp_path / "r", [{"file": "1.wav", "emotion": "calm"}])
    assert load_dataset(f"folder:{tmp_path / 'r'}").labels is RAVDESS8
    write_labels(tmp_path / "m", [{"file": "1.wav", "emotion": "joy"}])
    assert load_dataset(f"folder:{tmp_path / 'm'}").labels is MELD7
    write_labels(
        tmp_path / "c",
        [{"file": "1.wav", "emotion": "bored"}, {"file": "2.wav", "emotion": "calm"}],
    )
    custom = load_dataset(f"folder:{tmp_path / 'c'}").labels
    assert custom.name == "custom" and custom.names == ("bored", "calm")


def speaker_rows(order: int = 1) -> list[dict]:
    rows = [
        {"file": f"s{s:02d}_{i}.wav", "emotion": "angry" if i else "sad", "actor": f"{s:02d}"}
        for s in range(1, 21)
        for i in range(3)
    ]
    return rows[::order]


def test_folder_derived_split_is_speaker_independent_and_deterministic(tmp_path):
    write_labels(tmp_path / "a", speaker_rows())
    write_labels(tmp_path / "b", speaker_rows(order=-1))  # same rows, reversed
    a, b = load_dataset(f"folder:{tmp_path / 'a'}"), load_dataset(f"folder:{tmp_path / 'b'}")
    split_of = {u.id: u.split for u in a.utterances}
    assert split_of == {u.id: u.split for u in b.utterances}  # file order does not matter
    speakers = {s: {u.speaker for u in a.split(s)} for s in a.splits}
    assert [len(speakers[s]) for s in ("train", "dev", "test")] == [16, 2, 2]
    assert sum(len(v) for v in speakers.values()) == 20  # no speaker in two splits
    # The split is a stable hash of the speaker: the same on every machine and Python run.
    assert speakers["test"] == {"16", "17"} and speakers["dev"] == {"08", "11"}


def test_folder_derived_split_small_and_without_speakers(tmp_path):
    write_labels(
        tmp_path / "one", [{"file": f"{i}.wav", "emotion": "sad", "speaker": "x"} for i in range(4)]
    )
    assert load_dataset(f"folder:{tmp_path / 'one'}").splits == ["train"]
    write_labels(
        tmp_path / "two",
        [{"file": f"{i}.wav", "emotion": "sad", "speaker": str(i % 2)} for i in range(4)],
    )
    two = load_dataset(f"folder:{tmp_path / 'two'}")
    assert [len(two.split(s)) for s in two.splits] == [2, 2] and two.splits == ["train", "test"]
    rows = [{"file": f"{i}.wav", "emotion": "sad", "dialogue_id": f"d{i // 2}"} for i in range(40)]
    write_labels(tmp_path / "dia", rows)
    ds = load_dataset(f"folder:{tmp_path / 'dia'}")
    split_of_dialogue = {}
    for u in ds.utterances:  # no speaker column: whole dialogues are held out
        assert split_of_dialogue.setdefault(u.dialogue_id, u.split) == u.split
    assert Counter(split_of_dialogue.values()) == {"train": 16, "dev": 2, "test": 2}
    assert [u.turn for u in ds.utterances[:2]] == [0, 1]


def test_folder_missing_column(tmp_path):
    path = write_labels(tmp_path, [{"file": "a.wav", "label": "sad"}])
    with pytest.raises(DataError, match=r"missing column\(s\) emotion") as err:
        load_dataset(f"folder:{tmp_path}")
    assert err.value.path == str(path.resolve())
    ds = load_dataset(f"folder:{tmp_path}", on_error="skip")
    assert len(ds) == 0 and [p.file for p in ds.problems] == [str(path.resolve())]


def test_folder_bad_rows(tmp_path):
    rows = [
        {"file": "ok.wav", "emotion": "sad", "split": "train", "utterance_id": "u1"},
        {"file": "gone.wav", "emotion": "sad", "split": "train", "utterance_id": "u2"},
        {"file": "ok2.wav", "emotion": "", "split": "train", "utterance_id": "u3"},
        {"file": "ok3.wav", "emotion": "sad", "split": "holdout", "utterance_id": "u4"},
        {"file": "ok4.wav", "emotion": "happy", "split": "test", "utterance_id": "u1"},
    ]
    csv_path = write_labels(tmp_path, rows, touch=False)
    for name in ("ok.wav", "ok2.wav", "ok3.wav", "ok4.wav"):
        (tmp_path / name).touch()
    root = tmp_path.resolve()
    with pytest.raises(DataError, match="no such file") as err:
        load_dataset(f"folder:{tmp_path}")
    assert err.value.path == str(root / "gone.wav")
    ds = load_dataset(f"folder:{tmp_path}", on_error="skip")
    assert [u.id for u in ds.utterances] == ["u1"] and ds.utterances[0].label == "sad"
    problems = {p.id: (p.file, p.error) for p in ds.problems if p.id != "u1"}
    assert problems == {
        "u2": (str(root / "gone.wav"), "no such file"),
        "u3": (str(csv_path.resolve()), "line 4: empty emotion"),
        "u4": (str(csv_path.resolve()), "line 5: unknown split 'holdout'"),
    }
    [dup] = [p for p in ds.problems if p.id == "u1"]
    assert dup.error == "duplicate utterance id 'u1'"


def test_folder_unknown_label(tmp_path):
    write_labels(
        tmp_path, [{"file": "a.wav", "emotion": "sad"}, {"file": "b.wav", "emotion": "smug"}]
    )
    csv_path = str((tmp_path / "labels.csv").resolve())
    with pytest.raises(DataError, match="line 3: unknown label 'smug'") as err:
        load_dataset(f"folder:{tmp_path}", labels="meld7")
    assert err.value.path == csv_path
    ds = load_dataset(f"folder:{tmp_path}", labels="meld7", on_error="skip")
    assert [u.label for u in ds.utterances] == ["sadness"]
    assert [(p.id, p.file) for p in ds.problems] == [("b", csv_path)]


def test_folder_non_utf8_transcript(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"file,emotion,transcript\na.wav,sad,fine\nb.wav,sad,caf\xe9\n")
    (tmp_path / "a.wav").touch()
    (tmp_path / "b.wav").touch()
    with pytest.raises(DataError, match="line 3: transcript is not valid UTF-8") as err:
        load_dataset(f"folder:{tmp_path}")
    assert err.value.path == str(path.resolve())
    ds = load_dataset(f"folder:{tmp_path}", on_error="skip")
    assert [u.id for u in ds.utterances] == ["a"] and [p.id for p in ds.problems] == ["b"]


def test_folder_without_labels_csv(tmp_path):
    with pytest.raises(DataError, match="no labels.csv") as err:
        load_dataset(f"folder:{tmp_path}")
    assert err.value.path == str(tmp_path.resolve())


# --- specs and paths ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["meld", "iemocap", "folder"])
def test_nonexistent_path_names_it(tmp_path, kind):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as err:
        load_dataset(f"{kind}:{missing}", on_error="skip")
    assert err.value.path == str(missing) and "no such file" in str(err.value)


@pytest.mark.parametrize("spec", ["meld", "meld:", "mosi:/data", "/data/meld"])
def test_bad_specs(spec):
    with pytest.raises(ConfigError, match="KIND:PATH|unknown dataset kind"):
        parse_spec(spec)


def test_bad_on_error(tmp_path):
    with pytest.raises(ConfigError, match="on_error"):
        load_dataset(f"meld:{make_meld(tmp_path)}", on_error="ignore")


# --- the real annotation files ----------------------------------------------------------------


@pytest.mark.realdata
def test_real_meld(shared_data):
    ds = load_dataset(f"meld:{shared_data / 'meld'}")
    assert ds.problems == []
    assert [len(ds.split(s)) for s in ("train", "dev", "test")] == [9989, 1109, 2610]
    dialogues = [len({u.dialogue_id for u in ds.split(s)}) for s in ("train", "dev", "test")]
    assert dialogues == [1038, 114, 280]
    assert set(ds.label_counts()) == set(MELD7.names) and min(ds.label_counts().values()) > 0
    assert not any("â€" in (u.text or "") for u in ds.utterances)  # no mojibake left


@pytest.mark.realdata
def test_real_cosmic_iemocap(shared_data):
    ds = load_dataset(f"iemocap:{shared_data / 'iemocap' / 'cosmic_iemocap.pkl'}")
    assert ds.problems == [] and ds.labels is IEMOCAP6
    assert [len(ds.split(s)) for s in ("train", "dev", "test")] == [5163, 647, 1623]
    dialogues = [len({u.dialogue_id for u in ds.split(s)}) for s in ("train", "dev", "test")]
    assert dialogues == [108, 12, 31]
    assert all(u.dialogue_id.startswith("Ses05") for u in ds.split("test"))
    # Ids come from erc7433_utterance_ids.json: real IEMOCAP utterance ids.
    assert all(u.id.startswith(u.dialogue_id + "_") and u.id[-4] in "FM" for u in ds.utterances)


@pytest.mark.realdata
def test_real_iemocap_clips_labels(shared_data):
    ds = load_dataset(f"folder:{shared_data / 'iemocap-clips'}")
    assert len(ds) == 129 and ds.problems == []
    assert ds.label_counts() == {
        "angry": 20,
        "excited": 15,
        "fearful": 12,
        "frustrated": 18,
        "happy": 18,
        "neutral": 16,
        "sad": 15,
        "surprised": 15,
    }
    assert all(u.video is not None and u.video.suffix == ".mp4" for u in ds.utterances)
    assert all(u.speaker in ("Ses01F", "Ses01M") and u.text for u in ds.utterances)
