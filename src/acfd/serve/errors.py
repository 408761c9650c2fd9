"""Client errors of the service: one exception type carrying the HTTP status and a one-line message.

Every error response is JSON ``{"detail": "<message>"}`` (FastAPI's own shape), with ``Retry-After``
where the client should come back later.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error answered with ``status`` and ``{"detail": message}``.

    Args:
        status: the HTTP status code.
        message: one line saying what was wrong and what is accepted.
        retry_after_s: seconds for a ``Retry-After`` header (429 / 503).
    """

    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after_s is None else {"Retry-After": str(int(self.retry_after_s))}
