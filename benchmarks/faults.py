"""Fault drill: SIGKILL ``prepare`` and ``train`` at three moments each, damage run folders, fill
the disk during ``prepare``; every fault must be survived with nothing lost.

On a synthetic corpus (74 utterances, seed 0), through the ``deepmsi`` command as a user runs it:

- ``prepare`` (2 workers) is SIGKILLed (the whole process group, workers included) at three
  moments: while the first item is renamed into place (only the manifest is saved), from outside
  as soon as a few items exist (while a chunk is being written), and while the index
  (``utterances.jsonl``) is renamed into place (every item saved). A plain re-run resumes it.
- ``train`` (tiny preset, 6 epochs) is SIGKILLed from outside as soon as epoch 2's checkpoint
  exists (mid-epoch 3), while epoch 4's weights are renamed into place (its state not yet
  written), and while ``metrics.jsonl`` is renamed after the last epoch. ``train --resume``
  continues it.

After each resume: (a) every cache item loads and holds the uninterrupted run's features; (b) the
final report (``deepmsi evaluate`` on test, and every ``metrics.jsonl`` row but its timing) equals
an uninterrupted run's with the same seed (after a killed ``prepare`` the resumed cache is
trained and evaluated too); (c) no temporary file is left. The "while renamed" kills are made
exact by a wrapper that SIGKILLs its own process group inside ``os.replace`` (this script's
``--kill-at-rename`` mode); the outside kill polls the folder.

Damaged run folders: 15 files a user could break (``config.json`` empty, truncated, not UTF-8,
a list, null, a number, without its model, with a bad model; ``best.safetensors`` truncated,
empty, random bytes; a checkpoint's weights or state truncated or empty) must each give exit code
2 and one line naming the file, no traceback (``evaluate``, ``predict`` or ``train --resume``).

Full disk: ``prepare`` writes into a tmpfs too small for the cache (needs root; else a file-size
limit, ``RLIMIT_FSIZE``, stands in): one line naming the item, no half-written item, every item
written loads, and after space is freed a re-run completes the cache.

    .venv/bin/python benchmarks/faults.py [--record] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = {"dialogues": 12, "utterances_per_dialogue": (5, 8), "splits": (8, 2, 2)}
CLIPS = {"seconds": 1.0, "fps": 8, "size": 64}
PREPARE = ["--frames", "2", "--image-size", "48", "--workers", "2", "--no-progress"]
TRAIN = ["--preset", "tiny", "--epochs", "6", "--batch-size", "8", "--patience", "0"]
TRAIN += ["--seed", "0", "--threads", "1", "--no-progress"]


# ---- running the command, killing it ---------------------------------------------------------
def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def deepmsi(*args: str, kill_at: tuple[str, int] | None = None, **popen) -> subprocess.Popen:
    """Start ``deepmsi ARGS`` in its own process group; with ``kill_at`` = (path suffix, n) it
    SIGKILLs its group inside the n-th ``os.replace`` onto a path ending so."""
    if kill_at is None:
        cmd = [sys.executable, "-m", "deepmsi", *args]
    else:
        cmd = [sys.executable, __file__, "--kill-at-rename", kill_at[0], str(kill_at[1]), *args]
    return subprocess.Popen(
        cmd,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def run(*args: str, **popen) -> subprocess.CompletedProcess:
    proc = deepmsi(*args, **popen)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILL ``proc``'s process group as soon as ``ready()``; False if it ended first."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return True
        time.sleep(0.002)
    proc.communicate()
    return False


def _kill_at_rename(suffix: str, n: int, argv: list[str]) -> None:
    """The child of ``--kill-at-rename``: deepmsi with ``os.replace`` armed."""
    real, seen = os.replace, [0]

    def replace(src, dst, *a, **k):
        if str(dst).endswith(suffix):
            seen[0] += 1
            if seen[0] == n:  # the file is complete under its temporary name
                os.killpg(os.getpgid(0), signal.SIGKILL)
        return real(src, dst, *a, **k)

    os.replace = replace
    from deepmsi.cli import main

    sys.exit(main(argv))


# ---- checks ------------------------------------------------------------------------------------
def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


def load_items(cache: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every ``items/*.npz`` of a cache, loaded (a half-written item raises here)."""
    out = {}
    for path in sorted((cache / "items").glob("*.npz")):
        with np.load(path) as z:
            out[path.stem] = {k: z[k] for k in z.files}
    return out


def items_lost(cache: Path, reference: dict[str, dict[str, np.ndarray]]) -> int:
    """Reference items missing from ``cache``, or different (text within 1e-5)."""
    from deepmsi.data.cache import FeatureCache

    have = load_items(cache)
    listed = {r.id for r in FeatureCache(cache).records()}
    lost = 0
    for key, ref in reference.items():
        got = have.get(key)
        same = got is not None and got.keys() == ref.keys()
        same = same and all(np.allclose(got[k], ref[k], atol=1e-5) for k in ref)
        lost += not same
    return lost + max(0, len(reference) - len(listed))


def report_of(run_dir: Path, tag: str) -> dict:
    """``evaluate`` on test, plus the metrics rows without their timing."""
    out = run_dir.parent / f"eval-{tag}"
    done = run("evaluate", "--run", str(run_dir), "--split", "test", "--out", str(out))
    if done.returncode != 0:
        raise RuntimeError(f"evaluate {run_dir} failed: {done.stderr.strip()[-500:]}")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "report": json.loads((out / "report.json").read_text()),
        "metrics": [{k: v for k, v in r.items() if k != "seconds"} for r in rows],
    }


@dataclass
class Outcome:
    stage: str
    moment: str
    killed: bool
    survived: bool
    lost: int = 0
    left: list[str] = field(default_factory=list)
    detail: str = ""


# ---- the drill -----------------------------------------------------------------------------------
def prepare_kills(work: Path, corpus: Path, ref: dict, ref_report: dict) -> list[Outcome]:
    moments = [
        ("while the first item is renamed into place", ("npz", 1)),
        ("from outside, once 5 items exist", None),
        ("while utterances.jsonl is renamed into place", ("utterances.jsonl", 1)),
    ]
    outcomes = []
    for i, (moment, kill_at) in enumerate(moments, 1):
        cache = work / f"cache-kill{i}"
        args = ("prepare", "--dataset", f"meld:{corpus}", "--out", str(cache), *PREPARE)
        proc = deepmsi(*args, kill_at=kill_at)
        if kill_at is None:
            killed = kill_when(proc, lambda c=cache: len(list(c.glob("items/*.npz"))) >= 5)
        else:
            proc.communicate()
            killed = proc.returncode == -signal.SIGKILL
        before = len(list(cache.glob("items/*.npz")))
        resumed = run(*args)
        outcome = Outcome("prepare", moment, killed, False, detail=f"{before} items at the kill")
        if resumed.returncode != 0:
            outcome.detail += f"; resume failed: {resumed.stderr.strip()[-300:]}"
            outcomes.append(outcome)
            continue
        outcome.lost, outcome.left = items_lost(cache, ref), temporaries(cache)
        trained = run("train", "--cache", str(cache), "--out", str(work / f"run-p{i}"), *TRAIN)
        same = trained.returncode == 0 and report_of(work / f"run-p{i}", f"p{i}") == ref_report
        outcome.survived = killed and same and outcome.lost == 0 and not outcome.left
        outcome.detail += "; report equal" if same else "; REPORT DIFFERS"
        outcomes.append(outcome)
    return outcomes


def train_kills(work: Path, cache: Path, ref_report: dict) -> list[Outcome]:
    moments = [
        ("from outside, once epoch 2's checkpoint exists", None),
        ("while epoch 4's weights are renamed into place", ("epoch_004.safetensors", 1)),
        ("while metrics.jsonl is renamed after the last epoch", ("metrics.jsonl", 6)),
    ]
    outcomes = []
    for i, (moment, kill_at) in enumerate(moments, 1):
        run_dir = work / f"run-kill{i}"
        args = ("train", "--cache", str(cache), "--out", str(run_dir), *TRAIN)
        proc = deepmsi(*args, kill_at=kill_at)
        if kill_at is None:
            state = run_dir / "checkpoints" / "epoch_002.state.pt"
            killed = kill_when(proc, state.is_file)
        else:
            proc.communicate()
            killed = proc.returncode == -signal.SIGKILL
        from deepmsi.runs.folder import completed_epochs

        done = completed_epochs(run_dir)
        left_at_kill = temporaries(run_dir)
        resumed = run("train", "--cache", str(cache), "--out", str(run_dir), "--resume")
        detail = f"killed after epoch {done[-1] if done else 0}, {len(left_at_kill)} temp file(s)"
        outcome = Outcome("train", moment, killed, False, detail=detail)
        if resumed.returncode != 0:
            outcome.detail += f"; resume failed: {resumed.stderr.strip()[-300:]}"
        else:
            same = report_of(run_dir, f"t{i}") == ref_report
            outcome.left = temporaries(run_dir)
            outcome.survived = killed and same and not outcome.left
            outcome.detail += "; report equal" if same else "; REPORT DIFFERS"
        outcomes.append(outcome)
    return outcomes


# ---- damaged run folders ---------------------------------------------------------------------
def _edit_config(edit):
    def damage(path: Path) -> None:
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return damage


def _cut(keep: float):
    def damage(path: Path) -> None:
        path.write_bytes(path.read_bytes()[: int(len(path.read_bytes()) * keep)])

    return damage


def _bytes(data: bytes):
    return lambda path: path.write_bytes(data)


EVALUATE = ("evaluate", "--split", "test")
PREDICT = ("predict", "--text", "I can't believe it", "--no-contributions")
RESUME = ("train", "--resume", "--no-progress")
DAMAGE = [  # (case, file in the run folder, damage, command)
    ("config.json empty", "config.json", _bytes(b""), EVALUATE),
    ("config.json truncated", "config.json", _cut(0.5), EVALUATE),
    ("config.json not UTF-8", "config.json", _bytes(b"\xff\xfe{\x00garbage"), EVALUATE),
    ("config.json a list", "config.json", _edit_config(lambda d: [d]), PREDICT),
    ("config.json null", "config.json", _bytes(b"null\n"), EVALUATE),
    ("config.json a number", "config.json", _bytes(b"42\n"), RESUME),
    ("config.json without model", "config.json", _edit_config(lambda d: {"train": {}}), EVALUATE),
    (
        "config.json unknown model key",
        "config.json",
        _edit_config(lambda d: {**d, "model": {**d["model"], "bogus": 1}}),
        EVALUATE,
    ),
    (
        "config.json model field of the wrong type",
        "config.json",
        _edit_config(lambda d: {**d, "model": {**d["model"], "embed_dim": "big"}}),
        PREDICT,
    ),
    ("best.safetensors truncated", "best.safetensors", _cut(0.5), EVALUATE),
    ("best.safetensors empty", "best.safetensors", _bytes(b""), EVALUATE),
    ("best.safetensors random bytes", "best.safetensors", _bytes(os.urandom(4096)), PREDICT),
    ("last weights truncated", "checkpoints/epoch_006.safetensors", _cut(0.3), RESUME),
    ("last state truncated", "checkpoints/epoch_006.state.pt", _cut(0.5), RESUME),
    ("last state empty", "checkpoints/epoch_006.state.pt", _bytes(b""), RESUME),
]


def error_lines(stderr: str) -> list[str]:
    """stderr without log records (``LEVEL logger: ...``)."""
    levels = ("DEBUG ", "INFO ", "WARNING ")
    return [x for x in stderr.splitlines() if x.strip() and not x.startswith(levels)]


def damaged_runs(work: Path, ref_run: Path, cache: Path) -> list[tuple[str, str, bool]]:
    """(case, the message, passed) per damaged file."""
    out = []
    for i, (case, name, damage, command) in enumerate(DAMAGE):
        run_dir = work / f"damaged-{i:02d}"
        shutil.copytree(ref_run, run_dir)
        damage(run_dir / name)
        flag = "--out" if command[0] == "train" else "--run"
        extra = ("--cache", str(cache)) if command[0] == "train" else ()
        done = run(command[0], flag, str(run_dir), *extra, *command[1:])
        lines = error_lines(done.stderr)
        ok = done.returncode == 2 and "Traceback" not in done.stderr and len(lines) == 1
        ok = ok and str(run_dir / name) in lines[0]
        out.append((case, lines[0] if len(lines) == 1 else " / ".join(lines)[-300:], ok))
    return out


# ---- a full disk -------------------------------------------------------------------------------
@dataclass
class DiskOutcome:
    how: str
    message: str
    one_line: bool
    half_items: int
    items_at_error: int
    left: list[str]
    lost_after_resume: int

    @property
    def survived(self) -> bool:
        return (
            self.one_line and not self.half_items and not self.left and not self.lost_after_resume
        )


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def full_disk(work: Path, corpus: Path, ref_cache: Path, ref: dict) -> DiskOutcome:
    disk = work / "disk"
    disk.mkdir()
    sizes = [p.stat().st_size for p in (ref_cache / "items").glob("*.npz")]
    kb = max(64, int(0.4 * sum(sizes)) // 1024)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(disk)]
    mounted = os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0
    cache = disk / "cache"
    args = ("prepare", "--dataset", f"meld:{corpus}", "--out", str(cache), *PREPARE)
    try:
        if mounted:
            how = f"tmpfs of {kb} KiB (the cache needs {sum(sizes) // 1024} KiB)"
            full = run(*args)
        else:
            how = f"RLIMIT_FSIZE {min(sizes) // 2} bytes (not root: no tmpfs)"
            full = run(*args, preexec_fn=_limit_file_size(min(sizes) // 2))
        lines = error_lines(full.stderr)
        message = lines[0] if len(lines) == 1 else " / ".join(lines)[-300:]
        one_line = full.returncode == 2 and len(lines) == 1 and ".npz" in message
        half = 0
        for path in (cache / "items").glob("*.npz"):
            try:
                np.load(path).close()
            except Exception:
                half += 1
        at_error, left = len(list((cache / "items").glob("*.npz"))), temporaries(cache)
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=1g", str(disk)], check=True)
        resumed = run(*args)
        lost = items_lost(cache, ref) if resumed.returncode == 0 else len(ref)
        left += temporaries(cache)
        return DiskOutcome(how, message, one_line, half, at_error, left, lost)
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)


# ---- main --------------------------------------------------------------------------------------
def references(work: Path) -> tuple[Path, Path, Path, dict, dict]:
    """The corpus, an uninterrupted cache and run, the cache's items and the run's report."""
    sys.path.insert(0, str(ROOT / "src"))
    from deepmsi.demo.synthetic import write_corpus

    corpus = write_corpus(work / "corpus", seed=0, progress=False, **CORPUS, **CLIPS)
    cache, run_dir = work / "cache-ref", work / "run-ref"
    for args in (
        ("prepare", "--dataset", f"meld:{corpus}", "--out", str(cache), *PREPARE),
        ("train", "--cache", str(cache), "--out", str(run_dir), *TRAIN),
    ):
        done = run(*args)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()[-800:]}")
    return corpus, cache, run_dir, load_items(cache), report_of(run_dir, "ref")


def print_tables(kills: list[Outcome], damaged: list, disk: DiskOutcome) -> None:
    print("\nSIGKILL then resume")
    print("| stage | moment | killed | survived | items lost | temp files left | detail |")
    print("|---|---|---|---|---:|---:|---|")
    for o in kills:
        cells = (o.stage, o.moment, o.killed, o.survived, o.lost, len(o.left), o.detail)
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print("\nDamaged run-folder files (exit code 2, one line naming the file, no traceback)")
    print("| case | message | ok |\n|---|---|---|")
    for case, message, ok in damaged:
        print(f"| {case} | {message} | {ok} |")
    print(f"\nFull disk during prepare ({disk.how}): {disk.message}")
    print(
        f"one line naming the item: {disk.one_line}; items saved before it: "
        f"{disk.items_at_error}, half-written: {disk.half_items}; temporary files left: "
        f"{len(disk.left)}; items lost after the re-run: {disk.lost_after_resume}"
    )


def record_rows(kills: list[Outcome], damaged: list, disk: DiskOutcome, seconds: float) -> None:
    from results import Row, command_line, record

    command = command_line()
    lost = sum(o.lost for o in kills) + disk.lost_after_resume + disk.half_items
    left = sum(len(o.left) for o in kills) + len(disk.left)
    survived = sum(o.survived for o in kills)
    rows = [
        (
            "sigkill_survived",
            "count",
            survived,
            f"of {len(kills)} SIGKILLs (prepare 3, train 3) "
            "resumed to a complete cache and the uninterrupted run's report",
        ),
        (
            "damaged_run_files_one_line",
            "count",
            sum(ok for *_, ok in damaged),
            f"of {len(damaged)} damaged run-folder files gave exit 2 and one line naming the file",
        ),
        (
            "full_disk_survived",
            "count",
            int(disk.survived),
            f"of 1: {disk.how}; one line naming the item, no half item, resumed complete",
        ),
        (
            "items_lost",
            "count",
            lost,
            "cache items missing, different or half-written after "
            "every kill and the full disk, once resumed",
        ),
        ("temporaries_left", "count", left, "temporary files left after the resumes"),
        ("seconds", "seconds", seconds, "the whole drill, wall clock"),
    ]
    record(
        [
            Row(
                f"faults.synthetic.{name}",
                "synthetic corpus (74 utt)",
                "tav",
                metric,
                value,
                command=command,
                note=note,
            )
            for name, metric, value, note in rows
        ]
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--kill-at-rename":
        _kill_at_rename(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="record rows in results.json")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work here and keep it")
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
    work = args.keep or Path(tempfile.mkdtemp(prefix="deepmsi-faults-"))
    try:
        corpus, cache, ref_run, ref, ref_report = references(work)
        kills = prepare_kills(work, corpus, ref, ref_report)
        kills += train_kills(work, cache, ref_report)
        damaged = damaged_runs(work, ref_run, cache)
        disk = full_disk(work, corpus, cache, ref)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - t0
    print_tables(kills, damaged, disk)
    ok = all(o.survived for o in kills) and all(d[2] for d in damaged) and disk.survived
    print(f"\n{'all faults survived' if ok else 'SOME FAULTS NOT SURVIVED'} in {seconds:.0f} s")
    if args.record:
        record_rows(kills, damaged, disk, seconds)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
