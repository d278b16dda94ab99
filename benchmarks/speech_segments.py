"""Cutting a long recording on speech: a 3-minute video made of real IEMOCAP clips with silence
between them, no transcript and no subtitles.

1. Each detector (silero where installed, energy) on the video's sound: how many utterances
   cross a join between clips or fall outside their clip (0.5 s either side), and how far each
   clip's first onset and last offset lie from what the detector finds in that clip alone.
2. ``Predictor.predict(video)`` end to end (``deepmsi predict --run RUN VIDEO --asr SOURCE``):
   wall time per stage, the number of utterances, and the WER of the machine transcript
   against the clips' human transcripts joined in order.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speech_segments.py [--run RUN]
        [--asr pocketsphinx] [--plot docs/speech-timeline.png] [--record]

Without ``--run`` a tiny run is trained on the synthetic corpus first (its labels mean nothing;
the point is where the cuts fall and what each stage costs).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results import Row, command_line, record

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "iemocap-clips"
GAP_S = 2.0
TOLERANCE_S = 0.5


def _clips(total_s: float) -> tuple[list[Path], list[str]]:
    """Clips in labels.csv order until the video (clips plus gaps) reaches ``total_s``."""
    from deepmsi.data.media import probe

    with (CLIPS / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    clips, texts, t = [], [], 0.0
    for row in rows:
        if t >= total_s:
            break
        path = CLIPS / row["file"]
        clips.append(path)
        texts.append(row["transcript"])
        t += (probe(path).duration or 0.0) + GAP_S
    return clips, texts


def _detector_scores(wave, cues, detector: str) -> dict:
    from deepmsi.inference.segmentation import SAMPLE_RATE, speech_regions

    t0 = time.perf_counter()
    found = speech_regions(wave, detector=detector)
    seconds = time.perf_counter() - t0
    spans = [(a, b) for a, b, _ in cues]
    inside = [
        any(lo - TOLERANCE_S <= a < b <= hi + TOLERANCE_S for lo, hi in spans) for a, b in found
    ]
    crossing = sum(
        1
        for a, b in found
        for lo, hi in zip(spans, spans[1:], strict=False)
        if a < lo[1] and b > hi[0]
    )
    edges, missed = [], 0
    for lo, hi in spans:
        piece = wave[round(lo * SAMPLE_RATE) : round(hi * SAMPLE_RATE)]
        alone = speech_regions(piece, detector=detector)
        mine = [(a, b) for a, b in found if lo - TOLERANCE_S <= a and b <= hi + TOLERANCE_S]
        if not alone:
            continue
        if not mine:
            missed += 1
            continue
        edges += [abs(mine[0][0] - (lo + alone[0][0])), abs(mine[-1][1] - (lo + alone[-1][1]))]
    return {
        "regions": len(found),
        "outside": inside.count(False),
        "crossing": crossing,
        "missed": missed,
        "edge_median": statistics.median(edges) if edges else float("nan"),
        "edge_within": 100.0 * sum(e <= TOLERANCE_S for e in edges) / max(len(edges), 1),
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="a trained run (default: train a tiny one)")
    ap.add_argument("--asr", default="pocketsphinx", metavar="SOURCE")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--plot", type=Path, help="write the timeline PNG here")
    ap.add_argument("--record", action="store_true", help="record the rows in results.json")
    args = ap.parse_args()
    if not (CLIPS / "labels.csv").is_file():
        raise SystemExit(f"real clips not found at {CLIPS}")
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from helpers_inference import build_tiny_run, join_clips

    from deepmsi.data.media import decode_audio
    from deepmsi.features.asr import word_errors
    from deepmsi.inference.predictor import Predictor
    from deepmsi.inference.segmentation import SAMPLE_RATE, detector_name

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="speech-segments-"))
    clips, texts = _clips(args.minutes * 60)
    t0 = time.perf_counter()
    video, _, cues = join_clips(clips, texts, tmp / "talk", gap=GAP_S)
    print(
        f"{video}: {len(clips)} clips, {cues[-1][1] + GAP_S:.0f} s "
        f"({time.perf_counter() - t0:.0f} s to build)"
    )
    wave = decode_audio(video, sample_rate=SAMPLE_RATE)
    detectors = ["silero", "energy"] if detector_name() == "silero" else ["energy"]
    head = ["utts", "crossing", "outside", "missed", "edge med s", "edges<=0.5s %", "s"]
    print(f"\n{'detector':<8} " + " ".join(f"{h:>{max(6, len(h))}}" for h in head))
    scores = {}
    for det in detectors:
        s = scores[det] = _detector_scores(wave, cues, det)
        print(
            f"{det:<8} {s['regions']:>6} {s['crossing']:>8} {s['outside']:>7} {s['missed']:>6} "
            f"{s['edge_median']:>10.3f} {s['edge_within']:>13.1f} {s['seconds']:>6.2f}"
        )

    run = args.run or build_tiny_run(tmp / "tiny").run_dir
    predictor = Predictor.from_run(run, asr=args.asr)
    t0 = time.perf_counter()
    pred = predictor.predict(video)
    wall = time.perf_counter() - t0
    errors, words = word_errors(" ".join(texts), pred.transcript or "")
    wer = 100.0 * errors / max(words, 1)
    duration = cues[-1][1] + GAP_S
    print(
        f"\npredict --asr {args.asr}: {len(pred.segments)} utterances in {wall:.1f} s "
        f"({wall / duration:.2f} s per s of video); transcript WER {wer:.1f}%"
    )
    print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in predictor.last_timings.items() if v))
    if args.plot:
        from deepmsi.inference.timeline import plot_timeline

        plot_timeline(
            pred, args.plot, title=f"{len(clips)} IEMOCAP clips, cut on speech, --asr {args.asr}"
        )
        print(f"wrote {args.plot}")
    if not args.record:
        return
    data = f"{duration / 60:.1f}-min video of {len(clips)} IEMOCAP clips, {GAP_S:g} s silences"
    rows = []
    for det, s in scores.items():
        note = (
            f"{s['regions']} utterances; {s['crossing']} cross a join, {s['outside']} outside "
            f"their clip +-0.5 s, {s['missed']} clips missed; median edge error "
            f"{s['edge_median']:.2f} s vs the clip alone"
        )
        rows.append(
            Row(
                f"speech_segments.iemocap.{det}.edges_within_0.5s",
                data,
                "a",
                "% of clip edges",
                s["edge_within"],
                command=command_line(),
                note=note,
            )
        )
        rows.append(
            Row(
                f"speech_segments.iemocap.{det}.crossing",
                data,
                "a",
                "utterances crossing a join",
                s["crossing"],
                command=command_line(),
            )
        )
    stages = ", ".join(f"{k} {v:.1f}" for k, v in predictor.last_timings.items() if v)
    rows.append(
        Row(
            f"speech_segments.iemocap.predict_{args.asr}.seconds_per_second",
            data,
            "tav",
            "s per s of video (1 thread)",
            wall / duration,
            command=command_line(),
            note=f"{len(pred.segments)} utterances, {wall:.0f} s in all; stages (s): {stages}",
        )
    )
    rows.append(
        Row(
            f"speech_segments.iemocap.predict_{args.asr}.wer",
            data,
            "a",
            "WER %",
            wer,
            command=command_line(),
            note="the prediction's machine transcript (utterances cut on speech) against the "
            "clips' human transcripts in order",
        )
    )
    record(rows)
    print("recorded in benchmarks/results.json")


if __name__ == "__main__":
    main()
