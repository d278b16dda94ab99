"""ONNX export: onnxruntime's probabilities equal torch's within 1e-4 on features of real clips,
for any batch size and any pattern of missing modalities."""

from __future__ import annotations

import numpy as np
import pytest

from deepmsi.inference.export import export_onnx, onnx_inputs, run_onnx, torch_probabilities

TOL = 1e-4


@pytest.fixture(scope="module")
def exported(predictor, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(predictor.model, path)


def _features(predictor, clips, texts):
    """Features of real clips through the run's own encoders: text, audio [N, D], frames
    [N, F, S, S, 3] uint8."""
    from deepmsi.inference.predictor import _Span

    xs = [predictor._encode(c, [_Span(None, None, t)]) for c, t in zip(clips, texts, strict=True)]
    return (
        np.concatenate([x.text for x in xs]),
        np.concatenate([x.audio for x in xs]),
        np.concatenate([x.frames for x in xs]),
    )


def _check(predictor, path, feed) -> float:
    got = run_onnx(path, feed)
    want = torch_probabilities(predictor.model, feed)
    assert got.shape == want.shape == (len(feed["text"]), len(predictor.labels))
    return float(np.abs(got - want).max())


def test_graph_inputs_and_outputs(exported, predictor):
    import onnx

    graph = onnx.load(str(exported.path)).graph
    names = [i.name for i in graph.input]
    assert names == ["text", "audio", "frames", "text_present", "audio_present", "video_present"]
    assert [o.name for o in graph.output] == ["probabilities"]
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # dynamic


def test_parity_on_real_clip_features(exported, predictor, tiny):
    text, audio, frames = _features(predictor, tiny.clips[:5], tiny.texts[:5])
    feed = onnx_inputs(predictor.model, text, audio, frames)
    assert _check(predictor, exported.path, feed) < TOL
    for b in (1, 3):  # other batch sizes than the export's
        assert _check(predictor, exported.path, {k: v[:b] for k, v in feed.items()}) < TOL
    # Missing modalities, per sample (placeholders), as predict uses them.
    feed["audio_present"][1] = False
    feed["video_present"][2] = False
    feed["text_present"][3] = False
    feed["video_present"][4] = feed["audio_present"][4] = False
    assert _check(predictor, exported.path, feed) < TOL
    # The check is not vacuous: probabilities differ between samples and from uniform.
    probs = run_onnx(exported.path, feed)
    assert np.abs(probs - 1 / probs.shape[1]).max() > 1e-3


@pytest.mark.realdata
def test_parity_on_iemocap_clips(exported, predictor, shared_data):
    import csv

    folder = shared_data / "iemocap-clips"
    with (folder / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[:3]
    text, audio, frames = _features(
        predictor, [folder / r["file"] for r in rows], [r["transcript"] for r in rows]
    )
    feed = onnx_inputs(predictor.model, text, audio, frames)
    assert _check(predictor, exported.path, feed) < TOL


def test_cli_export_checks_parity(tiny, tmp_path, capsys):
    from deepmsi.cli import main

    out = tmp_path / "m.onnx"
    assert main(["export", "--run", str(tiny.run_dir), "--onnx", str(out), "--check", "4"]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 10_000
    assert "cached items" in printed
    diff = float(printed.rsplit("=", 1)[1])
    assert diff < TOL
