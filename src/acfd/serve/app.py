"""The FastAPI detection service: ``POST /v1/detect``, ``POST /v1/identify``, ``GET /healthz``, the
demo page at ``GET /`` and the OpenAPI docs at ``/docs``.

Per worker process: one model, owned by one inference thread (:mod:`acfd.serve.batching`), so the
event loop only reads uploads and answers. Limits, in the order a request meets them:

1. at most ``max_in_flight`` requests admitted (reading, decoding, queued or running): one more
   gets **429** with ``Retry-After`` at once, so memory stays bounded whatever the load;
2. a body over ``max_upload_bytes`` gets **413** (from ``Content-Length`` before reading, or while
   reading a chunked body);
3. a decoded size over ``max_pixels`` gets **413** from the image header, before decoding;
4. a request not answered within ``request_timeout_s`` gets **503** with ``Retry-After``.

Bad uploads get 4xx JSON ``{"detail": "..."}`` and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acfd.serve.batching import BatchingWorker, Job
from acfd.serve.decode import decode_upload
from acfd.serve.errors import ServiceError
from acfd.serve.identify import Identifier, default_identifier_factory
from acfd.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

STATIC_DIR = resources.files("acfd.serve") / "static"
# The demo page is a template (rendered per server below), kept out of STATIC_DIR so that the
# unrendered copy cannot be fetched through the /static mount.
DEMO_TEMPLATE = resources.files("acfd.serve") / "templates" / "index.html"
API_PREFIX = "/v1/"

#: ``detector_factory(settings) -> detector`` with ``detect_arrays(images, batch_size=)`` and a
#: settable ``scales`` (an :class:`acfd.engine.infer.Detector`).
DetectorFactory = Callable[[ServeSettings], Any]
IdentifierFactory = Callable[[ServeSettings], "Identifier | None"]


def default_detector_factory(settings: ServeSettings) -> Any:
    """The configured :class:`~acfd.engine.infer.Detector`, at the score floor (requests filter)."""
    import torch

    from acfd.engine.infer import Detector

    torch.set_num_threads(settings.torch_threads)  # before the model: ONNX Runtime sizes its pool from it
    return Detector(
        model=settings.model,
        weights=settings.weights,
        device=settings.device,
        scales=(str(settings.scale),),
        score_thresh=settings.min_score_thr,
        batch_size=settings.max_batch,
    )


def model_name(detector: Any) -> str:
    return str(getattr(getattr(detector, "cfg", None), "name", type(detector).__name__))


def detector_runner(detector: Any) -> Callable[[Any, int], Any]:
    """``run(images, scale)``: one network call at one scale (the detector's scales are set per call)."""
    from acfd.engine.infer import parse_scales

    scales: dict[int, Any] = {}

    def run(images: Any, scale: int) -> Any:
        detector.scales = scales.setdefault(scale, parse_scales(str(scale)))
        return detector.detect_arrays(list(images), batch_size=len(images))

    return run


# -- response schemas (they document /docs) ----------------------------------------------------


class Face(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in the uploaded image's pixels")
    score: float


class IdentifiedFace(Face):
    identity: str | None = Field(description="the best gallery match, or null when below the unknown threshold")
    similarity: float = Field(description="cosine similarity of the best match")
    candidates: list[dict[str, Any]] = Field(description="the k best matches: name, similarity")


class DetectResponse(BaseModel):
    faces: list[Face]
    image_size: list[int] = Field(description="width, height")
    model: str
    ms: float = Field(description="server time for this request, milliseconds")
    scale: int
    score_thr: float


class IdentifyResponse(DetectResponse):
    faces: list[IdentifiedFace]  # type: ignore[assignment]


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


# -- limits ------------------------------------------------------------------------------------


class AdmissionLimits:
    """Pure ASGI middleware for ``POST /v1/*``: the in-flight bound (429) and the body size (413)."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX) or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state, limit = self.state, self.state.settings.max_upload_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_error(scope, receive, send, ServiceError(413, _too_big(limit)))
            return
        if state.in_flight >= state.settings.max_in_flight:
            state.rejected += 1
            wait = state.worker.expected_wait_s() if state.worker is not None else 1
            error = ServiceError(429, f"busy: {state.in_flight} requests in progress; retry in {wait} s", wait)
            await _send_error(scope, receive, send, error)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ServiceError(413, _too_big(limit))
            return message

        state.in_flight += 1
        try:
            await self.app(scope, counted_receive, send)
        finally:
            state.in_flight -= 1


def _too_big(limit: int) -> str:
    return f"upload larger than the limit of {limit:,} bytes"


async def _send_error(scope: Scope, receive: Receive, send: Send, error: ServiceError) -> None:
    await _error_response(error)(scope, receive, send)


def _error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": error.message}, status_code=error.status, headers=error.headers)


# -- the service --------------------------------------------------------------------------------


class ServiceState:
    """What one worker process holds: settings, the model's thread, counters."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.worker: BatchingWorker | None = None
        self.identifier: Identifier | None = None
        self.model = "?"
        self.in_flight = 0
        self.rejected = 0


async def read_upload(request: Request) -> tuple[bytes, str]:
    """The image bytes and a name: multipart field ``file``, or a raw body with an image type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ServiceError(422, "multipart upload without a file in the field 'file'")
            return await upload.read(), upload.filename or "upload"
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return await request.body(), "upload"
    raise ServiceError(
        415,
        f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data with the image "
        "in the field 'file', or the raw image bytes with an image/* content type",
    )


def create_app(
    detector_factory: DetectorFactory | None = None,
    settings: ServeSettings | None = None,
    identifier_factory: IdentifierFactory | None = None,
) -> FastAPI:
    """Build the service.

    Args:
        detector_factory: ``factory(settings) -> detector``, called once per worker process at
            start-up (default: :func:`default_detector_factory`). Tests inject a small model.
        settings: models and limits (default :class:`ServeSettings`).
        identifier_factory: ``factory(settings) -> Identifier | None`` for ``/v1/identify``
            (default: the recognition model with ``settings.gallery``; ``None`` disables it).
    """
    settings = settings or ServeSettings()
    detector_factory = detector_factory or default_detector_factory
    identifier_factory = identifier_factory or default_identifier_factory
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        detector = detector_factory(settings)
        state.model = model_name(detector)
        state.identifier = identifier_factory(settings)
        state.worker = BatchingWorker(
            detector_runner(detector),
            max_batch=settings.max_batch,
            batch_wait_s=settings.batch_wait_ms / 1000.0,
            torch_threads=settings.torch_threads,
            more_coming=lambda in_batch: state.in_flight > in_batch + state.worker.queued,
        )
        state.worker.start()
        logger.info("worker %d serving %s (identify: %s)", os.getpid(), state.model, state.identifier is not None)
        try:
            yield
        finally:
            state.worker.stop()

    app = FastAPI(
        title="acfd detection service",
        description="Find faces in cartoons, anime and comics (ACFD). Upload an image, get the boxes.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = state
    app.add_middleware(AdmissionLimits, state=state)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error_response(exc)

    async def run_job(request: Request, scale: int | None, finish: Callable[[Any, Any], Any] | None) -> tuple[Any, Any]:
        """Read, decode and detect, within the request time limit."""
        assert state.worker is not None
        job: Job | None = None
        try:
            async with asyncio.timeout(settings.request_timeout_s):
                data, name = await read_upload(request)
                if len(data) > settings.max_upload_bytes:  # a multipart body's part
                    raise ServiceError(413, _too_big(settings.max_upload_bytes))
                image = await run_in_threadpool(decode_upload, data, settings.max_pixels, name)
                del data
                loop = asyncio.get_running_loop()
                job = Job(image, scale or settings.scale, loop.create_future(), loop, finish)
                state.worker.submit(job)
                return image, await job.future
        except TimeoutError as exc:
            if job is not None:
                job.cancelled = True
            wait = state.worker.expected_wait_s()
            raise ServiceError(
                503, f"request not answered within {settings.request_timeout_s:g} s; retry in {wait} s", wait
            ) from exc

    def faces_above(dets: Any, thr: float) -> list[dict[str, Any]]:
        return [
            {"box": [round(float(v), 2) for v in box], "score": round(float(s), 4)}
            for box, s in zip(dets.boxes, dets.scores)
            if s > thr
        ]

    def check_thr(score_thr: float | None) -> float:
        thr = settings.score_thr if score_thr is None else score_thr
        if thr < settings.min_score_thr:
            raise ServiceError(
                422, f"score_thr must be >= {settings.min_score_thr:g} (this server's floor), got {thr:g}"
            )
        return thr

    scale_query = Query(
        None, ge=settings.min_scale, le=settings.max_scale, description=f"longer side in pixels (default {settings.scale})"
    )
    thr_query = Query(
        None, ge=0.0, le=1.0, description=f"keep faces scoring above this (default {settings.score_thr}, at least {settings.min_score_thr})"
    )

    @app.post("/v1/detect", response_model=DetectResponse, openapi_extra=_UPLOAD_BODY)
    async def detect(request: Request, score_thr: float | None = thr_query, scale: int | None = scale_query) -> dict[str, Any]:
        """Find the faces in one image (multipart field ``file``, or the raw bytes with an image type)."""
        start = time.perf_counter()
        thr = check_thr(score_thr)
        image, dets = await run_job(request, scale, None)
        h, w = image.shape[:2]
        return {
            "faces": faces_above(dets, thr),
            "image_size": [w, h],
            "model": state.model,
            "ms": round((time.perf_counter() - start) * 1000, 1),
            "scale": scale or settings.scale,
            "score_thr": thr,
        }

    @app.post("/v1/identify", response_model=IdentifyResponse, openapi_extra=_UPLOAD_BODY)
    async def identify(
        request: Request,
        score_thr: float | None = thr_query,
        scale: int | None = scale_query,
        k: int = Query(1, ge=1, le=20, description="gallery matches per face"),
    ) -> dict[str, Any]:
        """Find the faces and name each by its nearest gallery identity (needs a gallery)."""
        start = time.perf_counter()
        if state.identifier is None:
            raise ServiceError(501, "no gallery is configured: start the server with --gallery FILE")
        thr = check_thr(score_thr)
        identifier = state.identifier

        def finish(dets: Any, image: Any) -> list[dict[str, Any]]:
            faces = faces_above(dets, thr)
            names = identifier(image, [f["box"] for f in faces], k=k)
            return [{**face, **who} for face, who in zip(faces, names)]

        image, faces = await run_job(request, scale, finish)
        h, w = image.shape[:2]
        return {
            "faces": faces,
            "image_size": [w, h],
            "model": state.model,
            "ms": round((time.perf_counter() - start) * 1000, 1),
            "scale": scale or settings.scale,
            "score_thr": thr,
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and this worker's counters; also the defaults the demo page uses."""
        worker = state.worker
        return {
            "status": "ok" if worker is not None else "starting",
            "model": state.model,
            "pid": os.getpid(),
            "in_flight": state.in_flight,
            "queued": worker.queued if worker else 0,
            "rejected": state.rejected,
            "batches": worker.batches if worker else 0,
            "images": worker.images if worker else 0,
            "score_thr": settings.score_thr,
            "min_score_thr": settings.min_score_thr,
            "identify": state.identifier is not None,
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "request_timeout_s": settings.request_timeout_s,
                "max_in_flight": settings.max_in_flight,
            },
        }

    # The page is rendered with this server's threshold settings so that the slider starts at the
    # server's default (DEFAULT_SCORE_THRESH unless configured) rather than at a copy in the HTML.
    demo_html = (
        DEMO_TEMPLATE.read_text(encoding="utf-8")
        .replace("{{score_thr}}", f"{settings.score_thr:.2f}")
        .replace("{{min_score_thr}}", f"{settings.min_score_thr:g}")
    )

    @app.get("/", include_in_schema=False)
    async def demo_page() -> HTMLResponse:
        return HTMLResponse(demo_html)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def app_from_env() -> FastAPI:
    """The app for uvicorn's worker processes (``--workers N``): settings from ``$ACFD_SERVE_SETTINGS``."""
    return create_app(settings=ServeSettings.from_env())
