"""Giving freed memory back to the system after large requests.

glibc's ``malloc`` keeps freed heap memory for reuse, in one arena per thread up to 8 per core, so
after a burst of large images decoded in the thread pool the worker's resident memory stays high
although nothing uses it. Two remedies, both measured (docs/SERVING.md): at most
:data:`MALLOC_ARENAS` arenas (``mallopt(M_ARENA_MAX)``, for the threads started after it), and
``malloc_trim(0)`` after large requests, which returns free pages. Elsewhere (musl, macOS, Windows)
this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

#: Requests that decoded at least this many pixels trim after they finish.
TRIM_AFTER_PIXELS = 4_000_000
#: ... this many seconds later (once the request's body and answer are freed too; one trim for a burst).
TRIM_DELAY_S = 0.5

#: Most glibc malloc arenas (threads share them beyond that).
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number

_libc: Any = None
_lock = threading.Lock()


def _glibc(function: str) -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _libc = False
    return getattr(_libc, function, None) if _libc else None


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (before the thread pool starts); whether it could be done."""
    mallopt = _glibc("mallopt")
    return bool(mallopt is not None and mallopt(_M_ARENA_MAX, arenas) == 1)


def trim_memory() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim``); whether it could be done.

    Only one trim runs at a time; a call while one runs returns ``False`` at once.
    """
    trim = _glibc("malloc_trim")
    if trim is None or not _lock.acquire(blocking=False):
        return False
    try:
        trim(ctypes.c_size_t(0))
        return True
    finally:
        _lock.release()
