"""The pixel budget: decoded pixels a worker holds at once (decoding, queued, on the model).

A request takes its image's decoded pixel count from the budget before decoding and gives it back
when the model is done with the image; a request that does not fit waits (within its time limit).
Any waiter that fits goes first, so small images are not held up behind a large one; a large one
waits at most until its request times out (503). Memory for images is then about
``capacity * DECODE_BYTES_PER_PIXEL`` whatever the number of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class PixelBudget:
    """An asyncio budget of ``capacity`` pixels (event-loop side only).

    Args:
        capacity: most pixels held at once; a single request larger than this takes the whole
            budget (the pixel limit per image keeps that from happening by default).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.used = 0
        self.waiting = 0
        self._changed = asyncio.Condition()

    async def acquire(self, pixels: int) -> int:
        """Wait until ``pixels`` fit, take them and return the amount taken (give it to :meth:`release`)."""
        take = max(1, min(int(pixels), self.capacity))
        async with self._changed:
            self.waiting += 1
            try:
                await self._changed.wait_for(lambda: self.used + take <= self.capacity)
            finally:
                self.waiting -= 1
            self.used += take
        return take

    def release(self, taken: int) -> None:
        """Give ``taken`` pixels back (callable from any coroutine on the loop, without waiting)."""
        self.used -= taken
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[int]:
        taken = await self.acquire(pixels)
        try:
            yield taken
        finally:
            self.release(taken)
