"""The web page in a real headless Chromium: upload a clip, see the label, bars and a timeline.

Needs Debian's ``chromium`` at /usr/bin/chromium (``apt-get install -y chromium``) and the
Playwright Python package; skips with that message when either is missing. Screenshots go to
``artifacts/browser/`` (git-ignored).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers_inference import join_clips

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# CI (.ci/run) installs Chromium and sets DEEPMSI_REQUIRE_BROWSER=1: there a missing browser is a
# failure, not a skip.
if not CHROMIUM.is_file():
    message = f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`"
    if os.environ.get("DEEPMSI_REQUIRE_BROWSER") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")


@pytest.fixture(scope="module")
def server(predictor):
    """The app under uvicorn on a free loopback port, in a background thread."""
    import uvicorn

    from deepmsi.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(predictor=predictor, max_upload_mb=5),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(server)
        yield page
        browser.close()


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _submit(page) -> None:
    page.locator("#status").evaluate("el => el.textContent = ''")
    page.click("#submit")
    page.wait_for_function(
        "() => ['Done.'].includes(document.querySelector('#status').textContent) || "
        "document.querySelector('#status').classList.contains('error')"
    )


def test_upload_clip_shows_label_and_bars(page, predictor, tiny):
    clip, text = tiny.clips[0], tiny.texts[0]
    expected = predictor.predict(clip, text=text)
    page.set_input_files("#file", str(clip))
    page.fill("#transcript", text)
    _submit(page)
    assert page.inner_text("#status") == "Done."
    assert page.inner_text("#label").strip().lower() == expected.label
    bars = page.locator("#bars .bar")
    assert bars.count() == len(predictor.labels)
    names = [bars.nth(i).get_attribute("data-label") for i in range(bars.count())]
    assert names == list(predictor.labels)
    shown = [
        float(bars.nth(i).locator(".value").inner_text().rstrip("%")) for i in range(len(names))
    ]
    for name, value in zip(names, shown, strict=True):
        assert abs(value - 100 * expected.probabilities[name]) < 0.051
    assert page.locator("#timeline-wrap").is_hidden()  # one segment: no timeline
    assert _shot(page, "predict_clip.png").stat().st_size > 10_000


def test_long_video_with_subtitles_shows_timeline(page, predictor, tiny, tmp_path_factory):
    video, srt, cues = join_clips(
        tiny.clips[:4], tiny.texts[:4], tmp_path_factory.mktemp("long") / "talk"
    )
    page.set_input_files("#file", str(video))
    page.fill("#transcript", "")
    page.set_input_files("#subtitles", str(srt))
    _submit(page)
    assert page.inner_text("#status") == "Done."
    assert page.locator("#timeline-wrap").is_visible()
    lines = page.locator("#timeline polyline")
    assert lines.count() == len(predictor.labels)
    assert page.locator("#segments tbody tr").count() == len(cues)
    first_row = page.locator("#segments tbody tr").first.inner_text()
    assert cues[0][2][:20] in first_row
    _shot(page, "predict_timeline.png")
    page.set_input_files("#subtitles", [])


def test_bad_file_shows_the_reason(page, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    page.set_input_files("#file", str(bad))
    _submit(page)
    status = page.inner_text("#status")
    assert status.startswith("Error 400") and "broken.mp4" in status
    _shot(page, "predict_error.png")
