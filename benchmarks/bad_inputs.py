"""Bad input at scale: 30 broken or odd inputs through inspect, prepare, train, evaluate, predict.

A ``folder:`` dataset whose path holds spaces and non-ASCII letters, with a ``labels.csv`` written
with CRLF line ends and a byte-order mark, holds the good items (small synthetic clips, split
train/dev/test) and one row per item case: a zero-byte clip, a truncated real IEMOCAP clip, a
text file named ``.mp4``, a real clip without its audio stream, one with audio only, a 0.05-s
clip, a 10-minute clip, a non-UTF-8 transcript, an unknown label, a duplicated id, a file that
is not there, and more (``item_cases`` below). Files derived from real media come from
../shared/data (IEMOCAP clips, CREMA-D, RAVDESS) by remuxing or copying bytes; the rest are
written with PyAV. The CSV-level cases (a missing column, an empty CSV, a header-only CSV, a
row with more fields than the header) each get a folder of their own with two good items.

Each command runs as a user runs it: ``inspect --labels meld7``, ``prepare --on-error skip``,
``train`` (tiny preset), ``evaluate`` on test, ``predict --on-error skip`` on every media file.
Checked: no traceback anywhere; each broken case is a counted problem naming its file (its id in
``problems.jsonl``, or a "skipped" line from predict); every good item is cached, trained or
scored, and predicted. ``--markdown`` writes the case -> message table to docs/bad-inputs.md.

    .venv/bin/python benchmarks/bad_inputs.py [--record] [--markdown] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
IEMOCAP = SHARED / "iemocap-clips" / "video"
DOC = ROOT / "docs" / "bad-inputs.md"
MAIN = "bad inputs/données é ü"  # spaces and non-ASCII letters in every path
CORPUS = {"dialogues": 8, "utterances_per_dialogue": (5, 7), "splits": (4, 2, 2)}
CLIPS = {"seconds": 1.0, "fps": 8, "size": 64}
PREPARE = ["--frames", "2", "--image-size", "48", "--workers", "1", "--no-progress"]
TRAIN = ["--preset", "tiny", "--epochs", "2", "--batch-size", "8", "--seed", "0"]
TRAIN += ["--threads", "1", "--no-progress"]


# ---- writing media -----------------------------------------------------------------------------
def write_clip(
    path: Path,
    seconds: float,
    *,
    video: tuple[int, int, int] | None = (64, 64, 8),
    audio: int | None = 16000,
    channels: int = 1,
    silent: bool = False,
) -> Path:
    """An H.264 (``video`` = width, height, fps) + AAC (``audio`` Hz) mp4, either stream
    optional; moving grey frames and a tone."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        vs = aus = None
        if video is not None:
            vs = out.add_stream("libx264", rate=video[2])
            vs.width, vs.height, vs.pix_fmt = video[0], video[1], "yuv420p"
            vs.options = {"preset": "ultrafast", "threads": "1"}
        if audio is not None:
            aus = out.add_stream("aac", rate=audio, layout="mono" if channels == 1 else "stereo")
        if vs is not None:
            for i in range(max(1, round(seconds * video[2]))):
                image = np.full((video[1], video[0], 3), (40 + 7 * i) % 256, np.uint8)
                out.mux(vs.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(vs.encode(None))
        if aus is not None:
            _write_tone(out, aus, round(seconds * audio), audio, channels=channels, silent=silent)
    return path


def _write_tone(out, stream, total: int, rate: int, *, channels: int, silent: bool) -> None:
    import av

    layout = "mono" if channels == 1 else "stereo"
    for start in range(0, total, 1024):
        n = min(1024, total - start)
        t = (start + np.arange(n)) / rate
        wave = np.zeros(n) if silent else 0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(t)) * t)
        chunk = np.repeat(wave[None].astype(np.float32), channels, axis=0)  # [C, n] planar
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def remux(src: Path, dst: Path, kind: str) -> Path:
    """Copy only the ``kind`` ("video" or "audio") stream of ``src`` into ``dst``, unchanged."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        stream = getattr(inp.streams, kind)[0]
        target = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = target
            out.mux(packet)
    return dst


# ---- the cases -------------------------------------------------------------------------------
@dataclass
class Case:
    """One odd input: a labels.csv row (``row``) and the file it names (written by ``make``)."""

    name: str
    what: str
    row: dict[str, str]
    make: object = None  # callable(path) writing the file, or None (no file)
    file: str = ""  # the file the messages must name, relative to the dataset folder
    expect: str = "problem"  # "problem" or "fine" (usable, perhaps with a modality missing)
    messages: dict[str, str] = field(default_factory=dict)  # stage -> message


def _real(name: str = "Ses01F_impro01_M002.mp4") -> Path:
    path = IEMOCAP / name
    if not path.is_file():
        raise SystemExit(f"real data not found at {path}; this benchmark needs ../shared/data")
    return path


def _copy(src: Path, keep: float = 1.0):
    def make(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return make


def _bytes(data: bytes):
    def make(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return make


def _png(path: Path) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
    frame.to_image().save(str(path), format="PNG")


def item_cases() -> list[Case]:
    """The item-level cases, one labels.csv row each (utterance_id = the case name)."""
    real = _real()
    crema = SHARED / "crema-d-clips" / "1001_DFA_ANG_XX.flv"
    flac = SHARED / "ravdess" / "03-01-03-01-01-01-01.flac"

    def case(name, what, make, *, emotion="joy", file=None, expect="problem", **row):
        file = f"cases/{name}.mp4" if file is None else file
        row = {"file": file, "emotion": emotion, "transcript": f"case {name}", **row}
        return Case(name, what, {"utterance_id": name, **row}, make, file, expect)

    return [
        case("zero-byte", "a zero-byte .mp4", _bytes(b"")),
        case("truncated", "a real IEMOCAP clip cut to 40% of its bytes", _copy(real, 0.4)),
        case("not-a-video", "a text file named .mp4", _bytes(b"this is not a video\n" * 50)),
        case("png-as-mp4", "a PNG picture named .mp4", _png, expect="fine"),
        case(
            "no-audio",
            "a real clip remuxed without its audio stream",
            lambda p: remux(real, p, "video"),
            expect="fine",
        ),
        case(
            "audio-only",
            "a real clip remuxed with its audio stream only (.mp4)",
            lambda p: remux(real, p, "audio"),
            expect="fine",
        ),
        case(
            "flac",
            "a real RAVDESS .flac (audio-only file)",
            _copy(flac),
            file="cases/flac.flac",
            expect="fine",
        ),
        case(
            "flv-data-stream",
            "a real CREMA-D .flv (data stream first, VP6, MP3)",
            _copy(crema),
            file="cases/crema.flv",
            expect="fine",
        ),
        case(
            "short-0.05s",
            "a 0.05-s clip (one frame, 800 samples)",
            lambda p: write_clip(p, 0.05, video=(64, 64, 20)),
            expect="fine",
        ),
        case(
            "long-10min",
            "a 10-minute clip (2 fps, 32 px)",
            lambda p: write_clip(p, 600, video=(32, 32, 2)),
            expect="fine",
        ),
        case(
            "tiny-picture",
            "a 16x16-pixel clip",
            lambda p: write_clip(p, 1.0, video=(16, 16, 8)),
            expect="fine",
        ),
        case(
            "stereo-48k",
            "stereo 48 kHz audio",
            lambda p: write_clip(p, 1.0, audio=48000, channels=2),
            expect="fine",
        ),
        case(
            "silent",
            "an all-zero sound track",
            lambda p: write_clip(p, 1.0, silent=True),
            expect="fine",
        ),
        case(
            "no-transcript",
            "an empty transcript",
            lambda p: write_clip(p, 1.0),
            transcript="",
            expect="fine",
        ),
        case(
            "long-transcript",
            "a 5,000-word transcript",
            lambda p: write_clip(p, 1.0),
            transcript="so " * 5000,
            expect="fine",
        ),
        case(
            "label-spelling",
            "label written ' JOY ' (case and spaces)",
            lambda p: write_clip(p, 1.0),
            emotion=" JOY ",
            expect="fine",
        ),
        case(
            "unicode-path",
            "unicode and spaces in the file name",
            lambda p: write_clip(p, 1.0),
            file="cases/clip één 日本 1.mp4",
            expect="fine",
        ),
        case(
            "non-utf8",
            "a transcript in Latin-1 (not UTF-8)",
            lambda p: write_clip(p, 1.0),
            transcript="caf\udce9",
        ),  # written as the byte 0xe9
        case(
            "unknown-label",
            "label 'bored' (not in MELD-7)",
            lambda p: write_clip(p, 1.0),
            emotion="bored",
        ),
        case("missing-file", "a row naming a file that does not exist", None),
        case("directory", "a row naming a folder", lambda p: p.mkdir(parents=True)),
        case("empty-emotion", "an empty emotion cell", lambda p: write_clip(p, 1.0), emotion=""),
        case("unknown-split", "split 'holdout'", lambda p: write_clip(p, 1.0), split="holdout"),
    ]


def duplicate_case(first_good: dict[str, str]) -> Case:
    """A second row with the id of the first good item (its own clip)."""
    row = {**first_good, "file": "cases/duplicate.mp4", "transcript": "a second row, same id"}
    return Case(
        "duplicate-id",
        f"a second row with id {first_good['utterance_id']!r}",
        row,
        lambda p: write_clip(p, 1.0),
        "labels.csv",
    )


CSV_COLUMNS = ("file", "utterance_id", "emotion", "transcript", "speaker", "dialogue_id", "split")


def csv_text(rows: list[dict[str, str]], columns=CSV_COLUMNS, newline: str = "\r\n") -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator=newline, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def good_rows(work: Path, folder: Path) -> list[dict[str, str]]:
    """The synthetic corpus's clips copied under ``folder/good``, as labels.csv rows."""
    sys.path.insert(0, str(ROOT / "src"))
    from deepmsi.data import load_dataset
    from deepmsi.demo.synthetic import write_corpus

    corpus = write_corpus(work / "synthetic", seed=1, progress=False, **CORPUS, **CLIPS)
    rows = []
    for u in load_dataset(f"meld:{corpus}").utterances:
        target = folder / "good" / f"{u.id}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(u.video, target)
        rows.append(
            {
                "file": f"good/{u.id}.mp4",
                "utterance_id": u.id,
                "emotion": u.label,
                "transcript": u.text or "",
                "speaker": u.speaker,
                "dialogue_id": u.dialogue_id,
                "split": u.split,
            }
        )
    return rows


def build_main(work: Path) -> tuple[Path, list[dict[str, str]], list[Case]]:
    """The main dataset: good rows, then one row per item case; CRLF and a BOM."""
    folder = work / MAIN
    good = good_rows(work, folder)
    cases = item_cases() + [duplicate_case(good[0])]
    for c in cases:
        c.row = {"speaker": "case", "dialogue_id": f"case-{c.name}", "split": "train", **c.row}
        if c.make is not None:
            c.make(folder / c.row["file"])
    text = csv_text(good + [c.row for c in cases])
    (folder / "labels.csv").write_bytes(text.encode("utf-8-sig", errors="surrogateescape"))
    return folder, good, cases


def csv_cases(work: Path, good: list[dict[str, str]]) -> list[tuple[Case, Path]]:
    """Folders whose labels.csv itself is odd, each with two good clips."""
    two = good[:2]
    missing = [c for c in CSV_COLUMNS if c != "emotion"]
    extra = f"{two[0]['file']},extra,joy,hello, world,s1,d-extra,train\n"  # an unquoted comma
    ragged = csv_text(two, newline="\n") + extra
    specs = [
        ("missing-column", "labels.csv without its emotion column", csv_text(two, missing)),
        ("empty-csv", "a zero-byte labels.csv", ""),
        ("header-only", "labels.csv with a header and no rows", csv_text([])),
        ("ragged-rows", "a row with more fields than the header (unquoted comma)", ragged),
    ]
    out = []
    for name, what, text in specs:
        folder = work / "csv" / name
        (folder / "good").mkdir(parents=True)
        for row in two:
            shutil.copyfile(work / MAIN / row["file"], folder / row["file"])
        (folder / "labels.csv").write_text(text, encoding="utf-8")
        out.append((Case(name, what, {}, None, "labels.csv"), folder))
    return out


# ---- running the commands ----------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr or "Traceback" in self.stdout


def deepmsi(name: str, *args: str) -> Stage:
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "deepmsi", *args], env=env, capture_output=True, text=True
    )
    return Stage(name, done.returncode, done.stdout, done.stderr, time.perf_counter() - t0)


def _json(stage: Stage):
    start = min(i for i in (stage.stdout.find("{"), stage.stdout.find("[")) if i >= 0)
    return json.loads(stage.stdout[start:])


def _message(problem: dict, folder: Path) -> str:
    """A problem as printed, with the dataset folder shortened to DIR."""
    return f"{problem['file']}: {problem['error']}".replace(str(folder), "DIR")


def _problems_by_case(problems: list[dict], cases: list[Case], folder: Path) -> dict[str, str]:
    """case name -> the message of the problem that is about it."""
    out = {}
    for c in cases:
        for p in problems:
            mine = p.get("id") == c.name
            if c.name == "duplicate-id":
                mine = "duplicate utterance id" in p["error"]
            if mine:
                out[c.name] = _message(p, folder)
                break
    return out


def _predicted(stage: Stage, folder: Path, media: list[Path]) -> dict[str, str]:
    """input path -> "predicted LABEL" or its "skipped" message, from ``predict --json``
    (predictions come in input order, skipped inputs left out)."""
    prefix = "deepmsi predict: skipped: "
    skipped = {}
    for line in stage.stderr.splitlines():
        if line.startswith(prefix):
            message = line[len(prefix) :]
            skipped[message.split(": ", 1)[0]] = message.replace(str(folder), "DIR")
    predictions = iter(_json(stage) if stage.rc == 0 else [])
    out = {}
    for path in media:
        key = path.as_posix()
        if key in skipped:
            out[key] = skipped[key]
            continue
        pred = next(predictions, None)
        if pred is not None and pred["source"] == path.name:
            out[key] = f"predicted {pred['label']}"
    return out


def run_main(work: Path, folder: Path, good: list[dict], cases: list[Case]) -> dict:
    """The five commands on the main dataset; fills each case's messages; returns the counts."""
    cache, run_dir = work / "cache", work / "run"
    spec = ("--dataset", f"folder:{folder}", "--labels", "meld7")
    stages = [
        deepmsi("inspect", "inspect", *spec, "--json"),
        deepmsi(
            "prepare",
            "prepare",
            *spec,
            "--on-error",
            "skip",
            "--out",
            str(cache),
            "--json",
            *PREPARE,
        ),
        deepmsi("train", "train", "--cache", str(cache), "--out", str(run_dir), *TRAIN),
        deepmsi(
            "evaluate",
            "evaluate",
            "--run",
            str(run_dir),
            "--split",
            "test",
            "--out",
            str(work / "eval"),
        ),
    ]
    media = [folder / r["file"] for r in good]
    media += [folder / c.row["file"] for c in cases if c.make is not None and c.name != "directory"]
    stages.append(
        deepmsi(
            "predict",
            "predict",
            "--run",
            str(run_dir),
            "--on-error",
            "skip",
            "--json",
            "--no-contributions",
            *map(str, media),
        )
    )
    by = {s.name: s for s in stages}
    for name in ("inspect", "prepare"):
        found = _problems_by_case(
            _json(by[name])["problems"] if by[name].rc == 0 else [], cases, folder
        )
        for case, message in found.items():
            next(c for c in cases if c.name == case).messages[name] = message
    predicted = _predicted(by["predict"], folder, media)
    for c in cases:
        path = (folder / c.row["file"]).as_posix()
        if path in predicted:
            c.messages["predict"] = predicted[path]
    sources = {k for k, v in predicted.items() if v.startswith("predicted")}
    return _main_counts(work, by, good, cases, folder=folder, sources=sources)


def _main_counts(work, by, good, cases, *, folder, sources) -> dict:
    from deepmsi.data.cache import FeatureCache

    cached = (
        {r.id: r for r in FeatureCache(work / "cache").records()} if by["prepare"].rc == 0 else {}
    )
    report = (
        json.loads((work / "eval" / "report.json").read_text()) if by["evaluate"].rc == 0 else {}
    )
    test = [i for i, r in cached.items() if r.split == "test"]
    for c in cases:
        c.messages.setdefault("outcome", "cached" if c.name in cached else "left out")
        if c.name in cached:
            c.messages["cached"] = _cached_as(FeatureCache(work / "cache"), c.name)
    good_ids = [r["utterance_id"] for r in good]
    good_predicted = sum((folder / r["file"]).as_posix() in sources for r in good)
    return {
        "stages": {
            s: {"rc": st.rc, "seconds": round(st.seconds, 1), "traceback": st.traceback}
            for s, st in by.items()
        },
        "good": len(good),
        "good_cached": sum(i in cached for i in good_ids),
        "good_predicted": good_predicted,
        "test_scored": report.get("utterances", 0),
        "test_cached": len(test),
        "errors": {s: st.stderr.strip()[-400:] for s, st in by.items() if st.rc != 0},
    }


def main_csv_cases(counts: dict) -> list[Case]:
    """The main labels.csv's own oddities: fine when every good item was read."""
    outcome = f"{counts['good_cached']} of {counts['good']} good items cached"
    read = "read in full" if counts["good_cached"] == counts["good"] else "rows lost"
    return [
        Case(
            name,
            what,
            {},
            None,
            "labels.csv",
            "fine",
            {"inspect": read, "cached": read, "outcome": outcome},
        )
        for name, what in (
            ("crlf-csv", "the main labels.csv has CRLF line ends"),
            ("bom-csv", "the main labels.csv starts with a UTF-8 byte-order mark"),
        )
    ]


def _cached_as(cache, utt_id: str) -> str:
    f = cache.load(utt_id)
    have = [
        m for m, x in (("text", f.text), ("audio", f.audio), ("video", f.frames)) if x is not None
    ]
    return f"cached: {' + '.join(have) or 'nothing'}"


def run_csv(work: Path, csv_folders: list[tuple[Case, Path]]) -> list[dict]:
    """inspect and prepare --on-error skip on each CSV-level case."""
    out = []
    for case, folder in csv_folders:
        spec = ("--dataset", f"folder:{folder}")
        cache = work / "csv-cache" / case.name
        stages = [
            deepmsi("inspect", "inspect", *spec, "--json"),
            deepmsi(
                "prepare",
                "prepare",
                *spec,
                "--on-error",
                "skip",
                "--out",
                str(cache),
                "--json",
                *PREPARE,
            ),
        ]
        for st in stages:
            problems = _json(st)["problems"] if st.rc == 0 else []
            named = [_message(p, folder) for p in problems if p["file"].endswith("labels.csv")]
            if named:
                case.messages[st.name] = named[0]
            elif st.rc == 0:
                case.messages[st.name] = f"{len(problems)} problem(s)"
            else:
                case.messages[st.name] = st.stderr.strip().splitlines()[-1]
        good = _json(stages[1])["utterances"] if stages[1].rc == 0 else 0
        case.messages["outcome"] = f"{good} of 2 good items cached"
        out.append(
            {
                "case": case,
                "traceback": any(s.traceback for s in stages),
                "rc": [s.rc for s in stages],
                "good_cached": good,
            }
        )
    return out


# ---- judging, the table, the record ------------------------------------------------------------
def judge(case: Case) -> tuple[str, bool]:
    """(what happened: "problem" or "fine", whether that is right: a problem names its file and
    leaves the item out; a fine item is cached or, for a CSV case, its good items are)."""
    problem = case.messages.get("prepare", "")
    name = Path(case.file).name
    if case.row:  # an item case
        cached = case.messages.get("outcome") == "cached"
        got = "problem" if problem and not cached else "fine" if cached else "lost"
        names = name in problem or (
            "labels.csv" in problem and ("line" in problem or "duplicate" in problem)
        )
        ok = (got == "problem" and names) or (got == "fine" and not problem)
    else:  # a CSV-level case: "X of Y good items cached"
        got = "problem" if "labels.csv" in problem else "fine"
        x, _, y = (case.messages.get("outcome", "") + " - - -").split()[:3]
        ok = got == "problem" or x == y
    return got, ok and got == case.expect


def _cell(text: str, limit: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown(cases: list[Case], counts: dict) -> str:
    lines = [
        "# Bad inputs: what each command says",
        "",
        "Generated by `python benchmarks/bad_inputs.py --markdown` (do not edit by hand):",
        "30 broken or odd inputs run through `deepmsi inspect --labels meld7`,",
        "`prepare --on-error skip`, `train`, `evaluate` and `predict --on-error skip`.",
        f"`DIR` is the dataset folder (its path holds spaces and non-ASCII letters: `{MAIN}`).",
        "The main labels.csv has CRLF line ends",
        "and a byte-order mark; the CSV-level cases each have a folder of their own.",
        "",
        "A **problem** is listed by `inspect`, counted and skipped by `prepare --on-error skip`",
        "(in `problems.jsonl`; with `--on-error raise`, the default, the same line is the error",
        "and the exit code is 2); **fine** means the item is used, with the modalities it has.",
        "",
        f"Result: {counts['cases']} cases, {counts['problems']} problems, {counts['fine']} fine; "
        f"{counts['good_cached']}/{counts['good']} good items cached and "
        f"{counts['good_predicted']}/{counts['good']} predicted, {counts['test_scored']} test "
        f"utterances scored; {counts['lost']} items lost; tracebacks: {counts['tracebacks']}.",
        "",
        "| case | input | inspect | prepare --on-error skip | predict | result |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        got, ok = judge(c)
        m = c.messages
        cells = [
            c.name,
            c.what,
            m.get("inspect", "no problem"),
            m.get("prepare") or m.get("cached", "-"),
            m.get("predict", "-"),
            f"{got}{'' if ok else ' (UNEXPECTED)'}",
        ]
        if not c.row:
            cells[-1] += f"; {m.get('outcome', '')}"
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


def summarise(cases: list[Case], main_counts: dict, csv_runs: list[dict]) -> dict:
    judged = [judge(c) for c in cases]
    tracebacks = sum(s["traceback"] for s in main_counts["stages"].values())
    tracebacks += sum(r["traceback"] for r in csv_runs)
    fine_items = [c for c, (got, _) in zip(cases, judged, strict=True) if c.row and got == "fine"]
    return {
        **main_counts,
        "cases": len(cases),
        "problems": sum(got == "problem" for got, _ in judged),
        "fine": sum(got == "fine" for got, _ in judged),
        "as_expected": sum(ok for _, ok in judged),
        "tracebacks": tracebacks,
        "lost": (main_counts["good"] - main_counts["good_cached"])
        + sum(got == "lost" for got, _ in judged)
        + sum(2 - r["good_cached"] for r in csv_runs if r["case"].expect == "fine"),
        "fine_items_cached": len(fine_items),
    }


def record_rows(s: dict, seconds: float) -> None:
    from results import Row, command_line, record

    command = command_line()
    rows = [
        ("cases", s["cases"], "broken or odd inputs tried (item cases and CSV-level cases)"),
        ("problems", s["problems"], "of them counted problems naming the file (left out)"),
        ("fine", s["fine"], "of them used as they are (odd but fine)"),
        ("as_expected", s["as_expected"], f"of {s['cases']} cases gave the expected outcome"),
        (
            "good_items_processed",
            s["good_cached"],
            f"of {s['good']} good items cached (and {s['good_predicted']} predicted)",
        ),
        ("items_lost", s["lost"], "good or fine items missing from the cache"),
        ("tracebacks", s["tracebacks"], "tracebacks printed by any command"),
        ("seconds", seconds, "the whole run, wall clock"),
    ]
    record(
        [
            Row(
                f"bad_inputs.folder.{name}",
                "30 generated bad inputs + synthetic clips",
                "tav",
                "seconds" if name == "seconds" else "count",
                value,
                command=command,
                note=note,
            )
            for name, value, note in rows
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="record rows in results.json")
    parser.add_argument("--markdown", action="store_true", help=f"write {DOC.relative_to(ROOT)}")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work here and keep it")
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
    work = args.keep or Path(tempfile.mkdtemp(prefix="deepmsi-bad-inputs-"))
    try:
        folder, good, cases = build_main(work)
        csv_folders = csv_cases(work, good)
        main_counts = run_main(work, folder, good, cases)
        csv_runs = run_csv(work, csv_folders)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    everything = cases + [c for c, _ in csv_folders] + main_csv_cases(main_counts)
    s = summarise(everything, main_counts, csv_runs)
    seconds = time.perf_counter() - t0
    table = markdown(everything, s)
    print(table)
    print(json.dumps({k: v for k, v in s.items() if k != "stages"}, indent=2))
    print(json.dumps(s["stages"]))
    if args.markdown:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(table)
        print(f"wrote {DOC}")
    if args.record:
        record_rows(s, seconds)
    ok = s["as_expected"] == s["cases"] and not s["tracebacks"] and not s["lost"]
    ok = ok and s["good_predicted"] == s["good"] and s["test_scored"] == s["test_cached"]
    print(f"{'all bad inputs handled' if ok else 'SOME BAD INPUTS MISHANDLED'} in {seconds:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
