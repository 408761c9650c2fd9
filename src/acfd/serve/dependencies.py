"""FastAPI dependencies of the endpoints: the worker's :class:`~acfd.serve.service.Service`, the API
key, the query parameters checked against this server's settings, and the upload's bytes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader

from acfd.serve.errors import ServiceError
from acfd.serve.service import Service

API_KEY_HEADER = "X-API-Key"

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Needed only when the server was started with --api-key (or ACFD_SERVE_API_KEY).",
)


def get_service(request: Request) -> Service:
    return request.app.state.service


def require_api_key(key: str | None = Security(_api_key), service: Service = Depends(get_service)) -> None:
    """401 unless the request carries this server's API key (no check when it has none)."""
    expected = service.settings.api_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
        what = "missing" if key is None else "wrong"
        raise ServiceError(401, f"{what} API key: send this server's key in the {API_KEY_HEADER} header")


@dataclass(frozen=True)
class DetectParams:
    score_thr: float
    scale: int


def detect_params(
    score_thr: float | None = Query(
        None, ge=0.0, le=1.0, description="keep faces scoring above this (default: the server's --score-thr)"
    ),
    scale: int | None = Query(None, ge=1, description="longer side of the network input, pixels (default: --scale)"),
    service: Service = Depends(get_service),
) -> DetectParams:
    """The request's threshold and scale, within this server's floor and scale range (else 422)."""
    settings = service.settings
    thr = settings.score_thr if score_thr is None else score_thr
    if thr < settings.min_score_thr:
        raise ServiceError(422, f"score_thr must be >= {settings.min_score_thr:g} (this server's floor), got {thr:g}")
    scale = settings.scale if scale is None else scale
    if not settings.min_scale <= scale <= settings.max_scale:
        raise ServiceError(
            422, f"scale must be greater than or equal to {settings.min_scale} and less than or equal to "
            f"{settings.max_scale} on this server, got {scale}",
        )
    return DetectParams(thr, scale)


def room_for_a_request(service: Service = Depends(get_service)) -> None:
    """429 at once when the worker is full, before the body is read."""
    service.check_room()


@dataclass(frozen=True)
class Upload:
    data: bytes
    name: str


async def read_upload(request: Request) -> Upload:
    """The image bytes and a name: multipart field ``file``, or a raw body with an image type.

    The body's size and speed limits hold while it is read (:mod:`acfd.web.uploads`).
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ServiceError(422, "multipart upload without a file in the field 'file'")
            return Upload(await upload.read(), upload.filename or "upload")
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return Upload(await request.body(), "upload")
    raise ServiceError(
        415,
        f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data with the image "
        "in the field 'file', or the raw image bytes with an image/* content type",
    )
