"""The question-and-answer annotation web app (MM'20 section 3.1 "Q/A Manual Annotation"): a
FastAPI server over a project's SQLite database and one plain HTML/JS page, all assets served from
the package (no CDN).

Safety:

- files are served by integer id only (``/crop/12.jpg``, ``/frame/12.jpg``, ``/reference/3.jpg``),
  the path comes from the database and the project folder, never from the request; the page's
  assets come from a fixed in-memory table;
- request bodies are limited to :data:`MAX_BODY_BYTES` (413 beyond, declared or chunked) and must
  keep arriving (408, see :data:`BODY_READ_TIMEOUT_S`), by :class:`acfd.web.uploads.BodyLimits`;
  lists and names in bodies are bounded by the request models;
- with a ``token`` (required by ``acfd annotate`` when bound to a non-loopback address) every
  request needs it: an ``X-ACFD-Token`` header, or ``?token=`` once (it is then kept in a cookie
  named after the server's port, so two projects on two ports keep their own; a ``?token=`` in the
  URL wins over the cookie);
- without a token only requests addressed to a loopback name (``Host: 127.0.0.1``, ``localhost``,
  ``[::1]``) are answered, so a web page on another site cannot reach the app through DNS rebinding.

Several people at once (see acfd.assemble.review): each browser tab has its own session id; a
question is leased to the session that shows it (``POST /api/question``, renewed with
``/api/lease``, given back with ``/api/release`` when the page is left); undo takes back that
session's own last answer; answers carry the versions of the faces as the page saw them and are
refused with 409 when another answer changed one meanwhile. Each answer is one transaction, so a
killed server loses at most the request being sent.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, field_validator, model_validator

from acfd.assemble import names, review
from acfd.assemble.project import Project, thumbnail
from acfd.data.image_io import ImageReadError
from acfd.web.uploads import BodyLimits, UploadLimits

#: Largest request body accepted (answers are a few hundred bytes; a group answer a few KB).
MAX_BODY_BYTES = 64 * 1024
#: A request body may pause at most this long between two chunks, and after :data:`BODY_GRACE_S`
#: must arrive at :data:`MIN_BODY_RATE` bytes/s on average (else 408): a slow sender cannot hold a
#: connection for long (acfd.web.uploads).
BODY_READ_TIMEOUT_S = 10.0
BODY_GRACE_S = 5.0
MIN_BODY_RATE = 1024.0
#: Most faces one group answer may cover.
MAX_FACES_PER_ANSWER = 500
#: The page and its assets: URL name -> (package file, media type).
ASSETS = {
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}
#: The token cookie's name is this plus ``_<port>``.
TOKEN_COOKIE = "acfd_token"
FRAME_MAX_SIDE = 960
#: Annotator names: letters and digits of any script, space, ``_ . @ ' -``; 1 to 40 characters.
ANNOTATOR_PATTERN = re.compile(r"^[\w .@'-]{1,40}$")
_SESSION = r"^[A-Za-z0-9_-]{8,64}$"


class Who(BaseModel):
    """Who sends a request: the annotator's name and the browser session (one per tab)."""

    annotator: str = Field("annotator", max_length=40)
    session: str | None = Field(None, pattern=_SESSION)

    @field_validator("annotator")
    @classmethod
    def _name(cls, value: str) -> str:
        value = unicodedata.normalize("NFC", value)
        if not ANNOTATOR_PATTERN.match(value):
            raise ValueError("an annotator name has 1 to 40 letters, digits, spaces or _ . @ ' -")
        return value


class AnswerIn(Who):
    """One answer: a question (one face) or a group answer (many faces)."""

    face_ids: list[int] = Field(..., min_length=1, max_length=MAX_FACES_PER_ANSWER)
    versions: list[int] | None = Field(None, max_length=MAX_FACES_PER_ANSWER)
    answer: Literal["yes", "no", "not_face", "skip"]
    identity_id: int | None = None
    name: str | None = Field(None, max_length=names.MAX_NAME_LENGTH)
    kind: Literal["question", "group"] = "question"
    create_name: bool = False

    @model_validator(mode="after")
    def _aligned(self) -> AnswerIn:
        if self.versions is not None and len(self.versions) != len(self.face_ids):
            raise ValueError("versions must give one version per face id")
        return self


class QuestionIn(Who):
    exclude: list[int] = Field(default_factory=list, max_length=MAX_FACES_PER_ANSWER)
    prefer: int | None = None


class LeaseIn(Who):
    face_id: int


class RenameIn(Who):
    identity_id: int
    name: str = Field(..., max_length=names.MAX_NAME_LENGTH)
    merge: bool = False


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


def is_loopback_host(host_header: str | None) -> bool:
    """Whether a ``Host`` header names this machine (``localhost``, ``*.localhost``, ``127.x``, ``[::1]``)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_cookie_name(scope: dict) -> str:
    """The token cookie of the server that got this request: ``acfd_token_<port>`` (browsers send a
    host's cookies to every port, so each port needs its own name)."""
    server = scope.get("server")
    return f"{TOKEN_COOKIE}_{server[1] if server and server[1] else 0}"


def _conflict(code: str, exc: Exception, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": {"code": code, "message": str(exc), **extra}}, status_code=409)


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
            if not is_loopback_host(request.headers.get("host")):
                return JSONResponse(
                    {"detail": "without --token this server answers only requests to localhost / 127.0.0.1 / [::1]"},
                    status_code=403,
                )
            return await call_next(request)
        cookie = token_cookie_name(request.scope)
        query = request.query_params.get("token")
        given = request.headers.get("x-acfd-token") or query or request.cookies.get(cookie)
        if not given or not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "a valid token is required (open the URL printed by acfd annotate)"}, status_code=401)
        response = await call_next(request)
        if query:
            response.set_cookie(cookie, token, httponly=True, samesite="strict")
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

    def open_question(q: dict[str, Any] | None) -> dict[str, Any]:
        return {"done": True, "progress": review.progress(db)} if q is None else {"done": False, **q}

    @app.get("/api/question")
    def peek_question(
        annotator: str = Query("annotator", max_length=40),
        session: str | None = Query(None, pattern=_SESSION),
        exclude: str = Query("", max_length=2000, pattern=r"^[0-9,]*$"),
    ) -> dict[str, Any]:
        """The question this session would get next; reserves nothing (``POST`` reserves)."""
        who = _who(annotator, session)
        skip = tuple(int(x) for x in exclude.split(",") if x)
        return open_question(review.next_question(db, who.annotator, skip, session=who.session, reserve=False))

    @app.post("/api/question")
    def reserve_question(body: QuestionIn) -> dict[str, Any]:
        """The next question, leased to this session while the page shows it."""
        q = review.next_question(
            db, body.annotator, tuple(body.exclude), session=body.session, reserve=True, prefer=body.prefer
        )
        return open_question(q)

    @app.post("/api/lease")
    def renew(body: LeaseIn) -> Any:
        if not review.renew_lease(db, body.face_id, body.annotator, body.session):
            return JSONResponse({"detail": {"code": "lease_lost", "message": "this question was given to another browser "
                                            "or answered meanwhile"}}, status_code=409)
        return {"held": True, "reserved_seconds": review.LEASE_SECONDS}

    @app.post("/api/release")
    def release(body: Who) -> dict[str, Any]:
        return {"released": review.release_leases(db, body.annotator, body.session)}

    @app.post("/api/answer")
    def answer(body: AnswerIn) -> Any:
        versions = None if body.versions is None else dict(zip(body.face_ids, body.versions))
        try:
            action = review.record_answer(
                db, body.annotator, body.face_ids, body.answer, body.identity_id, body.name, body.kind,
                session=body.session, versions=versions, create_name=body.create_name,
            )
        except review.StaleAnswer as exc:
            return _conflict("stale", exc, face_ids=exc.face_ids)
        except names.NewName as exc:
            return _conflict("new_name", exc, name=exc.name, similar=exc.similar)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"action": action, "mine": review.progress(db, body.annotator)["mine"]}

    @app.post("/api/undo")
    def undo(body: Who) -> dict[str, Any]:
        undone = review.undo_last(db, body.annotator, body.session)
        return {"undone": undone, "mine": review.progress(db, body.annotator)["mine"]}

    @app.get("/api/groups")
    def groups() -> dict[str, Any]:
        return {"groups": review.groups(db), "identities": sorted(names.shown_identity_names(db).values())}

    @app.get("/api/progress")
    def progress(annotator: str | None = Query(None, max_length=40)) -> dict[str, Any]:
        return review.progress(db, None if annotator is None else _who(annotator, None).annotator)

    @app.post("/api/names/rename")
    def rename(body: RenameIn) -> Any:
        try:
            return names.rename_identity(db, body.identity_id, body.name, body.annotator, body.session, merge=body.merge)
        except names.NameTaken as exc:
            return _conflict("merge", exc, name=exc.name)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

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

    app.add_middleware(BodyLimits, limits=UploadLimits(
        max_bytes=MAX_BODY_BYTES, read_timeout_s=BODY_READ_TIMEOUT_S, min_rate=MIN_BODY_RATE, grace_s=BODY_GRACE_S))
    return app


def _who(annotator: str, session: str | None) -> Who:
    """Query parameters checked as a :class:`Who` (422 when they are not valid)."""
    from pydantic import ValidationError

    try:
        return Who(annotator=annotator, session=session)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False, include_input=False)) from None
