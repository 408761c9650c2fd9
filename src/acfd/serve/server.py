"""Running the service with uvicorn: connection limits and timeouts, and the exposure warning.

uvicorn times out a keep-alive connection only after a response, and the timer stops at the first
byte of the next request: a connection that never sends a whole request (idle from the start, or
a header a byte at a time) stays open for ever. :class:`GuardedH11Protocol` adds a **header
timeout**: from the moment a connection opens, and again after each response, the next request's
headers must be complete within ``header_timeout_s``, else the connection is closed. It also
closes a new connection at once when ``max_connections`` are already open (uvicorn's own
``limit_concurrency`` answers 503 to requests over it, but keeps the connections).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from acfd.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

#: The app factory the worker processes import (settings from ``ACFD_SERVE_*``).
APP_FACTORY = "acfd.serve.app:app_from_env"
PROTOCOL = "acfd.serve.server:GuardedH11Protocol"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a hard connection limit (module docstring).

    The limits are ``ServeSettings`` (read from ``ACFD_SERVE_*`` in each worker process) unless
    :attr:`settings` is set on the class (tests, an in-process server).
    """

    settings: ClassVar[ServeSettings | None] = None
    _header_timer: asyncio.TimerHandle | None = None
    _cycle_seen: Any = None

    @classmethod
    def limits(cls) -> ServeSettings:
        if cls.settings is None:
            cls.settings = ServeSettings.from_env()
        return cls.settings

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits().max_connections:
            logger.warning("%d connections open: closing a new one (max_connections)", len(self.connections) - 1)
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._cycle_seen:
            self._cycle_seen = self.cycle  # a request's headers are complete
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers (pipelined ones cancel it at once)
        super().on_response_complete()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.limits().header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            client = "%s:%d" % self.client if self.client else "a client"
            logger.debug("closing the connection of %s: no complete request headers within %g s",
                        client, self.limits().header_timeout_s)
            self.transport.close()


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """The uvicorn settings that carry the service's connection limits."""
    return {
        "http": PROTOCOL,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.max_connections,
        "h11_max_incomplete_event_size": 64 * 1024,  # request line and headers
        "timeout_graceful_shutdown": 10,
    }


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a ``--host`` value) only listens on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def exposure_warning(host: str, settings: ServeSettings) -> str | None:
    """A warning when the service is reachable from other machines without an API key."""
    if is_loopback(host) or settings.api_key is not None:
        return None
    return (
        f"serving on {host} without an API key: anyone who can reach this port can use the service; "
        "set --api-key or ACFD_SERVE_API_KEY (clients send it in the X-API-Key header)"
    )


def run(settings: ServeSettings, host: str, port: int, log_level: str = "info") -> None:
    """Serve with uvicorn: ``settings.workers`` processes, each building the app from ``ACFD_SERVE_*``."""
    import os

    import uvicorn

    os.environ.update(settings.to_env())  # read by every worker process's app factory and protocol
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=settings.workers,
        log_level=log_level,
        **uvicorn_options(settings),
    )
