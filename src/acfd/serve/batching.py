"""Inference off the event loop: one thread per worker process owns the model and batches requests.

Requests put a :class:`Job` on a queue and await its future; the thread takes the oldest job, adds
queued jobs of the same scale (up to ``max_batch``), waits up to ``batch_wait_s`` for more *only
while other admitted requests are still on their way* (a lone client never waits), runs one
network call, and resolves the futures on the event loop. Jobs whose request timed out are skipped.
Each job's ``on_done`` runs on the event loop once the thread has let go of its image (answered or
skipped): the service gives the image's pixels back to its budget then. The queue itself is
bounded by the admission limit and the pixel budget in :mod:`acfd.serve.service`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: ``run_batch(images, scale) -> one result per image`` (the detector call).
RunBatch = Callable[[Sequence[np.ndarray], int], Sequence[Any]]


@dataclass(eq=False)
class Job:
    """One image to detect faces in.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        scale: the test scale (longer side); only jobs of one scale share a batch.
        future: resolved with ``finish(result, image)`` (or the detector's result).
        loop: the event loop that owns ``future``.
        finish: optional post-step run on the inference thread (e.g. recognition).
        on_done: called on ``loop`` when the thread no longer holds ``image``.
    """

    image: np.ndarray
    scale: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    finish: Callable[[Any, np.ndarray], Any] | None = None
    on_done: Callable[[], None] | None = None
    cancelled: bool = False
    queued_at: float = field(default_factory=time.monotonic)


class BatchingWorker:
    """The inference thread of one worker process.

    Args:
        run_batch: runs the model on a list of images at one scale.
        max_batch: most images per call (1: no batching).
        batch_wait_s: longest wait for more jobs when more are coming.
        torch_threads: ``torch.set_num_threads`` for the inference (``None``: leave it).
        more_coming: whether admitted requests are still reading or decoding (then waiting for
            them can fill the batch).
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch: int = 8,
        batch_wait_s: float = 0.005,
        torch_threads: int | None = None,
        more_coming: Callable[[int], bool] = lambda queued: False,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch = max(1, int(max_batch))
        self.batch_wait_s = float(batch_wait_s)
        self.torch_threads = torch_threads
        self.more_coming = more_coming
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.seconds_per_image = 0.0  # moving average, for Retry-After
        self.batches = 0
        self.images = 0
        self.running = 0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="acfd-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the event loop's side ----------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stop:
                raise RuntimeError("the inference thread has stopped")
            self._queue.append(job)
            self._cond.notify()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def expected_wait_s(self) -> int:
        """Whole seconds until the current backlog is done (at least 1), for ``Retry-After``."""
        backlog = self.queued + self.running
        return max(1, math.ceil(backlog * max(self.seconds_per_image, 0.01)))

    # -- the inference thread -----------------------------------------------------------------

    def _take_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            first = self._queue.popleft()
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch:
                for job in [j for j in self._queue if j.scale == first.scale][: self.max_batch - len(batch)]:
                    self._queue.remove(job)
                    batch.append(job)
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch or remaining <= 0 or not self.more_coming(len(batch)):
                    break
                self._cond.wait(remaining)
            self.running = len(batch)
            return batch

    def _loop(self) -> None:
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            live = [job for job in batch if not job.cancelled]
            if live:
                self._run(live)
            self.running = 0
            for job in batch:
                job.image = None  # type: ignore[assignment]  # the thread's reference goes now
                if job.on_done is not None:
                    _call_on_loop(job.loop, job.on_done)
            del batch, live

    def _run(self, jobs: list[Job]) -> None:
        start = time.perf_counter()
        try:
            results = list(self.run_batch([job.image for job in jobs], jobs[0].scale))
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
            logger.exception("inference failed for a batch of %d", len(jobs))
            for job in jobs:
                _resolve(job, exc=exc)
            return
        per_image = (time.perf_counter() - start) / len(jobs)
        self.seconds_per_image = per_image if not self.batches else 0.8 * self.seconds_per_image + 0.2 * per_image
        self.batches += 1
        self.images += len(jobs)
        for job, result in zip(jobs, results):
            if job.finish is None:
                _resolve(job, result)
                continue
            try:
                _resolve(job, job.finish(result, job.image))
            except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
                _resolve(job, exc=exc)


def _call_on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:  # the loop is closed (shutdown)
        pass


def _resolve(job: Job, result: Any = None, exc: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():  # the request timed out meanwhile
            return
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed (shutdown)
        pass
