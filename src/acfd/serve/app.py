"""The FastAPI detection service: ``POST /v1/detect``, ``POST /v1/identify``, ``GET /healthz``, the
demo page at ``GET /`` and the API docs at ``/docs``.

Per worker process: one model, owned by one inference thread (:mod:`acfd.serve.batching`), so the
event loop only reads uploads and answers. The routes live in :mod:`acfd.serve.routers`, their
parameters and checks in :mod:`acfd.serve.dependencies`, the response bodies in
:mod:`acfd.serve.schemas`; the limits a request meets are listed in :mod:`acfd.serve.service`.
Bad uploads get 4xx JSON ``{"detail": "..."}`` and the server goes on serving.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from acfd.serve.errors import ServiceError
from acfd.serve.identify import default_identifier_factory
from acfd.serve.routers import detection, health, pages
from acfd.serve.service import DetectorFactory, Service, default_detector_factory
from acfd.serve.settings import ServeSettings
from acfd.web.uploads import BodyLimits, UploadLimits

logger = logging.getLogger(__name__)

STATIC_DIR = resources.files("acfd.serve") / "static"
API_PREFIX = "/v1/"

IdentifierFactory = Callable[[ServeSettings], Any]


def _is_upload(scope: Scope) -> bool:
    return scope["method"] == "POST" and scope["path"].startswith(API_PREFIX)


def upload_limits(settings: ServeSettings) -> UploadLimits:
    return UploadLimits(
        max_bytes=settings.max_upload_bytes,
        read_timeout_s=settings.upload_read_timeout_s,
        min_rate=settings.min_upload_rate,
        grace_s=settings.upload_grace_s,
        max_bytes_in_flight=settings.upload_budget,
    )


def create_app(
    detector_factory: DetectorFactory | None = None,
    settings: ServeSettings | None = None,
    identifier_factory: IdentifierFactory | None = None,
) -> FastAPI:
    """Build the service.

    Args:
        detector_factory: ``factory(settings) -> detector``, called once per worker process at
            start-up (default: :func:`~acfd.serve.service.default_detector_factory`). Tests inject
            a small model.
        settings: models and limits (default :class:`ServeSettings`: defaults and ``ACFD_SERVE_*``).
        identifier_factory: ``factory(settings) -> identifier | None`` for ``/v1/identify``
            (default: the recognition model with ``settings.gallery``; ``None`` disables it).
    """
    settings = settings or ServeSettings()
    make_detector = detector_factory or default_detector_factory
    make_identifier = identifier_factory or default_identifier_factory
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start(make_detector(settings), make_identifier(settings))
        logger.info("worker %d serving %s (identify: %s)", os.getpid(), service.model, service.identifier is not None)
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="acfd detection service",
        description="Find faces in cartoons, anime and comics (ACFD). Upload an image, get the boxes.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served by acfd.serve.routers.pages from local files
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(BodyLimits, limits=upload_limits(settings), applies_to=_is_upload, gauge=service.uploads)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    app.include_router(detection.router)
    app.include_router(health.router)
    app.include_router(pages.router)
    docs_assets = pages.swagger_ui_dir()
    if docs_assets is not None:
        app.mount(pages.DOCS_ASSETS_URL, StaticFiles(directory=str(docs_assets)), name="docs-assets")
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def app_from_env() -> FastAPI:
    """The app for uvicorn's worker processes (``--workers N``): settings from ``ACFD_SERVE_*``."""
    return create_app(settings=ServeSettings.from_env())
