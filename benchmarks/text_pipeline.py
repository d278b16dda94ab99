"""Text emotion recognition through the deepmsi pipeline itself: prepare -> train -> evaluate.

For each corpus: ``deepmsi prepare --modalities t`` (frozen MiniLM sentence vectors), then
``deepmsi train --preset cpu --modalities t`` once per setting of a small grid (each run chooses
its epoch on the dev split by weighted F1), then the setting with the best dev weighted F1 is
scored once on test with ``deepmsi evaluate``. No other run ever sees the test split.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text_pipeline.py [--corpus meld iemocap]
        [--record]

With ``--finetuned TAG`` the text encoder is the fine-tuned MiniLM folder that
``benchmarks/text_erc.py finetune --tag TAG`` wrote (the library's ``deepmsi.finetune_text``,
exactly what ``deepmsi prepare --finetune-text`` runs), given to ``prepare --text-encoder`` so
every utterance is read with its past turns; ``--context online|offline`` adds the dialogue-
context head to every training run; ``--settings`` narrows the grid.

Everything goes under artifacts/bench/ (caches are reused, runs are rebuilt). The deepmsi CLI is
called as a subprocess, so the commands it prints are exactly the ones a user would type.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from results import Row, command_line, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "artifacts" / "bench"
FINETUNED = ROOT / "artifacts" / "text_erc"  # where text_erc.py finetune saves encoder folders
DEEPMSI = ROOT / ".venv" / "bin" / "deepmsi"
GOAL = 63.0  # the target test weighted F1 on both corpora

CORPORA = {
    "meld": ("meld:" + str(DATA / "meld"), "MELD test (2610)"),
    "iemocap": (
        "iemocap:" + str(DATA / "iemocap" / "cosmic_iemocap.pkl"),
        "IEMOCAP test, Session 5 (1623)",
    ),
}

# The grid: extra `deepmsi train` flags on top of `--preset cpu --modalities t`.
GRID: dict[str, list[str]] = {
    "cpu": [],
    "cpu-classweights": ["--class-weights"],
    "cpu-lr3e-4-e40": ["--lr", "3e-4", "--epochs", "40", "--patience", "8"],
    "cpu-lr3e-3": ["--lr", "3e-3"],
    "cpu-bs64-classweights": ["--batch-size", "64", "--class-weights"],
}


@dataclass
class Candidate:
    setting: str
    run: Path
    best_epoch: int
    dev_weighted_f1: float  # percent
    seconds_per_epoch: float


def sh(args: list[str]) -> str:
    """Run a command (printing it first) and return its stdout; stderr passes through."""
    print("$ " + shlex.join(args), flush=True)
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout


def prepare(corpus: str, finetuned: str | None) -> Path:
    spec, _ = CORPORA[corpus]
    cache = WORK / (f"{corpus}_t" if finetuned is None else f"{corpus}_t_{finetuned}")
    encoder = [] if finetuned is None else ["--text-encoder", str(FINETUNED / finetuned)]
    out = sh(
        [
            str(DEEPMSI),
            "prepare",
            "--dataset",
            spec,
            "--out",
            str(cache),
            *encoder,
            "--modalities",
            "t",
            "--workers",
            "1",
            "--no-progress",
            "--json",
        ]
    )
    summary = json.loads(out)
    print(f"  {summary['utterances']} utterances cached ({summary['prepared']} new)")
    return cache


def train(corpus: str, cache: Path, setting: str, context: str) -> Candidate:
    run = WORK / "runs" / f"{cache.name}_{setting}_{context}"
    if run.exists():  # a fresh run each time: the numbers come from this invocation
        shutil.rmtree(run)
    sh(
        [
            str(DEEPMSI),
            "train",
            "--cache",
            str(cache),
            "--out",
            str(run),
            "--preset",
            "cpu",
            "--modalities",
            "t",
            "--threads",
            "1",
            "--no-progress",
            "--context",
            context,
            *GRID[setting],
        ]
    )
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(history, key=lambda h: h["dev_weighted_f1"])
    dev = 100 * best["dev_weighted_f1"]
    if context != "none":  # the head is what evaluate scores, so its dev score is what counts
        head = json.loads((run / "context.json").read_text())
        dev = 100 * head["dev"]["weighted_f1"]
    seconds = sum(h["seconds"] for h in history) / len(history)
    return Candidate(setting, run, best["epoch"], dev, seconds)


def evaluate(run: Path) -> dict:
    out = run / "eval_test"
    sh([str(DEEPMSI), "evaluate", "--run", str(run), "--split", "test", "--out", str(out)])
    return json.loads((out / "report.json").read_text())


def run_corpus(corpus: str, args: argparse.Namespace) -> tuple[Candidate, list[Candidate], dict]:
    cache = prepare(corpus, args.finetuned)
    tried = [train(corpus, cache, s, args.context) for s in args.settings]
    chosen = max(tried, key=lambda c: c.dev_weighted_f1)
    report = evaluate(chosen.run)
    return chosen, tried, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", nargs="+", choices=list(CORPORA), default=list(CORPORA))
    ap.add_argument("--settings", nargs="+", choices=list(GRID), default=list(GRID))
    ap.add_argument("--finetuned", metavar="TAG", help="text encoder: artifacts/text_erc/TAG")
    ap.add_argument("--context", choices=("none", "online", "offline"), default="none")
    ap.add_argument("--record", action="store_true", help="record rows in results.json")
    args = ap.parse_args()
    if not (DATA / "meld").is_dir():
        sys.exit(f"real data not found at {DATA}")
    rows = []
    lines = [f"{'corpus':8} {'setting':24} {'epoch':>5} {'dev wF1':>8} {'s/epoch':>8}"]
    for corpus in args.corpus:
        t0 = time.time()
        chosen, tried, report = run_corpus(corpus, args)
        for c in tried:
            mark = "  <- chosen" if c is chosen else ""
            lines.append(
                f"{corpus:8} {c.setting:24} {c.best_epoch:5d} {c.dev_weighted_f1:8.2f} "
                f"{c.seconds_per_epoch:8.2f}{mark}"
            )
        test = {k: 100 * report[k] for k in ("weighted_f1", "accuracy", "macro_f1")}
        lines.append(
            f"{corpus:8} test: wF1 {test['weighted_f1']:.2f}, "
            f"acc {test['accuracy']:.2f}, macro F1 {test['macro_f1']:.2f} "
            f"({time.time() - t0:.0f} s in all)"
        )
        goal = "goal 63 reached" if test["weighted_f1"] >= GOAL else "goal 63 not reached"
        grid = ", ".join(f"{c.setting} {c.dev_weighted_f1:.1f}" for c in tried)
        if args.finetuned is None:
            encoder = "Frozen MiniLM sentence vectors"
        else:
            encoder = f"MiniLM fine-tuned with past turns ({args.finetuned}, chosen on dev)"
        context = {
            "none": "no dialogue context",
            "online": "online dialogue-context head (past turns only)",
            "offline": "offline dialogue-context head (whole dialogue)",
        }[args.context]
        note = (
            f"{goal}. {encoder}, {context}; the cpu-preset classifier trained with "
            f"{len(tried)} settings, chosen on dev wF1 ({grid}): {chosen.setting}, epoch "
            f"{chosen.best_epoch}; test scored once"
        )
        if args.record:
            _, dataset = CORPORA[corpus]
            name = f"text_pipeline.{corpus}"
            if args.finetuned or args.context != "none":
                name += f".{args.finetuned or 'frozen'}-{args.context}"
            command = command_line()
            if args.finetuned:  # the encoder folder comes from this fine-tune run
                from text_erc import finetune_command, finetune_entry

                command = f"{finetune_command(finetune_entry(args.finetuned))} && {command}"
            for metric in ("weighted_f1", "accuracy"):
                rows.append(
                    Row(f"{name}.{metric}", dataset, "t", metric, test[metric], command, note=note)
                )
    print("\n".join(lines))
    if rows:
        record(rows)


if __name__ == "__main__":
    main()
