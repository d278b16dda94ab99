"""The web service: a thin HTTP shell over ``Predictor`` plus a one-page UI.

``POST /predict`` takes a multipart form: ``file`` (a clip or audio file), ``transcript`` (text),
``subtitles`` (an .srt/.vtt file that cuts a long video into segments) and ``window`` (seconds,
to cut a long recording into fixed windows instead); any of file/transcript may be missing but
not both. It answers ``Prediction.to_dict()``.

Untrusted clients are expected (docs/security.md): a request body over the upload limit is
answered 413 as soon as the limit is crossed (from Content-Length, or while the body streams in),
so a huge upload is never buffered; file uploads are spooled to disk, text fields are capped
(``MAX_FIELD_BYTES``, ``MAX_TRANSCRIPT_CHARS``); an unknown field, a repeated one, a file name with
folders in it or a file the model cannot use is answered 400 with a one-line reason; uploads are
copied into a temporary folder that is removed after every request, failed ones included.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect

from deepmsi.errors import DeepMSIError

if TYPE_CHECKING:
    from deepmsi.inference.results import Prediction
    from deepmsi.runs.card import ModelCard

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
FIELDS = ("file", "transcript", "subtitles", "window")  # the form fields /predict reads
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_TRANSCRIPT_CHARS = 10_000
MAX_SUBTITLE_BYTES = 1 << 20
# A text field's size in bytes, refused by the form parser beyond it (fields are held in memory;
# files are spooled to disk). Room for MAX_TRANSCRIPT_CHARS of any UTF-8 text.
MAX_FIELD_BYTES = 64 * 1024


class _PredictorLike(Protocol):
    labels: tuple[str, ...]
    modalities: tuple[str, ...]

    def predict(self, media=None, text=None, subtitles=None, window=None) -> Prediction: ...


def create_app(
    run_dir: str | Path | None = None,
    max_upload_mb: float = 200,
    *,
    predictor: _PredictorLike | None = None,
    asr: str | None = None,
    vad: str = "auto",
    precision: str = "fp32",
) -> FastAPI:
    """A FastAPI app serving the run in ``run_dir`` (models loaded once, here). ``asr`` (a
    speech recogniser's SOURCE) transcribes uploads sent without a transcript; ``vad`` picks the
    speech detector that cuts long uploads; ``precision`` the video backbone's arithmetic.

    ``predictor`` replaces loading from ``run_dir`` (tests, or a predictor already in memory).
    Predictions run one at a time in a worker thread, so concurrent clients queue instead of
    multiplying memory, and the event loop stays free to answer ``/health`` meanwhile.
    """
    if predictor is None:
        if run_dir is None:
            raise ValueError("create_app needs run_dir or predictor")
        from deepmsi.inference.predictor import Predictor

        predictor = Predictor.from_run(run_dir, asr=asr, vad=vad, precision=precision)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    lock = threading.Lock()
    page = resources.files("deepmsi").joinpath("web/index.html").read_text(encoding="utf-8")

    app = FastAPI(title="deepmsi", summary="Multimodal emotion recognition (DeepMSI-MER)")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    card = _card(predictor)

    @app.get("/card")
    def model_card() -> dict[str, Any]:
        """The run's model card: its one-line summary, the facts and MODEL_CARD.md's text."""
        if card is None:
            raise HTTPException(404, "this predictor has no model card")
        return {"summary": card.summary(), "card": card.to_dict(), "markdown": card.to_markdown()}

    @app.get("/health")
    def health() -> dict[str, Any]:
        from deepmsi import __version__

        return {
            "status": "ok",
            "version": __version__,
            "run": str(run_dir) if run_dir is not None else None,
            "labels": list(predictor.labels),
            "modalities": list(predictor.modalities),
            "max_upload_mb": max_upload_mb,
            "card": card.summary() if card is not None else None,
            "asr": getattr(getattr(predictor, "asr", None), "name", None),
        }

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        _check_content_type(request.headers.get("content-type"))
        # The context closes the spooled uploads whatever happens below (a 400 included).
        form = request.form(max_files=2, max_fields=8, max_part_size=MAX_FIELD_BYTES)
        async with form as fields:
            inputs = _parse_form(fields)
            result = await _predict(predictor, lock, inputs)
        return JSONResponse(result.to_dict())

    app.add_exception_handler(ClientDisconnect, _client_left)
    app.add_middleware(_UploadLimit, max_bytes=max_bytes)
    return app


def _card(predictor: _PredictorLike) -> ModelCard | None:
    """The predictor's model card, read once at start-up (None for a stand-in predictor)."""
    try:
        return getattr(predictor, "card", None)
    except DeepMSIError as err:  # a damaged run folder file: serve, without a card
        log.warning("no model card: %s", err)
        return None


async def _client_left(request: Request, exc: Exception) -> Response:
    """A client gone mid-upload is routine (a closed tab, a killed curl), not a server error:
    one log line instead of a traceback. Nobody reads the answer."""
    log.info("client left during %s %s", request.method, request.url.path)
    return Response(status_code=400)


@dataclass(frozen=True)
class _Inputs:
    """A checked ``/predict`` form: what ``Predictor.predict`` gets, uploads not yet saved."""

    media: UploadFile | None
    subtitles: UploadFile | None
    transcript: str | None
    window: float | None


def _check_content_type(header: str | None) -> None:
    """A body that is not a form (JSON, a bare video) is a 415, not an empty form."""
    kind = (header or "").split(";", 1)[0].strip().lower()
    if kind and kind not in FORM_TYPES:
        raise HTTPException(
            415, f"send a multipart/form-data form with fields {', '.join(FIELDS)}, not {kind[:60]}"
        )


def _parse_form(form: FormData) -> _Inputs:
    """Every check of the form, in one place; anything unusable is a one-line 400."""
    unknown = sorted(set(form.keys()) - set(FIELDS))
    if unknown:
        raise HTTPException(
            400, f"unknown form field {unknown[0][:40]!r}; expected {', '.join(FIELDS)}"
        )
    for name in FIELDS:
        if len(form.getlist(name)) > 1:
            raise HTTPException(400, f"'{name}' given more than once")
    media, subs = _upload(form.get("file"), "file"), _upload(form.get("subtitles"), "subtitles")
    _check_text_files(media, subs)
    transcript = _text_field(form.get("transcript"), "transcript")
    if transcript is not None and len(transcript) > MAX_TRANSCRIPT_CHARS:
        raise HTTPException(
            400,
            f"'transcript' has {len(transcript)} characters; the limit is {MAX_TRANSCRIPT_CHARS}",
        )
    window = _window(_text_field(form.get("window"), "window"))
    if media is None and not transcript:
        raise HTTPException(400, "send a media 'file', a 'transcript', or both")
    return _Inputs(media, subs, transcript, window)


def _check_text_files(media: UploadFile | None, subs: UploadFile | None) -> None:
    """Text read whole into memory is capped: subtitles, and a .txt 'file' (a transcript)."""
    from deepmsi.inference.predictor import TEXT_SUFFIXES

    if subs is not None and (subs.size or 0) > MAX_SUBTITLE_BYTES:
        raise HTTPException(400, f"'subtitles' larger than {MAX_SUBTITLE_BYTES // 1024} kB")
    if media is None:
        return
    is_text = Path(media.filename or "").suffix.lower() in TEXT_SUFFIXES
    if is_text and (media.size or 0) > MAX_FIELD_BYTES:
        raise HTTPException(400, f"a transcript 'file' larger than {MAX_FIELD_BYTES // 1024} kB")


async def _predict(predictor: _PredictorLike, lock: threading.Lock, inputs: _Inputs) -> Prediction:
    """Save the uploads to a temporary folder (removed on the way out, failures included) and run
    the predictor on them in a worker thread, one prediction at a time."""
    media, subs = inputs.media, inputs.subtitles
    with tempfile.TemporaryDirectory(prefix="deepmsi-upload-") as tmp:
        media_path = await _save(media, Path(tmp), "media") if media else None
        subs_path = await _save(subs, Path(tmp), "subtitles") if subs else None

        def run() -> Prediction:
            with lock:
                return predictor.predict(
                    media=media_path,
                    text=inputs.transcript,
                    subtitles=subs_path,
                    window=inputs.window,
                )

        try:
            result = await run_in_threadpool(run)
        except DeepMSIError as err:
            # Errors name the temporary path; the client knows its file by its own name.
            message = str(err)
            for upload, path in ((media, media_path), (subs, subs_path)):
                if path is not None:
                    message = message.replace(str(path), _client_name(upload))
            message = message.replace(str(tmp) + "/", "")
            raise HTTPException(400, " ".join(message.split())) from None
    return replace(result, source=_client_name(media)) if media is not None else result


def _upload(value: object, name: str) -> UploadFile | None:
    """A form's file field; None when absent or left empty in a browser form. The file name is
    only used for its suffix and in messages, but one with folders (``../../x.mp4``) or control
    characters is refused rather than silently trimmed."""
    if value is None:
        return None
    if not isinstance(value, UploadFile):
        raise HTTPException(400, f"'{name}' must be a file upload")
    if not value.filename and value.size == 0:
        return None  # an empty file input in a browser form
    filename = value.filename or ""
    plain = Path(filename).name == filename and "\\" not in filename
    if filename in (".", "..") or not plain or not filename.isprintable() or len(filename) > 255:
        raise HTTPException(
            400, f"'{name}' file name {filename[:80]!r} must be a plain name, without folders"
        )
    return value


def _text_field(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HTTPException(400, f"'{name}' must be a text field, not a file")
    return value.strip() or None


def _window(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0.5 <= seconds <= 600:  # also rejects nan
        raise HTTPException(400, f"'window' must be seconds between 0.5 and 600, got {value!r}")
    return seconds


async def _save(upload: Any, folder: Path, stem: str) -> Path:
    """Copy an upload (spooled by the form parser) to a real file the decoders can open."""
    suffix = Path(upload.filename or "").suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        suffix = ""
    path = folder / f"{stem}{suffix}"
    await upload.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, _CHUNK)
    await upload.close()
    return path


def _client_name(upload: Any) -> str:
    """The upload's own file name (no directories), for messages and results."""
    return Path(upload.filename or "upload").name or "upload"


def _too_large(max_bytes: int) -> str:
    return f"upload larger than the limit of {max_bytes / (1024 * 1024):g} MB"


class _UploadLimit:
    """ASGI wrapper answering 413 once a request body passes ``max_bytes``.

    Checks Content-Length up front, then counts the body as it streams in (chunked uploads or a
    lying header), so nothing over the limit is read in full.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the endpoint's form parsing; FastAPI answers it with a 413.
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, send: Any) -> None:
        body = json.dumps({"detail": _too_large(self.max_bytes)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
