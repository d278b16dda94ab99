"""The benchmark record: ``results.json`` (rows a script can check and re-run) and the
``RESULTS.md`` generated from it.

Every benchmark script records its rows the same way::

    from results import Row, record
    record([Row("text_baseline.meld.weighted_f1", "MELD test", "t", "weighted_f1", 59.1,
                command="python benchmarks/text_baseline.py --record")])

A row is replaced when a row of the same ``name`` exists, else appended; RESULTS.md is then
rewritten from the whole list. Values are percentages (or the unit the metric names). ``date``
and ``machine`` default to today and this machine.

    .venv/bin/python benchmarks/results.py            # rewrite RESULTS.md from results.json
    .venv/bin/python benchmarks/results.py --check    # exit 1 when RESULTS.md is stale
    .venv/bin/python benchmarks/results.py --commands # each distinct command, to re-run them
    .venv/bin/python benchmarks/results.py --drop NAME ...  # remove rows
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"

SECTIONS = {  # name prefix -> heading; rows of other prefixes get the prefix as heading
    "text_baseline": "Text: frozen MiniLM + logistic regression",
    "text_pipeline": "Text: the deepmsi pipeline (prepare -> train -> evaluate)",
    "text_erc": "Text: dialogue context over utterance vectors (text_erc.py)",
    "ravdess_audio": "Audio: RAVDESS speech, speaker-independent folds",
    "iemocap_clips": "Real clips: IEMOCAP Session 1, all three modalities",
    "speed": "Speed",
    "faults": "Faults: SIGKILLs, damaged run folders, a full disk (faults.py)",
    "bad_inputs": "Bad inputs at scale (bad_inputs.py)",
    "serve_abuse": "The web service under abuse (serve_abuse.py)",
    "asr_wer": "Speech recognition on the 129 IEMOCAP clips (asr_wer.py)",
    "speech_segments": "Cutting a 3-minute video of real clips on speech (speech_segments.py)",
    "batch_predict": "Batch prediction: 20 real clips, one broken (batch_predict.py)",
}


def machine() -> str:
    """CPU model and the number of cores this process may use, e.g. ``AMD EPYC, 2 cores``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def git_commit() -> str:
    """The last commit that changed src/ (short hash), with ``+dirty`` when src/ has uncommitted
    changes; "" outside git. Commits that touch only benchmarks or docs do not change it."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    head = git("log", "-1", "--format=%h", "--", "src")
    return head + ("+dirty" if head and git("status", "--porcelain", "--", "src") else "")


# The code a benchmark ran: taken when this module is imported (import it at the top of a script)
# and compared again when rows are recorded.
COMMIT_AT_START = git_commit()


def command_line() -> str:
    """The command that is running, as it would be typed from the repository root."""
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ]
    script = f"benchmarks/{Path(sys.argv[0]).name}"
    return " ".join([*env, shlex.join([".venv/bin/python", script, *sys.argv[1:]])])


def today() -> str:
    return datetime.date.today().isoformat()


@dataclass
class Row:
    """One measured number and how to get it again.

    ``name`` is unique (``<script>.<dataset>.<what>``); ``commit`` is the deepmsi code it ran
    (``a..b`` when HEAD moved during the run); ``std`` is the spread over folds or seeds where
    there are several; ``note`` says what the number does and does not show.
    """

    name: str
    dataset: str
    modalities: str
    metric: str
    value: float
    command: str
    date: str = dataclasses.field(default_factory=today)
    machine: str = dataclasses.field(default_factory=machine)
    commit: str = COMMIT_AT_START
    std: float | None = None
    note: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["value"] = round(float(self.value), 2)
        if self.std is None:
            del d["std"]
        else:
            d["std"] = round(float(self.std), 2)
        if not self.note:
            del d["note"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        d = {"commit": "", **d}  # rows recorded before commits were kept
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"results.json row {d.get('name')!r}: unknown keys {unknown}")
        return cls(**d)


def load(path: Path = RESULTS_JSON) -> list[Row]:
    if not path.is_file():
        return []
    return [Row.from_dict(d) for d in json.loads(path.read_text())]


def record(rows: Iterable[Row], path: Path = RESULTS_JSON, md: Path = RESULTS_MD) -> list[Row]:
    """Replace rows by name (keeping their place) or append them; rewrite both files.

    Holds an exclusive lock on ``path`` meanwhile, so two benchmarks finishing together do not
    lose each other's rows.
    """
    import fcntl

    rows = list(rows)
    now = git_commit()
    for row in rows:
        if row.commit != now and ".." not in row.commit:
            row.commit = f"{row.commit}..{now}"  # the code changed while the benchmark ran
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = load(path) if path.stat().st_size else []
        index = {r.name: i for i, r in enumerate(current)}
        for row in rows:
            if row.name in index:
                current[index[row.name]] = row
            else:
                index[row.name] = len(current)
                current.append(row)
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps([r.to_dict() for r in current], indent=2) + "\n")
        lock.flush()
        md.write_text(render(current))
    return current


def drop(names: Iterable[str], path: Path = RESULTS_JSON, md: Path = RESULTS_MD) -> list[Row]:
    """Remove rows by name (a benchmark that no longer exists); rewrite both files."""
    names = set(names)
    current = load(path)
    missing = names - {r.name for r in current}
    if missing:
        raise KeyError(f"no rows named {sorted(missing)}")
    current = [r for r in current if r.name not in names]
    path.write_text(json.dumps([r.to_dict() for r in current], indent=2) + "\n")
    md.write_text(render(current))
    return current


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[Row]) -> str:
    """RESULTS.md: one table per section (name prefix): known sections in ``SECTIONS`` order,
    then the others in the order they first appear."""
    lines = [
        "# Benchmark results",
        "",
        "Generated from `benchmarks/results.json` by `benchmarks/results.py`; do not edit by hand.",
        "Values are percent unless the metric names a unit; `± x` is the sample standard deviation",
        "over folds. Every row's command, run from the repository root, reproduces it",
        "(`python benchmarks/results.py --commands` lists them).",
    ]
    sections: dict[str, list[Row]] = {}
    for r in rows:
        sections.setdefault(r.name.split(".", 1)[0], []).append(r)
    order = [k for k in SECTIONS if k in sections] + [k for k in sections if k not in SECTIONS]
    for key in order:
        group = sections[key]
        lines += ["", f"## {SECTIONS.get(key, key)}", ""]
        lines.append(
            "| name | dataset | modalities | metric | value | command | date | machine "
            "| commit | note |"
        )
        lines.append("|---|---|---|---|---:|---|---|---|---|---|")
        for r in group:
            value = f"{r.value:.2f}" + (f" ± {r.std:.2f}" if r.std is not None else "")
            cells = [
                r.name,
                r.dataset,
                r.modalities,
                r.metric,
                value,
                f"`{r.command}`",
                r.date,
                r.machine,
                r.commit,
                r.note,
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if RESULTS.md is out of date")
    ap.add_argument("--commands", action="store_true", help="print each distinct command once")
    ap.add_argument("--drop", nargs="+", metavar="NAME", help="remove these rows")
    args = ap.parse_args()
    if args.drop:
        drop(args.drop)
    rows = load()
    if args.commands:
        for command in dict.fromkeys(r.command for r in rows):
            print(command)
        return
    text = render(rows)
    if args.check:
        stale = not RESULTS_MD.is_file() or RESULTS_MD.read_text() != text
        print("RESULTS.md is out of date" if stale else "RESULTS.md matches results.json")
        sys.exit(1 if stale else 0)
    RESULTS_MD.write_text(text)
    print(f"wrote {RESULTS_MD} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
