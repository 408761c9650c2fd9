"""Giving freed memory back to the system after large requests.

glibc's ``malloc`` keeps freed heap memory (and each thread's arena) for reuse, so after a burst of
large images the worker's resident memory stays high although nothing uses it. ``malloc_trim(0)``
returns those free pages. Elsewhere (musl, macOS, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

#: Requests that decoded at least this many pixels trim after they finish.
TRIM_AFTER_PIXELS = 4_000_000

_libc: Any = None
_lock = threading.Lock()


def _malloc_trim() -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    return getattr(_libc, "malloc_trim", None) if _libc else None


def trim_memory() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim``); whether it could be done.

    Only one trim runs at a time; a call while one runs returns ``False`` at once.
    """
    trim = _malloc_trim()
    if trim is None or not _lock.acquire(blocking=False):
        return False
    try:
        trim(0)
        return True
    finally:
        _lock.release()
