"""The HTTP service: health, predictions equal to the Python API's, 400 for bad input, 413 for
oversized uploads (checked from the header and while the body streams in)."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from deepmsi.serve import _UploadLimit, create_app


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor=predictor, max_upload_mb=5)) as c:
        yield c


def test_health(client, predictor):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["labels"] == list(predictor.labels)
    assert body["max_upload_mb"] == 5
    assert body["card"] == predictor.card.summary()


def test_model_card_is_served(client, predictor):
    r = client.get("/card")
    assert r.status_code == 200
    body = r.json()
    assert body["summary"] == predictor.card.summary()
    assert body["card"]["labels"] == list(predictor.labels)
    assert body["markdown"].startswith("# Model card: ")
    assert 'id="card"' in client.get("/").text  # the page shows it


def test_index_page_is_served(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="file"' in r.text and "predict" in r.text
    # no CDN, works offline (an XML namespace URI such as SVG's is a name, not a fetch)
    assert not re.search(r"""(src|href|url\(|import|fetch\()\s*=?\s*["']?https?://""", r.text)


def test_predict_matches_python_api(client, predictor, tiny):
    clip, text = tiny.clips[0], tiny.texts[0]
    r = client.post(
        "/predict",
        files={"file": (clip.name, clip.read_bytes(), "video/mp4")},
        data={"transcript": text},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    expected = predictor.predict(clip, text=text)
    assert body["source"] == clip.name
    assert body["label"] == expected.label
    got = np.array([body["probabilities"][k] for k in predictor.labels])
    want = np.array([expected.probabilities[k] for k in predictor.labels])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert abs(got.sum() - 1) < 1e-5
    assert body["segments"][0]["modalities"] == list(predictor.modalities)


def test_transcript_alone(client):
    r = client.post("/predict", data={"transcript": "I am so happy today!"})
    assert r.status_code == 200, r.text
    assert r.json()["segments"][0]["modalities"] == ["text"]


def test_subtitles_upload_gives_segments(client, tiny, tmp_path):
    from helpers_inference import join_clips

    video, srt, cues = join_clips(tiny.clips[:3], tiny.texts[:3], tmp_path / "long")
    r = client.post(
        "/predict",
        files={"file": (video.name, video.read_bytes()), "subtitles": (srt.name, srt.read_bytes())},
    )
    assert r.status_code == 200, r.text
    segs = r.json()["segments"]
    assert [(s["start"], s["end"], s["text"]) for s in segs] == [tuple(c) for c in cues]


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("noise.mp4", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))),
        ("empty.mp4", b""),
        ("notes.mp4", b"this is a text file, not a video\n" * 20),
        ("fake.wav", b"RIFF\x24\x00\x00\x00WAVEfmt "),
    ],
)
def test_malformed_upload_is_400_with_reason(client, name, payload):
    r = client.post("/predict", files={"file": (name, payload, "application/octet-stream")})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert name in detail  # names the client's file, not a temporary path
    assert "/tmp" not in detail


def test_truncated_clip_is_never_500(client, tiny):
    data = tiny.clips[0].read_bytes()
    r = client.post("/predict", files={"file": ("cut.mp4", data[: len(data) // 2])})
    assert r.status_code in (200, 400), r.text


@pytest.mark.parametrize(
    ("files", "data", "needle"),
    [
        ({}, {}, "send a media"),
        ({}, {"transcript": "   "}, "send a media"),
        (
            {"subtitles": ("s.srt", b"1\n00:00:01,000 --> 00:00:xx,000\nhi\n")},
            {"transcript": "x"},
            "line 2",
        ),
        ({}, {"transcript": "hi", "window": "abc"}, "window"),
        ({"transcript": ("t.txt", b"a file")}, {}, "text field"),
    ],
)
def test_bad_requests_are_400(client, files, data, needle):
    r = client.post("/predict", files=files or None, data=data)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]


def test_oversized_upload_is_413(predictor, tiny):
    with TestClient(create_app(predictor=predictor, max_upload_mb=0.01)) as small:
        clip = tiny.clips[0].read_bytes()
        assert len(clip) > 0.01 * 1024 * 1024
        r = small.post("/predict", files={"file": ("big.mp4", clip)})
        assert r.status_code == 413
        assert "limit" in r.json()["detail"]
        # No Content-Length (chunked upload): caught while counting the streamed body.
        r = small.post(
            "/predict",
            content=(b"x" * 4096 for _ in range(8)),
            headers={"content-type": "multipart/form-data; boundary=zz"},
        )
        assert r.status_code == 413
        assert small.get("/health").status_code == 200  # still serving


def test_upload_limit_stops_reading_early():
    """The wrapper refuses once the limit is crossed instead of draining a huge body."""
    received = []

    async def app(scope, receive, send):  # drains the body like a form parser would
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    chunk = b"x" * 1024

    async def receive():
        received.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": True}  # endless body

    sent = []

    async def send(message):
        sent.append(message)

    async def call():
        from fastapi import HTTPException

        try:
            await _UploadLimit(app, max_bytes=10 * 1024)(
                {"type": "http", "method": "POST", "headers": []}, receive, send
            )
        except HTTPException as err:
            return err.status_code
        return None

    assert asyncio.run(call()) == 413
    assert sum(received) <= 11 * 1024  # stopped right after the limit
    assert not sent  # the app never answered; FastAPI turns the exception into the 413


def test_declared_length_over_limit_is_refused_before_reading():
    async def app(scope, receive, send):  # pragma: no cover - must not run
        raise AssertionError("app called")

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():  # pragma: no cover - must not be read
        raise AssertionError("body read")

    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"999999")]}
    asyncio.run(_UploadLimit(app, max_bytes=1000)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert "limit" in json.loads(sent[1]["body"])["detail"]
