"""Batch prediction on 20 real clips, one of them broken: rows written, seconds, and a rerun.

19 real clips (14 IEMOCAP mp4 and 5 CREMA-D flv from ../shared/data) and one truncated mp4 are
copied into a temporary folder; ``deepmsi predict --run RUN FOLDER --out p.csv`` writes them
(the CLI, in this process); a second, identical command must predict nothing again but the
broken file. Without ``--run`` a tiny run is trained first on a synthetic corpus (about half a
minute), which measures the pipeline's cost, not a model's accuracy. ``--asr pocketsphinx``
transcribes the clips (the rows then say ``transcript_source`` ``asr``), recorded under its own
row names.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batch_predict.py [--run demo-out/run] [--json]
        [--asr pocketsphinx] [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from results import Row, command_line, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
IEMOCAP, CREMA = 14, 5


def _clips(folder: Path) -> int:
    iemocap = sorted((DATA / "iemocap-clips" / "video").glob("*.mp4"))[:IEMOCAP]
    crema = sorted((DATA / "crema-d-clips").glob("*.flv"))[:CREMA]
    if len(iemocap) < IEMOCAP or len(crema) < CREMA:
        raise SystemExit(f"needs the real clips in {DATA} (iemocap-clips/, crema-d-clips/)")
    folder.mkdir(parents=True)
    for clip in iemocap + crema:
        shutil.copy(clip, folder / clip.name)
    data = iemocap[0].read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 50])
    return len(iemocap) + len(crema) + 1


def _tiny_run(root: Path) -> Path:
    from deepmsi.config import model_preset, train_preset
    from deepmsi.data import load_dataset
    from deepmsi.demo.synthetic import write_corpus
    from deepmsi.features.preparation import PrepareOptions, prepare
    from deepmsi.training.loop import train

    corpus = write_corpus(
        root / "corpus", dialogues=4, utterances_per_dialogue=7, seconds=1.0, fps=8, size=64,
        splits=(2, 1, 1), seed=0, progress=False,
    )  # fmt: skip
    prepare(load_dataset(f"meld:{corpus}"), root / "cache", PrepareOptions(frames=2, image_size=48))
    train(
        root / "cache", root / "run", model_preset("tiny"),
        train_preset("cpu", epochs=1, batch_size=8, patience=0), progress=False,
    )  # fmt: skip
    return root / "run"


def _predict(run: Path, folder: Path, out: Path, asr: str | None) -> tuple[int, float, str]:
    from deepmsi.cli import main

    argv = ["predict", "--run", str(run), str(folder), "--out", str(out), "--no-progress"]
    stdout = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        rc = main(argv + (["--asr", asr] if asr else []))
    return rc, time.perf_counter() - t0, stdout.getvalue().strip().splitlines()[-1]


def measure(run: Path | None, asr: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="deepmsi-batch-") as tmp:
        root = Path(tmp)
        files = _clips(root / "clips")
        run = run or _tiny_run(root / "tiny")
        out = root / "predictions.csv"
        rc, first_s, first_line = _predict(run, root / "clips", out, asr)
        with out.open(newline="") as f:
            rows = list(csv.DictReader(f))
        rc2, again_s, again_line = _predict(run, root / "clips", out, asr)
    errors = [f"{r['file']}: {r['error']}" for r in rows if r["error"]]
    short = [x.replace(f"{root}/", "") for x in (first_line, again_line, *errors)]  # no tmp paths
    return {
        "files": files,
        "asr": asr,
        "machine_transcripts": sum(r["transcript_source"] == "asr" for r in rows),
        "rows": len(rows),
        "prediction_rows": sum(not r["error"] for r in rows),
        "error_rows": sum(bool(r["error"]) for r in rows),
        "errors": short[2:],
        "seconds": round(first_s, 2),
        "rerun_seconds": round(again_s, 2),
        "exit_codes": [rc, rc2],
        "summary": short[0],
        "rerun_summary": short[1],
    }


def table(r: dict) -> str:
    return "\n".join(
        [
            f"{'files':<22}{r['files']:>8}",
            f"{'rows':<22}{r['rows']:>8}",
            f"{'  prediction rows':<22}{r['prediction_rows']:>8}",
            f"{'  error rows':<22}{r['error_rows']:>8}",
            f"{'machine transcripts':<22}{r['machine_transcripts']:>8}",
            f"{'seconds (incl. load)':<22}{r['seconds']:>8.1f}",
            f"{'rerun seconds':<22}{r['rerun_seconds']:>8.1f}",
            f"first:  {r['summary']}",
            f"rerun:  {r['rerun_summary']}",
            *(f"error:  {e}" for e in r["errors"]),
        ]
    )


def rows(r: dict, run: Path | None) -> list[Row]:
    """The measured counts and times as results.json rows."""
    data = f"{r['files']} files: {IEMOCAP} IEMOCAP mp4, {CREMA} CREMA-D flv, 1 truncated mp4"
    model = f"--run {run}" if run else "a tiny run trained on the synthetic corpus first"
    if r["asr"]:
        model += f", --asr {r['asr']} ({r['machine_transcripts']} machine transcripts)"
    cmd = command_line()
    name = "batch_predict.real_clips" + (f".asr_{Path(r['asr']).name}" if r["asr"] else "")
    return [
        Row(f"{name}.prediction_rows", data, "tav", "rows", r["prediction_rows"],
            command=cmd, note=f"deepmsi predict FOLDER --out p.csv, {model}; {r['summary']}"),
        Row(f"{name}.error_rows", data, "tav", "rows", r["error_rows"],
            command=cmd, note="; ".join(r["errors"])[:300]),
        Row(f"{name}.seconds", data, "tav", "seconds (incl. run load)",
            r["seconds"], command=cmd,
            note=f"one thread; {r['seconds'] / r['files']:.2f} s per file with the load"),
        Row(f"{name}.rerun_seconds", data, "tav", "seconds (incl. run load)",
            r["rerun_seconds"], command=cmd, note=f"the same command again: {r['rerun_summary']}"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="trained run folder (default: a tiny run)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--asr", metavar="SOURCE", help="transcribe the clips (e.g. pocketsphinx)")
    parser.add_argument("--record", action="store_true", help="record the rows in results.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    result = measure(args.run, args.asr)
    print(json.dumps(result, indent=2) if args.json else table(result))
    ok = (result["prediction_rows"], result["error_rows"]) == (result["files"] - 1, 1)
    if args.record:
        record(rows(result, args.run))
        print("recorded in benchmarks/results.json")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
