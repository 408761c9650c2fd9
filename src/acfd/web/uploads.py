"""Request-body limits for ASGI apps: size, upload speed, bytes in flight, and quiet disconnects.

:class:`BodyLimits` is a pure ASGI middleware (it wraps ``receive`` and never reads a body itself), so
the app still reads the body its own way (``request.body()``, ``request.form()``, FastAPI's JSON
parsing) and each limit holds whatever way that is:

- **size**: a body over ``max_bytes`` gets **413**, from ``Content-Length`` before anything is read,
  or as soon as a chunked body passes it;
- **speed**: a body must keep arriving: no gap longer than ``read_timeout_s`` between two chunks, and
  after ``grace_s`` at least ``min_rate`` bytes a second on average; else **408** and the connection
  is closed (a slow sender cannot hold a worker's request slot, nor its memory, for long);
- **bytes in flight**: the bodies being received hold at most ``max_bytes_in_flight`` bytes
  together, counted as they arrive (a slow sender holds what it sent, not what it declared); a
  new upload while that is reached, or a chunk that passes it, gets **429** with ``Retry-After``,
  so many large uploads cannot add up past a memory bound;
- **disconnects**: a client that goes away mid-upload is logged as one line at INFO (no traceback),
  and whatever the app answers to nobody is dropped.

The error answer replaces the app's own answer even when the app caught the error and answered
something else (FastAPI answers 400 "error parsing the body" when reading a JSON body fails).
Error bodies are JSON ``{"detail": "..."}``, FastAPI's shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadLimits:
    """The limits :class:`BodyLimits` enforces (``None``: that limit is off).

    Args:
        max_bytes: largest request body (413).
        read_timeout_s: longest wait for the next chunk of a body (408).
        min_rate: after ``grace_s`` seconds, the least average upload speed in bytes/s (408).
        grace_s: how long a body may take before ``min_rate`` applies (connection set-up, slow start).
        max_bytes_in_flight: most body bytes received and held by unfinished bodies at once (429).
    """

    max_bytes: int
    read_timeout_s: float | None = None
    min_rate: float | None = None
    grace_s: float = 5.0
    max_bytes_in_flight: int | None = None

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")
        for name in ("read_timeout_s", "min_rate", "max_bytes_in_flight"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")


class UploadGauge:
    """The bytes held by the bodies being received (shared, so that an app can report it)."""

    def __init__(self) -> None:
        self.bytes = 0


class _Refused(Exception):
    """A limit stopped the body: answered with ``status`` and ``detail``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error answer ``{"detail": ...}`` used for every refusal here."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class BodyLimits:
    """ASGI middleware enforcing :class:`UploadLimits` on the requests ``applies_to`` selects.

    Args:
        app: the wrapped ASGI app.
        limits: the limits.
        applies_to: ``applies_to(scope)``: whether a request is checked (default: every HTTP
            request with a body, i.e. every method but GET, HEAD, OPTIONS).
        gauge: where the bytes in flight are counted (default: a new one).
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: UploadLimits,
        applies_to: Callable[[Scope], bool] | None = None,
        gauge: UploadGauge | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.applies_to = applies_to or (lambda scope: scope["method"] not in ("GET", "HEAD", "OPTIONS"))
        self.gauge = gauge or UploadGauge()

    def busy_message(self) -> str:
        return f"busy receiving other uploads ({self.gauge.bytes:,} bytes in flight); retry in 1 s"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.applies_to(scope):
            await self.app(scope, receive, send)
            return
        limits = self.limits
        declared = _declared_length(scope)
        if declared is not None and declared > limits.max_bytes:
            close = {"Connection": "close"}  # rather than receive the body only to drop it
            await error_response(413, too_large_message(limits.max_bytes), close)(scope, receive, send)
            return
        if limits.max_bytes_in_flight is not None and self.gauge.bytes >= limits.max_bytes_in_flight:
            await error_response(429, self.busy_message(), {"Retry-After": "1"})(scope, receive, send)
            return
        upload = _Upload(self, limits, receive)
        try:
            await self.app(scope, upload.receive, upload.track(send))
        except Exception:
            if upload.refused is None and not upload.disconnected:
                raise
        finally:
            upload.release()
        if upload.disconnected:
            client = scope.get("client") or ("?", 0)
            logger.info(
                "%s:%s went away during the upload of %s %s after %s of %s bytes",
                client[0], client[1], scope["method"], scope["path"], f"{upload.received:,}",
                "?" if declared is None else f"{declared:,}",
            )
        elif upload.refused is not None and not upload.started:  # the app's own answer was dropped
            refused = upload.refused
            await error_response(refused.status, refused.detail, refused.headers)(scope, _no_body, send)


class _Upload:
    """One request's body as it arrives: counts, paces and stops it."""

    def __init__(self, owner: BodyLimits, limits: UploadLimits, receive: Receive) -> None:
        self.owner, self.limits, self._receive = owner, limits, receive
        self.held = 0  # this body's bytes counted in the gauge
        self.start = time.monotonic()
        self.received = 0
        self.complete = False
        self.disconnected = False
        self.started = False  # the app's response has started
        self.refused: _Refused | None = None

    def release(self) -> None:
        self.owner.gauge.bytes -= self.held
        self.held = 0

    def _timeout(self) -> float | None:
        limits, waits = self.limits, []
        if limits.read_timeout_s is not None:
            waits.append(limits.read_timeout_s)
        if limits.min_rate is not None:
            # by time t the body must have delivered (t - start - grace) * min_rate bytes
            waits.append(self.start + limits.grace_s + self.received / limits.min_rate - time.monotonic())
        return None if not waits else max(0.0, min(waits))

    async def receive(self) -> Message:
        if self.complete or self.refused is not None:
            return await self._receive()
        timeout = self._timeout()
        try:
            message = await asyncio.wait_for(self._receive(), timeout)
        except TimeoutError:
            self.release()
            self.refused = _Refused(408, self._too_slow_message(), {"Connection": "close"})
            raise self.refused from None
        if message["type"] == "http.disconnect":
            self.disconnected = True
            self.release()
            return message
        size = len(message.get("body", b""))
        self.received += size
        self.held += size
        self.owner.gauge.bytes += size
        if self.received > self.limits.max_bytes:
            self.release()
            self.refused = _Refused(413, too_large_message(self.limits.max_bytes), {"Connection": "close"})
            raise self.refused
        budget = self.limits.max_bytes_in_flight
        if message.get("more_body", False) and budget is not None and self.owner.gauge.bytes > budget:
            busy = self.owner.busy_message()
            self.release()
            self.refused = _Refused(429, busy, {"Retry-After": "1", "Connection": "close"})
            raise self.refused
        if not message.get("more_body", False):
            self.complete = True
            self.release()  # the body is in: it no longer counts as an upload in flight
        return message

    def _too_slow_message(self) -> str:
        limits, elapsed = self.limits, time.monotonic() - self.start
        rule = []
        if limits.read_timeout_s is not None:
            rule.append(f"no pause over {limits.read_timeout_s:g} s")
        if limits.min_rate is not None:
            rule.append(f"at least {limits.min_rate:,.0f} bytes/s after {limits.grace_s:g} s")
        return f"upload too slow: {self.received:,} bytes in {elapsed:.1f} s (this server needs {' and '.join(rule)})"

    def track(self, send: Send) -> Send:
        async def tracked(message: Message) -> None:
            if self.disconnected or self.refused is not None:
                return  # nobody is listening, or the refusal is answered instead
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        return tracked


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers") or []:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def too_large_message(limit: int) -> str:
    return f"upload larger than the limit of {limit:,} bytes"


__all__ = ["BodyLimits", "UploadGauge", "UploadLimits", "error_response", "too_large_message"]
