"""Prediction on new media: same features as ``prepare``, same numbers as the model, every
combination of present modalities, subtitles and windows, output formats, timeline, CLI."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from helpers_inference import join_clips

from deepmsi.data.subtitles import Cue
from deepmsi.errors import ConfigError, DataError
from deepmsi.inference.results import Prediction, Segment, format_csv, format_json, format_table


def _model_probs(predictor, text=None, audio=None, frames=None, present=None) -> np.ndarray:
    """Reference: the run's model called directly. frames [B, F, S, S, 3] uint8 as cached."""
    to = {"text": text, "audio": audio}
    tensors = {
        k: None if v is None else torch.from_numpy(np.asarray(v, np.float32)) for k, v in to.items()
    }
    if frames is not None:
        tensors["frames"] = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 255
    masks = None if present is None else {k: torch.tensor(v) for k, v in present.items()}
    with torch.inference_mode():
        logits = predictor.model(**tensors, present=masks).logits
    return torch.softmax(logits, -1).numpy()


# ---- results and formats ---------------------------------------------------------------------
LABELS = ("happy", "sad", "angry")


def _seg(start, end, p, text="hi") -> Segment:
    probs = dict(zip(LABELS, p, strict=True))
    return Segment(start, end, text, max(probs, key=probs.get), probs, ("text", "audio"))


def test_overall_probabilities_are_duration_weighted():
    pred = Prediction("x.mp4", LABELS, [_seg(0, 1, (0.8, 0.1, 0.1)), _seg(1, 4, (0.1, 0.1, 0.8))])
    np.testing.assert_allclose(
        [pred.probabilities[k] for k in LABELS], [(0.8 + 0.3) / 4, 0.1, (0.1 + 2.4) / 4]
    )
    assert pred.label == "angry"
    assert Prediction.from_dict(json.loads(json.dumps(pred.to_dict()))) == pred


def test_table_json_csv_show_every_segment():
    pred = Prediction("x.mp4", LABELS, [_seg(0, 1, (0.8, 0.1, 0.1)), _seg(1, 4, (0.1, 0.1, 0.8))])
    rows = list(csv.DictReader(io.StringIO(format_csv([pred]))))
    assert [r["label"] for r in rows] == ["happy", "angry"]
    assert float(rows[1]["angry"]) == pytest.approx(0.8) and rows[0]["end"] == "1.00"
    assert [r["text_source"] for r in rows] == ["given", "given"]
    heard = Segment(
        0, 1, "hi", "sad", dict(zip(LABELS, (0.1, 0.8, 0.1), strict=True)), (), {}, True
    )
    quiet = Segment(1, 2, None, "sad", heard.probabilities, ("audio",))
    rows = list(csv.DictReader(io.StringIO(format_csv([Prediction("y", LABELS, [heard, quiet])]))))
    assert [r["text_source"] for r in rows] == ["asr", ""]
    assert json.loads(format_json([pred]))[0]["segments"][1]["label"] == "angry"
    table = format_table([pred]).splitlines()
    assert table[0].split()[:4] == ["source", "start", "end", "label"]
    assert len(table) == 2 + 2 + 1  # header, rule, two segments, overall line


def test_timeline_png(tmp_path):
    from deepmsi.inference.timeline import plot_timeline

    rng = np.random.default_rng(0)
    segs = [_seg(2.0 * i, 2.0 * i + 1.5, tuple(rng.dirichlet(np.ones(3)))) for i in range(12)]
    path = plot_timeline(Prediction("talk.mp4", LABELS, segs), tmp_path / "t.png")
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 800
    assert img[..., :3].std() > 0.05  # not blank


# ---- predictor -------------------------------------------------------------------------------
def test_features_match_the_cache_and_probabilities_match_the_model(predictor, tiny):
    """Rebuilt encoders give the cached features, so predictions equal the trained pipeline's."""
    from deepmsi.data.cache import FeatureCache

    cache = FeatureCache(tiny.cache)
    record = next(r for r in cache.records() if r.video is not None and r.text)
    cached = cache.load(record.id)
    pred = predictor.predict(record.video, text=record.text)
    inputs = predictor._encode(
        record.video, predictor._spans(record.video, record.text, None, None)
    )
    np.testing.assert_allclose(inputs.text[0], cached.text, atol=1e-5)
    np.testing.assert_allclose(inputs.audio[0], cached.audio, atol=1e-5)
    np.testing.assert_array_equal(inputs.frames[0], cached.frames)
    want = _model_probs(predictor, cached.text[None], cached.audio[None], cached.frames[None])[0]
    got = np.array([pred.probabilities[k] for k in predictor.labels])
    np.testing.assert_allclose(got, want, atol=1e-5)
    seg = pred.segments[0]
    assert seg.modalities == ("text", "audio", "video")
    assert pred.label == predictor.labels[int(want.argmax())]


def test_contributions_are_probability_drops(predictor, tiny):
    clip, text = tiny.clips[1], tiny.texts[1]
    pred = predictor.predict(clip, text=text)
    seg = pred.segments[0]
    inputs = predictor._encode(clip, predictor._spans(clip, text, None, None))
    k = predictor.labels.index(seg.label)
    assert set(seg.contributions) == {"text", "audio", "video"}
    for name in seg.contributions:
        present = {m: [m != name] for m in ("text", "audio", "video")}
        without = _model_probs(predictor, inputs.text, inputs.audio, inputs.frames, present)[0]
        assert seg.contributions[name] == pytest.approx(seg.confidence - without[k], abs=1e-5)


def _audio_only(src, dst):
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=inp.streams.audio[0].rate, layout="mono")
        for frame in inp.decode(inp.streams.audio[0]):
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def _video_only(src, dst):
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        v_in = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=v_in.average_rate)
        stream.width, stream.height, stream.pix_fmt = v_in.width, v_in.height, "yuv420p"
        for i, frame in enumerate(inp.decode(v_in)):
            frame = frame.reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def test_whatever_modalities_are_present_are_used(predictor, tiny, tmp_path):
    clip, text = tiny.clips[0], tiny.texts[0]
    wav = _audio_only(clip, tmp_path / "speech.wav")
    silent = _video_only(clip, tmp_path / "silent.mp4")
    transcript = tmp_path / "said.txt"
    transcript.write_text(text + "\n")
    cases = {
        ("audio",): predictor.predict(wav),
        ("text", "audio"): predictor.predict(wav, text=text),
        ("video",): predictor.predict(silent),
        ("text", "video"): predictor.predict(silent, text=text),
        ("text",): predictor.predict(text=text),
    }
    by_file = predictor.predict(transcript)
    for used, pred in cases.items():
        seg = pred.segments[0]
        assert seg.modalities == used
        assert sum(seg.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert set(seg.contributions) == (set(used) if len(used) > 1 else set())
    assert by_file.probabilities == cases[("text",)].probabilities
    # Hidden modalities really are hidden: text alone equals the model with only text present.
    inputs = predictor._encode(None, predictor._spans(None, text, None, None))
    want = _model_probs(predictor, inputs.text, present={"text": [True]})[0]
    got = [cases[("text",)].probabilities[k] for k in predictor.labels]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_subtitles_cut_a_long_video(predictor, tiny, tmp_path):
    video, srt, cues = join_clips(tiny.clips[:4], tiny.texts[:4], tmp_path / "talk")
    pred = predictor.predict(video, subtitles=srt)
    assert [(s.start, s.end, s.text) for s in pred.segments] == cues
    assert all(s.modalities == ("text", "audio", "video") for s in pred.segments)
    # Each segment is what a single-cue prediction of that stretch gives (batched the same).
    one = predictor.predict(video, subtitles=[Cue(*cues[2])])
    assert one.segments[0].probabilities == pytest.approx(pred.segments[2].probabilities, abs=1e-5)


def test_fixed_windows(predictor, tiny, tmp_path):
    video, _, cues = join_clips(tiny.clips[:3], tiny.texts[:3], tmp_path / "w")
    pred = predictor.predict(video, window=1.0)
    starts = [s.start for s in pred.segments]
    assert starts == [float(i) for i in range(len(starts))]
    assert pred.segments[-1].end == pytest.approx(cues[-1][1] + 0.4, abs=0.1)
    assert all(s.text is None and "text" not in s.modalities for s in pred.segments)


def test_bad_inputs_raise_one_line_errors(predictor, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        predictor.predict(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataError, match="junk.mp4"):
        predictor.predict(junk)
    with pytest.raises(ConfigError):
        predictor.predict()
    with pytest.raises(ConfigError):
        predictor.predict(junk, text="hi", subtitles=[Cue(0, 1, "x")])


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_predict_json_csv_plot(tiny, tmp_path, capsys):
    from deepmsi.cli import main

    clips = [str(c) for c in tiny.clips[:2]]
    assert main(["predict", "--run", str(tiny.run_dir), *clips, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["source"] for o in out] == [c.name for c in tiny.clips[:2]]
    assert main(["predict", "--run", str(tiny.run_dir), clips[0], "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["label"] == out[0]["label"]

    video, srt, cues = join_clips(tiny.clips[:3], tiny.texts[:3], tmp_path / "talk")
    png = tmp_path / "timeline.png"
    argv = [
        "predict",
        "--run",
        str(tiny.run_dir),
        str(video),
        "--subtitles",
        str(srt),
        "--plot",
        str(png),
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + len(cues) + 1
    assert png.stat().st_size > 10_000


def test_cli_reports_bad_input_in_one_line(tiny, tmp_path, capsys):
    from deepmsi.cli import main

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    assert main(["predict", "--run", str(tiny.run_dir), str(junk)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    err = [line for line in lines if not line.startswith("model: ")]  # the model card's line
    assert len(err) == 1 and "junk.mp4" in err[0] and len(lines) == 2
    ok = str(tiny.clips[0])
    assert main(["predict", "--run", str(tiny.run_dir), str(junk), ok, "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert tiny.clips[0].name in captured.out and "skipped" in captured.err


@pytest.mark.slow
def test_cli_minute_long_video_with_srt(tiny, tmp_path, capsys):
    """A 60-second talk cut at its subtitle cues: one row per cue, and the timeline PNG."""
    from deepmsi.cli import main

    n = 44  # clips of about 1 s plus 0.4 s gaps: just over a minute
    clips = [tiny.clips[i % len(tiny.clips)] for i in range(n)]
    texts = [tiny.texts[i % len(tiny.texts)] for i in range(n)]
    video, srt, cues = join_clips(clips, texts, tmp_path / "minute")
    assert cues[-1][1] >= 60.0
    png = tmp_path / "timeline.png"
    argv = [
        "predict",
        "--run",
        str(tiny.run_dir),
        str(video),
        "--subtitles",
        str(srt),
        "--plot",
        str(png),
        "--csv",
        "--no-contributions",
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    got = [float(r[key]) for r in rows for key in ("start", "end")]
    assert got == pytest.approx([t for a, b, _ in cues for t in (a, b)], abs=0.006)  # 2 decimals
    assert all(r["modalities"] == "text+audio+video" for r in rows)
    assert png.stat().st_size > 10_000


def test_bf16_predictor_runs_its_backbone_in_bf16(tiny):
    from deepmsi.inference.predictor import Predictor
    from deepmsi.models import SwinV2

    fast = Predictor.from_run(tiny.run_dir, precision="bf16", contributions=False)
    backbones = [m for m in fast.model.modules() if isinstance(m, SwinV2)]
    assert backbones and all(m.precision == "bf16" for m in backbones)
    pred = fast.predict(tiny.clips[0], text=tiny.texts[0])
    assert abs(sum(pred.probabilities.values()) - 1.0) < 1e-5
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
        Predictor.from_run(tiny.run_dir, precision="half")
