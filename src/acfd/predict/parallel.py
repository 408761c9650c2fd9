"""Throughput on the CPU: several images at once, one per worker thread.

One ONNX Runtime session spreads one image's convolutions over the cores (intra-op threads), but a
small network on a small image leaves them idle much of the time: decoding, pre- and
post-processing, the verifier's few crops and the graph's many small operators run on one core at
a time. Given several images, :class:`ImageWorkers` runs them side by side instead: each worker
thread has its own sessions with one intra-op thread, and ONNX Runtime releases the GIL while it
runs, so every core stays busy (``benchmarks/bench_speed.py`` prints both ways). Every image goes
through the same graphs with the same batch size, so the boxes are the same; only the step times in
:class:`~acfd.predict.results.Timings` add up over the workers (they overlap in time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Protocol, TypeVar

import numpy as np

from acfd.predict.results import Detections, Timings

T = TypeVar("T")


class Pipeline(Protocol):
    """What the workers use of :class:`~acfd.predict.onnx_pipeline.OnnxPipeline`."""

    timings: Timings

    def with_threads(self, num_threads: int) -> Pipeline: ...

    def detect_arrays(self, images: Sequence[np.ndarray], sources: Sequence[str | None] | None = None,
                      batch_size: int | None = None) -> list[Detections]: ...


class ImageWorkers:
    """``workers`` threads, each with a single-threaded copy of ``pipeline``
    (:meth:`OnnxPipeline.with_threads <acfd.predict.onnx_pipeline.OnnxPipeline.with_threads>`, made
    on the thread's first image); the copies' step times are added to ``pipeline.timings``."""

    def __init__(self, pipeline: Pipeline, workers: int) -> None:
        if workers < 2:
            raise ValueError(f"image workers need at least 2 workers, got {workers}")
        self.template = pipeline
        self.workers = int(workers)
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="acfd-detect")
        self._local = threading.local()
        self._lock = threading.Lock()

    def _on_worker(self, task: Callable[[Pipeline], T]) -> T:
        pipeline = getattr(self._local, "pipeline", None)
        if pipeline is None:
            pipeline = self._local.pipeline = self.template.with_threads(1)
        try:
            return task(pipeline)
        finally:
            with self._lock:
                self.template.timings.add(pipeline.timings)
            pipeline.timings.reset()

    def run(self, task: Callable[[Pipeline], T]) -> Future[T]:
        """``task(pipeline)`` on the next free worker, with that worker's pipeline (e.g. decode a
        file, then detect faces in it: decoding runs on the workers too)."""
        return self.pool.submit(self._on_worker, task)

    def submit(self, images: Sequence[np.ndarray], sources: Sequence[str | None],
               batch_size: int | None = None) -> Future[list[Detections]]:
        """Detect faces in ``images`` on the next free worker (as :meth:`OnnxPipeline.detect_arrays`)."""
        images, sources = list(images), list(sources)
        return self.run(lambda pipeline: pipeline.detect_arrays(images, sources, batch_size))

    def detect_arrays(self, images: Sequence[np.ndarray], sources: Sequence[str | None],
                      batch_size: int | None) -> list[Detections]:
        """As :meth:`OnnxPipeline.detect_arrays`, the images dealt out to the workers in turn; an
        error of any image is raised once every worker is done."""
        n = min(self.workers, len(images))
        shares = [list(range(w, len(images), n)) for w in range(n)]
        futures = [self.submit([images[i] for i in idx], [sources[i] for i in idx], batch_size) for idx in shares]
        wait(futures)
        out: list[Detections | None] = [None] * len(images)
        for idx, future in zip(shares, futures):
            for i, dets in zip(idx, future.result()):
                out[i] = dets
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the worker threads (waiting for running work)."""
        self.pool.shutdown(wait=True)
