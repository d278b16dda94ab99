"""Batch prediction: a folder or a CSV list to one CSV/JSONL, a bad file is an error row, a rerun
skips finished files and retries failed ones, a killed batch loses nothing it finished."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers_asr import write_tiny_whisper

from deepmsi.errors import ConfigError, DataError
from deepmsi.inference.batch import list_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


class Counting:
    """A predictor stand-in that counts the files it is asked to predict."""

    def __init__(self, predictor) -> None:
        self.inner, self.labels, self.calls = predictor, predictor.labels, []

    def predict(self, media=None, text=None, subtitles=None, window=None):
        self.calls.append(Path(media).name)
        return self.inner.predict(media, text=text, subtitles=subtitles, window=window)

    def predict_many(self, *args, **kwargs):
        from deepmsi.inference.batch import predict_many

        return predict_many(self, *args, **kwargs)


def _folder(tiny, root: Path, n: int = 4) -> Path:
    """``n`` synthetic clips (one in a subfolder), a broken clip, and files a batch ignores."""
    root.mkdir()
    (root / "sub").mkdir()
    for i, clip in enumerate(tiny.clips[:n]):
        shutil.copy(clip, root / ("sub" if i == 0 else ".") / clip.name)
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    (root / "notes.txt").write_text("not media")
    (root / ".hidden.mp4").write_bytes(b"editor temporary")
    return root


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_folder_to_csv_one_row_per_clip_and_an_error_row(predictor, tiny, tmp_path):
    folder = _folder(tiny, tmp_path / "in")
    out = tmp_path / "predictions.csv"
    result = predictor.predict_many(folder, out, progress=False)
    assert (result.total, result.predicted, result.failed, result.done_before) == (5, 4, 1, 0)
    rows = _rows(out)
    assert len(rows) == 5 and result.rows == 5
    errors = [r for r in rows if r["error"]]
    assert [r["file"] for r in errors] == ["broken.mp4"]
    assert "broken.mp4" in errors[0]["error"] and errors[0]["label"] == ""
    assert f"sub/{tiny.clips[0].name}" in {r["file"] for r in rows}
    good = [r for r in rows if not r["error"]]
    for r in good:  # every class's probability, summing to one, and the modalities seen
        assert sum(float(r[k]) for k in predictor.labels) == pytest.approx(1, abs=1e-5)
        assert r["modalities"] == "audio+video" and r["segments"] == "1" and r["start"] == ""
    one = next(r for r in good if r["file"] == tiny.clips[1].name)
    single = predictor.predict(tiny.clips[1])
    assert one["label"] == single.label
    assert float(one[single.label]) == pytest.approx(single.probabilities[single.label], abs=1e-6)


def test_rerun_skips_finished_files_and_retries_failed_ones(predictor, tiny, tmp_path):
    folder = _folder(tiny, tmp_path / "in")
    out = tmp_path / "p.csv"
    counting = Counting(predictor)
    counting.predict_many(folder, out, progress=False)
    assert len(counting.calls) == 5
    before = {r["file"]: r for r in _rows(out) if not r["error"]}

    counting.calls.clear()
    again = counting.predict_many(folder, out, progress=False)
    assert counting.calls == ["broken.mp4"]  # only the failed file is tried again
    assert (again.done_before, again.failed) == (4, 1)
    assert len(_rows(out)) == 5  # its error row was replaced, not duplicated

    shutil.copy(tiny.clips[5], folder / "broken.mp4")  # the file is fixed
    counting.calls.clear()
    fixed = counting.predict_many(folder, out, progress=False)
    assert counting.calls == ["broken.mp4"] and fixed.failed == 0
    rows = _rows(out)
    assert len(rows) == 5 and not any(r["error"] for r in rows)
    assert {r["file"]: r for r in rows if r["file"] != "broken.mp4"} == before

    counting.calls.clear()
    counting.predict_many(folder, out, resume=False, progress=False)
    assert len(counting.calls) == 5  # resume=False starts over


def test_a_batch_killed_mid_write_loses_only_the_unfinished_file(predictor, tiny, tmp_path):
    folder = _folder(tiny, tmp_path / "in", n=3)
    out = tmp_path / "p.jsonl"
    predictor.predict_many(folder, out, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    assert len(lines) == 4
    # the last input's line cut short, as a kill during its write leaves it
    last = json.loads(lines[-1])["file"]
    out.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    counting = Counting(predictor)
    counting.predict_many(folder, out, progress=False)
    assert sorted(counting.calls) == sorted({Path(last).name, "broken.mp4"})
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and sorted(r["file"] for r in rows) == sorted(
        json.loads(line)["file"] for line in lines
    )
    assert set(rows[0]) >= {"file", "start", "end", "label", "probabilities", "modalities"}


def test_csv_list_with_transcripts_windows_and_a_missing_file(predictor, tiny, tmp_path):
    listing = tmp_path / "list.csv"
    clips = [Path(shutil.copy(c, tmp_path / c.name)) for c in tiny.clips[:2]]
    with listing.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "emotion", "transcript"])
        w.writerow([clips[0].name, "joy", tiny.texts[0]])
        w.writerow([clips[1].name, "joy", ""])
        w.writerow(["gone.mp4", "joy", "hello"])
    with pytest.raises(ConfigError, match=f"{clips[0].name}: has a transcript"):
        predictor.predict_many(listing, tmp_path / "w.csv", window=0.5, progress=False)
    assert not (tmp_path / "w.csv").exists()  # refused before any work

    out = tmp_path / "out" / "p.csv"
    result = predictor.predict_many(
        [*clips, tmp_path / "gone.mp4"], out, window=0.5, progress=False
    )
    assert (result.predicted, result.failed) == (2, 1)
    rows = _rows(out)
    first = [r for r in rows if r["file"] == str(clips[0])]
    assert len(first) >= 2 and {r["segments"] for r in first} == {str(len(first))}
    assert [float(r["start"]) for r in first] == pytest.approx([0.5 * i for i in range(len(first))])
    gone = [r for r in rows if r["file"].endswith("gone.mp4")]
    assert len(gone) == 1 and "no such file" in gone[0]["error"]

    with_text = predictor.predict_many(listing, tmp_path / "t.csv", progress=False)
    assert with_text.predictions[0].segments[0].modalities == ("text", "audio", "video")
    assert _rows(tmp_path / "t.csv")[0]["transcript"] == " ".join(tiny.texts[0].split())


def test_machine_made_transcripts_are_marked(predictor, tiny, tmp_path):
    """transcript_source says where each row's transcript came from, with the JSON's values
    ("asr" with the recogniser's name, "given", empty), and survives a resume."""
    from deepmsi.inference.predictor import Predictor

    whisper = write_tiny_whisper(tmp_path / "tiny-whisper")
    clips = [Path(shutil.copy(c, tmp_path / c.name)) for c in tiny.clips[:2]]
    listing = tmp_path / "list.csv"
    with listing.open("w", newline="") as f:
        csv.writer(f).writerows([["file", "transcript"], [clips[0].name, tiny.texts[0]]])
        csv.writer(f).writerow([clips[1].name, ""])
    heard = Predictor(predictor.run, asr=str(whisper))
    for out in (tmp_path / "p.csv", tmp_path / "p.jsonl"):
        result = heard.predict_many(listing, out, progress=False)
        rows = _rows(out) if out.suffix == ".csv" else [json.loads(x) for x in out.open()]
        given, machine = rows
        assert given["transcript_source"] == "given" and given["asr"] in ("", None)
        assert machine["transcript_source"] == "asr" and machine["asr"] == str(whisper)
        assert machine["transcript"] and "text" in machine["modalities"]
        single = result.predictions[1].to_dict()
        assert single["transcript_source"] == "asr" and single["asr"] == str(whisper)
        assert machine["transcript"] == " ".join(single["transcript"].split())
        out.write_text("".join(out.read_text().splitlines(keepends=True)[:-1]))  # lose clip 2
        heard.predict_many(listing, out, progress=False)
        again = _rows(out) if out.suffix == ".csv" else [json.loads(x) for x in out.open()]
        assert again == rows  # the kept row still says "given", the redone one "asr"
    plain = predictor.predict_many([clips[1]], tmp_path / "none.csv", progress=False)
    assert plain.predicted == 1
    (row,) = _rows(tmp_path / "none.csv")
    assert (row["transcript"], row["transcript_source"], row["asr"]) == ("", "", "")


def test_bad_lists_and_outputs_are_one_line_errors(predictor, tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no media files"):
        list_inputs(tmp_path / "empty")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,transcript\nx.mp4,hi\n")
    with pytest.raises(DataError, match="no 'file' column"):
        list_inputs(bad)
    bad.write_text("file\nx.mp4\nx.mp4\n")
    with pytest.raises(DataError, match="listed twice"):
        list_inputs(bad)
    bad.write_bytes(b"file\n\xff\xfe.mp4\n")
    with pytest.raises(DataError, match="not UTF-8"):
        list_inputs(bad)
    with pytest.raises(ConfigError, match=r"\.csv or \.jsonl"):
        predictor.predict_many([tiny.clips[0]], tmp_path / "p.txt", progress=False)
    other = tmp_path / "other.csv"
    other.write_text(
        "file,segment,segments,start,end,transcript,transcript_source,asr,label,x,y,"
        "modalities,error\n"
    )
    with pytest.raises(ConfigError, match="other columns"):
        predictor.predict_many([tiny.clips[0]], other, progress=False)


def test_cli_batch_and_rerun(tiny, tmp_path, capsys):
    from deepmsi.cli import main

    folder = _folder(tiny, tmp_path / "in", n=2)
    out = tmp_path / "p.csv"
    argv = ["predict", "--run", str(tiny.run_dir), str(folder), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "3 inputs: 2 predicted, 1 failed, 0 done before" in captured.out
    err = captured.err.strip().splitlines()
    assert err[0].startswith("model: run: ") and "failed: " in err[1] and "broken.mp4" in err[1]
    assert len(_rows(out)) == 3
    assert main([*argv, "--no-progress"]) == 0
    assert "0 predicted, 1 failed, 2 done before" in capsys.readouterr().out

    assert main(["predict", "--run", str(tiny.run_dir), str(folder)]) == 2  # no --out
    err = capsys.readouterr().err.strip().splitlines()
    assert "add --out" in err[-1] and len(err) == 1
    assert main([*argv, "--text", "hi"]) == 2
    assert "--text does not go with --out" in capsys.readouterr().err


# ---- real clips ------------------------------------------------------------------------------
REAL_IEMOCAP = 14  # the shortest clips, to keep the test short
REAL_CREMA = 5


def _real_clips(shared: Path) -> list[Path]:
    import av

    iemocap = sorted((shared / "iemocap-clips" / "video").glob("*.mp4"))
    crema = sorted((shared / "crema-d-clips").glob("*.flv"))[:REAL_CREMA]
    if len(iemocap) < REAL_IEMOCAP or len(crema) < REAL_CREMA:
        pytest.skip("the real clips are incomplete")

    def seconds(p: Path) -> float:
        with av.open(str(p)) as c:
            return float(c.duration or 0) / 1e6

    return sorted(iemocap, key=seconds)[:REAL_IEMOCAP] + crema


@pytest.mark.realdata
def test_twenty_real_clips_one_broken(predictor, shared_data, tmp_path):
    """19 real clips (IEMOCAP mp4, CREMA-D flv) and one truncated clip: 19 rows and 1 error."""
    folder = tmp_path / "clips"
    folder.mkdir()
    clips = _real_clips(shared_data)
    for clip in clips:
        shutil.copy(clip, folder / clip.name)
    data = clips[0].read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 50])
    out = tmp_path / "p.csv"
    result = predictor.predict_many(folder, out, progress=False)
    rows = _rows(out)
    assert len(rows) == 20 and result.total == 20
    assert sum(not r["error"] for r in rows) == 19
    assert [r["file"] for r in rows if r["error"]] == ["truncated.mp4"]
    assert all("audio" in r["modalities"] for r in rows if not r["error"])
