"""The question-and-answer annotation web app (MM'20 section 3.1 "Q/A Manual Annotation"): a
FastAPI server over a project's SQLite database and one plain HTML/JS page, all assets served from
the package (no CDN).

Safety:

- files are served by integer id only (``/crop/12.jpg``, ``/frame/12.jpg``, ``/reference/3.jpg``),
  the path comes from the database and the project folder, never from the request; the page's
  assets come from a fixed in-memory table;
- request bodies are limited to :data:`MAX_BODY_BYTES` (413 beyond), lists and names in bodies are
  bounded by the request models;
- with a ``token`` (required by ``acfd annotate`` when bound to a non-loopback address) every
  request needs it: ``?token=`` once (it is then kept in a cookie) or an ``X-ACFD-Token`` header.

Each answer is one transaction (acfd.assemble.review), so two browsers at once lose nothing and a
killed server loses at most the request being sent.
"""

from __future__ import annotations

import secrets
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from acfd.assemble import review
from acfd.assemble.project import Project, thumbnail
from acfd.data.image_io import ImageReadError

#: Largest request body accepted (answers are a few hundred bytes; a group answer a few KB).
MAX_BODY_BYTES = 64 * 1024
#: Most faces one group answer may cover.
MAX_FACES_PER_ANSWER = 500
#: The page and its assets: URL name -> (package file, media type).
ASSETS = {
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}
TOKEN_COOKIE = "acfd_token"
FRAME_MAX_SIDE = 960
_ANNOTATOR = r"^[\w .@-]{1,40}$"


class AnswerIn(BaseModel):
    """One answer: a question (one face) or a group answer (many faces)."""

    annotator: str = Field("annotator", pattern=_ANNOTATOR)
    face_ids: list[int] = Field(..., min_length=1, max_length=MAX_FACES_PER_ANSWER)
    answer: Literal["yes", "no", "not_face", "skip"]
    identity_id: int | None = None
    name: str | None = Field(None, max_length=review.MAX_NAME_LENGTH)
    kind: Literal["question", "group"] = "question"


class UndoIn(BaseModel):
    annotator: str = Field("annotator", pattern=_ANNOTATOR)


def _load_assets() -> dict[str, tuple[bytes, str]]:
    base = resources.files("acfd.annotate") / "static"
    return {name: ((base / file).read_bytes(), media) for name, (file, media) in ASSETS.items()}


def _jpeg(rgb: np.ndarray) -> Response:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise HTTPException(500, "JPEG encoding failed")
    return Response(buf.tobytes(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def _project_jpeg(path: Path, what: str) -> Response:
    """A JPEG the project wrote (its path built from an integer id), or 404."""
    if not path.is_file():
        raise HTTPException(404, f"no such {what}")
    return Response(path.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


class _BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (413), declared or streamed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)(scope, receive, send)
            return
        seen, started = 0, False

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except _TooLarge:
            if not started:
                await JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    """A streamed request body went over the limit."""


def create_app(project_dir: str | Path, token: str | None = None) -> FastAPI:
    """The annotation app for one project folder.

    Args:
        project_dir: a folder made by ``acfd assemble``.
        token: when set, every request must carry it (see the module docstring).

    Raises:
        ValueError: the folder holds no project.
    """
    project = Project(project_dir)
    db = project.db
    assets = _load_assets()
    app = FastAPI(title="acfd annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.project = project

    @app.middleware("http")
    async def check_token(request: Request, call_next: Any) -> Response:
        if token is None:
            return await call_next(request)
        given = request.headers.get("x-acfd-token") or request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token")
        if not given or not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "a valid token is required (open the URL printed by acfd annotate)"}, status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.middleware("http")
    async def no_sniff(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self'; object-src 'none'"
        return response

    @app.get("/")
    def index() -> Response:
        body, media = assets["index.html"]
        return Response(body, media_type=media, headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in assets or name == "index.html":
            raise HTTPException(404, "no such asset")
        body, media = assets[name]
        return Response(body, media_type=media, headers={"Cache-Control": "no-store"})

    @app.get("/api/question")
    def question(
        annotator: str = Query("annotator", pattern=_ANNOTATOR),
        exclude: str = Query("", max_length=2000, pattern=r"^[0-9,]*$"),
    ) -> dict[str, Any]:
        skip = tuple(int(x) for x in exclude.split(",") if x)
        q = review.next_question(db, annotator, exclude=skip)
        return {"done": True, "progress": review.progress(db)} if q is None else {"done": False, **q}

    @app.post("/api/answer")
    def answer(body: AnswerIn) -> dict[str, Any]:
        try:
            action = review.record_answer(
                db, body.annotator, body.face_ids, body.answer, body.identity_id, body.name, body.kind
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"action": action}

    @app.post("/api/undo")
    def undo(body: UndoIn) -> dict[str, Any]:
        return {"undone": review.undo_last(db, body.annotator)}

    @app.get("/api/groups")
    def groups() -> dict[str, Any]:
        return {"groups": review.groups(db), "identities": sorted(review.identity_names(db).values())}

    @app.get("/api/progress")
    def progress() -> dict[str, Any]:
        return review.progress(db)

    @app.get("/crop/{face_id}.jpg")
    def crop(face_id: int) -> Response:
        return _project_jpeg(project.crop_file(face_id), "crop")

    @app.get("/frame/{face_id}.jpg")
    def frame(face_id: int) -> Response:
        from acfd.predict.visualize import draw_detections

        rows = db.query("SELECT frame_id, x1, y1, x2, y2 FROM faces WHERE id = ?", (face_id,))
        if not rows:
            raise HTTPException(404, "no such face")
        r = rows[0]
        try:
            image = project.load_frame(r["frame_id"])
        except ImageReadError as exc:
            raise HTTPException(410, f"the source frame cannot be read: {exc.reason}") from None
        drawn = draw_detections(image, np.asarray([[r["x1"], r["y1"], r["x2"], r["y2"]]], np.float32), None, color=(255, 0, 80))
        return _jpeg(thumbnail(drawn, FRAME_MAX_SIDE))

    @app.get("/reference/{ref_id}.jpg")
    def reference(ref_id: int) -> Response:
        return _project_jpeg(project.reference_file(ref_id), "reference image")

    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    return app
