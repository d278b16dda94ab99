"""Batch prediction: every media file of a folder, or every file a CSV lists, to one CSV or JSONL.

One output row per segment (a whole clip is one segment; ``window`` cuts each file into several):
file, segment, segments, start, end, transcript, transcript_source (``asr``: machine-made by the
speech recogniser the ``asr`` column names; ``given``: from the CSV list; empty: no transcript,
the same values as the single-file JSON's ``text_source``), label, each class's probability, the
modalities the model saw, and an ``error`` column. An input that cannot be used (a broken clip,
a missing file) gives one error row and is counted; it never stops the batch.

Resumable: the rows of each input are appended in one write, flushed and synced before the next
input starts, so a killed batch keeps every input it finished. A rerun reads the output back,
skips the inputs whose predictions are complete, and retries the inputs that errored (their
error rows are replaced: the file may have been fixed since); a half-written last input is
dropped and predicted again. ``resume=False`` starts the output over.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deepmsi.atomic import atomic_write_text
from deepmsi.errors import ConfigError, DataError, DeepMSIError, Problem
from deepmsi.inference.results import Prediction

__all__ = ["BatchItem", "BatchResult", "list_inputs", "predict_many"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".wmv"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | AUDIO_SUFFIXES
OUTPUT_SUFFIXES = (".csv", ".jsonl")
TEXT_COLUMNS = ("transcript", "text")


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch: ``file`` names it in the output (as the CSV lists it, or relative
    to the folder) and is the key a rerun skips it by; ``path`` is where it is read."""

    file: str
    path: Path
    text: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """What one ``predict_many`` call did. ``predictions`` are this call's, in input order;
    ``errors`` the inputs that failed (one error row each); ``done_before`` the inputs a
    previous run had finished, skipped."""

    out: Path | None
    total: int
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    done_before: int = 0
    rows: int = 0  # rows this call wrote (segments plus error rows)
    seconds: float = 0.0

    @property
    def predicted(self) -> int:
        return len(self.predictions)

    @property
    def failed(self) -> int:
        return len(self.errors)

    def summary(self) -> str:
        where = f"; wrote {self.rows} rows to {self.out}" if self.out is not None else ""
        return (
            f"{self.total} inputs: {self.predicted} predicted, {self.failed} failed, "
            f"{self.done_before} done before ({self.seconds:.1f} s){where}"
        )


class _Predicts(Protocol):
    labels: tuple[str, ...]

    def predict(self, media=None, text=None, subtitles=None, window=None) -> Prediction: ...


# ---- inputs -------------------------------------------------------------------------------------
def list_inputs(sources: str | Path | Sequence[str | Path]) -> list[BatchItem]:
    """The items of a folder (every media file in it and its subfolders, by name), of a CSV list
    (a ``file`` column, relative to the CSV's folder, and an optional ``transcript``), or of
    media files given one by one."""
    paths = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    if not paths:
        raise ConfigError("nothing to predict: give a folder, a CSV list or media files")
    lists = [p for p in paths if p.is_dir() or p.suffix.lower() == ".csv"]
    if lists and len(paths) > 1:
        raise ConfigError(f"{lists[0]}: give one folder or one CSV list, not with other inputs")
    if lists:
        return _folder(paths[0]) if paths[0].is_dir() else _csv_list(paths[0])
    return _unique([BatchItem(str(p), p) for p in paths], "the inputs")


def _folder(root: Path) -> list[BatchItem]:
    items = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (editor and OS droppings, temporaries)
        if path.suffix.lower() in MEDIA_SUFFIXES and path.is_file():
            items.append(BatchItem(rel.as_posix(), path))
    if not items:
        kinds = ", ".join(sorted(MEDIA_SUFFIXES))
        raise DataError(root, f"no media files in this folder (looked for {kinds})")
    return items


def _csv_list(path: Path) -> list[BatchItem]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise DataError(path, f"cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "file" not in columns:
        raise DataError(path, f"no 'file' column (columns: {', '.join(columns) or 'none'})")
    text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
    items = []
    for n, raw in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not row.get("file"):
            raise DataError(path, f"row {n}: empty 'file'")
        transcript = " ".join(row.get(text_col, "").split()) if text_col else ""
        items.append(BatchItem(row["file"], path.parent / row["file"], transcript or None))
    if not items:
        raise DataError(path, "lists no files (only a header)")
    return _unique(items, str(path))


def _unique(items: list[BatchItem], where: str) -> list[BatchItem]:
    seen: set[str] = set()
    for item in items:
        if item.file in seen:
            raise DataError(where, f"{item.file!r} is listed twice")
        seen.add(item.file)
    return items


# ---- the batch ----------------------------------------------------------------------------------
def predict_many(
    predictor: _Predicts,
    inputs: str | Path | Sequence[str | Path] | Sequence[BatchItem],
    out: str | Path | None = None,
    *,
    window: float | None = None,
    resume: bool = True,
    progress: bool = True,
) -> BatchResult:
    """Predict every input (see :func:`list_inputs`), writing rows to ``out`` (.csv or .jsonl)
    as each input finishes; see the module docstring for resuming."""
    from deepmsi.progress import progress as progress_bar

    items = _items(inputs)
    with_text = next((item for item in items if item.text), None)
    if window is not None and with_text is not None:
        raise ConfigError(
            f"{with_text.file}: has a transcript, which belongs to the whole clip; "
            "drop the window length or the transcript column"
        )
    t0 = time.perf_counter()
    output = None if out is None else _Output(Path(out), predictor.labels, resume=resume)
    done = output.done if output is not None else set()
    predictions, errors, rows = [], [], 0
    bar = progress_bar(total=len(items), desc="predict", unit="file", enabled=progress)
    try:
        for item in items:
            if item.file in done:
                bar.update()
                continue
            try:
                pred = predictor.predict(item.path, text=item.text, window=window)
                new = segment_rows(item.file, pred)
                predictions.append(pred)
            except Exception as err:  # one bad input never stops a batch
                problem = Problem(None, item.file, _message(item, err))
                log.warning("%s", problem.error)
                errors.append(problem)
                new = [error_row(item.file, problem.error)]
            if output is not None:
                output.append(new)
            rows += len(new)
            bar.update()
    finally:
        bar.close()
    skipped = sum(item.file in done for item in items)
    seconds = time.perf_counter() - t0
    where = output.path if output is not None else None
    return BatchResult(where, len(items), predictions, errors, skipped, rows, seconds)


def _items(inputs: Any) -> list[BatchItem]:
    if isinstance(inputs, (str, Path)):
        return list_inputs(inputs)
    inputs = list(inputs)
    if inputs and all(isinstance(i, BatchItem) for i in inputs):
        return _unique(inputs, "the inputs")
    return list_inputs(inputs)


def _message(item: BatchItem, err: Exception) -> str:
    """One line naming the file: the project's message for errors it knows, else the
    exception's type and first line (the traceback goes to the debug log)."""
    if isinstance(err, DeepMSIError):
        text = str(err)
    else:
        log.debug("unexpected error on %s", item.path, exc_info=err)
        first = (str(err).strip().splitlines() or [""])[0][:300]
        text = f"{item.path}: cannot predict ({type(err).__name__}: {first})"
    if item.file not in text and str(item.path) not in text:
        text = f"{item.file}: {text}"
    return " ".join(text.split())


# ---- rows ---------------------------------------------------------------------------------------
def segment_rows(file: str, pred: Prediction) -> list[dict[str, Any]]:
    """One output row per segment of ``pred`` (probabilities as a dict, in label order)."""
    n = len(pred.segments)
    return [
        {
            "file": file,
            "segment": i,
            "segments": n,
            "start": s.start,
            "end": s.end,
            "transcript": " ".join(s.text.split()) if s.text else None,
            "transcript_source": s.text_source,  # "asr", "given" or None, as in the JSON
            "asr": pred.asr if s.transcribed else None,
            "label": s.label,
            "probabilities": {k: s.probabilities[k] for k in pred.labels},
            "modalities": list(s.modalities),
            "contributions": dict(s.contributions),
            "error": None,
        }
        for i, s in enumerate(pred.segments)
    ]


def error_row(file: str, error: str) -> dict[str, Any]:
    return {
        "file": file,
        "segment": None,
        "segments": 0,
        "start": None,
        "end": None,
        "transcript": None,
        "transcript_source": None,
        "asr": None,
        "label": None,
        "probabilities": {},
        "modalities": [],
        "contributions": {},
        "error": error,
    }


def complete_files(rows: Iterable[dict[str, Any]]) -> set[str]:
    """Files whose rows hold every segment's prediction (error rows do not count)."""
    seen: dict[str, set[int]] = {}
    wanted: dict[str, int] = {}
    bad: set[str] = set()
    for r in rows:
        if r.get("error") or r.get("segment") is None:
            bad.add(r["file"])
            continue
        seen.setdefault(r["file"], set()).add(int(r["segment"]))
        wanted[r["file"]] = int(r.get("segments") or 0)
    return {f for f, segs in seen.items() if f not in bad and segs == set(range(wanted[f]))}


# ---- the output file ----------------------------------------------------------------------------
class _Output:
    """The output file: read back (for a resume), then appended one input at a time."""

    def __init__(self, path: Path, labels: Sequence[str], *, resume: bool) -> None:
        suffix = path.suffix.lower()
        if suffix not in OUTPUT_SUFFIXES:
            raise ConfigError(f"{path}: the output must end in .csv or .jsonl")
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder; give a file name ending in {suffix}")
        self.path, self.labels, self.csv = path, tuple(labels), suffix == ".csv"
        self.columns = [
            "file",
            "segment",
            "segments",
            "start",
            "end",
            "transcript",
            "transcript_source",
            "asr",
            "label",
            *self.labels,
            "modalities",
            "error",
        ]
        kept = self._read() if resume and path.is_file() and path.stat().st_size else []
        self.done = complete_files(kept)
        kept = [r for r in kept if r["file"] in self.done]
        path.parent.mkdir(parents=True, exist_ok=True)
        # Start from what is complete: the header and the finished inputs' rows, atomically.
        atomic_write_text(path, self._header() + self._encode(kept))
        if self.done:
            log.info("%s: %d inputs already done; predicting the rest", path, len(self.done))

    def append(self, rows: list[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8", newline="") as f:
            f.write(self._encode(rows))
            f.flush()
            os.fsync(f.fileno())

    # ---- formats ------------------------------------------------------------------------------
    def _header(self) -> str:
        if not self.csv:
            return ""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(self.columns)
        return buf.getvalue()

    def _encode(self, rows: list[dict[str, Any]]) -> str:
        if not self.csv:
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for r in rows:
            probs = r["probabilities"]
            writer.writerow(
                [
                    r["file"],
                    _cell(r["segment"]),
                    r["segments"],
                    _time(r["start"]),
                    _time(r["end"]),
                    r["transcript"] or "",
                    r["transcript_source"] or "",
                    r["asr"] or "",
                    r["label"] or "",
                ]
                + [f"{probs[k]:.6f}" if k in probs else "" for k in self.labels]
                + ["+".join(r["modalities"]), r["error"] or ""]
            )
        return buf.getvalue()

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(self.path, f"cannot read the earlier output to resume: {err}") from None
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # a write cut short by a kill: that input is predicted again
        return self._parse_csv(lines) if self.csv else self._parse_jsonl(lines)

    def _parse_csv(self, lines: list[str]) -> list[dict[str, Any]]:
        reader = csv.reader(lines)
        header = next(reader, None)
        if header != self.columns:
            raise ConfigError(
                f"{self.path}: holds other columns than this run writes (another run's labels?); "
                "give another output file, or start it over"
            )
        rows = []
        for cells in reader:
            if len(cells) != len(self.columns):
                continue  # a damaged line: its input is predicted again
            r = dict(zip(self.columns, cells, strict=True))
            ok = r["segment"].isdigit() and r["segments"].isdigit() and not r["error"]
            rows.append(
                {
                    "file": r["file"],
                    "segment": int(r["segment"]) if ok else None,
                    "segments": int(r["segments"]) if ok else 0,
                    "start": _float(r["start"]),
                    "end": _float(r["end"]),
                    "transcript": r["transcript"] or None,
                    "transcript_source": r["transcript_source"] or None,
                    "asr": r["asr"] or None,
                    "label": r["label"] or None,
                    "probabilities": {k: float(r[k]) for k in self.labels if r[k]},
                    "modalities": [m for m in r["modalities"].split("+") if m],
                    "contributions": {},
                    "error": r["error"] or None,
                }
            )
        return rows

    def _parse_jsonl(self, lines: list[str]) -> list[dict[str, Any]]:
        rows = []
        for line in lines:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a damaged line: its input is predicted again
            if not isinstance(r, dict) or "file" not in r:
                continue
            if r.get("probabilities") and tuple(r["probabilities"]) != self.labels:
                raise ConfigError(
                    f"{self.path}: holds predictions over other labels than this run's; "
                    "give another output file, or start it over"
                )
            rows.append(r)
        return rows


def _cell(x: Any) -> str:
    return "" if x is None else str(x)


def _time(t: float | None) -> str:
    return "" if t is None else f"{t:.3f}"


def _float(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
