"""Word error rate and speed of the speech recognisers on the 129 real IEMOCAP clips.

Each clip's audio (16 kHz mono, as ``predict`` decodes it) is transcribed whole and scored
against the human transcript in ``labels.csv`` (lower case, no punctuation, bracketed events
such as [LAUGHTER] dropped: ``deepmsi.features.asr.normalise_words``). WER is corpus-level:
all errors over all reference words. Speed is the real-time factor (compute seconds per second of
audio, one thread; below 1 is faster than real time).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/asr_wer.py [--asr pocketsphinx DIR ...] [--record]

``pocketsphinx`` is the only recogniser with weights on this machine; pass a Whisper folder
(``hf download openai/whisper-small --local-dir DIR``) to measure one where it exists.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from results import Row, command_line, record

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "iemocap-clips"


def measure(source: str, limit: int | None = None) -> dict:
    """WER (percent), real-time factor and counts for one recogniser over the clips."""
    import torch

    from deepmsi.data.media import decode_audio
    from deepmsi.features.asr import SAMPLE_RATE, load_recognizer, word_errors

    torch.set_num_threads(1)
    with (CLIPS / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[:limit]
    t0 = time.perf_counter()
    recognizer = load_recognizer(source)
    load_s = time.perf_counter() - t0
    errors = words = 0
    audio_s = compute_s = 0.0
    worst: list[tuple[float, str, str]] = []
    for row in rows:
        wave = decode_audio(CLIPS / row["file"], sample_rate=SAMPLE_RATE)
        if wave is None:
            continue
        t0 = time.perf_counter()
        heard = recognizer.transcribe(wave)
        compute_s += time.perf_counter() - t0
        audio_s += len(wave) / SAMPLE_RATE
        e, n = word_errors(row["transcript"], heard.text)
        errors, words = errors + e, words + n
        worst.append((e / max(n, 1), row["transcript"], heard.text))
    worst.sort(reverse=True)
    return {
        "source": source,
        "clips": len(rows),
        "words": words,
        "wer": 100.0 * errors / max(words, 1),
        "rtf": compute_s / max(audio_s, 1e-9),
        "audio_s": audio_s,
        "load_s": load_s,
        "examples": worst[len(worst) // 2 : len(worst) // 2 + 3],  # typical, not the worst
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--asr", nargs="+", default=["pocketsphinx"], metavar="SOURCE")
    ap.add_argument("--limit", type=int, help="first N clips only (a quick look)")
    ap.add_argument("--record", action="store_true", help="record the rows in results.json")
    args = ap.parse_args()
    if not (CLIPS / "labels.csv").is_file():
        raise SystemExit(f"real clips not found at {CLIPS}")
    print(f"{'recogniser':<28} {'clips':>5} {'words':>6} {'WER %':>7} {'RTF':>6} {'load s':>7}")
    rows = []
    for source in args.asr:
        m = measure(source, args.limit)
        print(
            f"{m['source']:<28} {m['clips']:>5} {m['words']:>6} {m['wer']:>7.1f} "
            f"{m['rtf']:>6.2f} {m['load_s']:>7.1f}"
        )
        for _, ref, hyp in m["examples"]:
            print(f"    said: {ref[:70]!r}\n    heard: {hyp[:70]!r}")
        name = Path(source).name if Path(source).exists() else source.replace("/", "-")
        note = (
            f"{m['clips']} clips, {m['words']} reference words, {m['audio_s']:.0f} s of audio; "
            "whole clip transcribed, corpus-level WER after lower-casing and dropping "
            "punctuation and [bracketed] events"
        )
        rows += [
            Row(
                f"asr_wer.iemocap_clips.{name}.wer",
                "IEMOCAP Session 1 clips (129)",
                "a",
                "WER %",
                m["wer"],
                command=command_line(),
                note=note,
            ),
            Row(
                f"asr_wer.iemocap_clips.{name}.rtf",
                "IEMOCAP Session 1 clips (129)",
                "a",
                "real-time factor (s per s of audio, 1 thread)",
                m["rtf"],
                command=command_line(),
                note="compute seconds per second of audio; below 1 is faster than real time",
            ),
        ]
    if args.record and args.limit is None:
        record(rows)
        print("recorded in benchmarks/results.json")


if __name__ == "__main__":
    main()
