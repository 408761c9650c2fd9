"""What one worker process holds (the model's thread, the limits' counters) and the way from a
received body to the detector's answer.

A request meets the limits in this order (docs/SERVING.md):

1. the connection and the body (:mod:`acfd.serve.server`, :mod:`acfd.web.uploads`): header and
   keep-alive timeouts, a connection limit, the body's size, speed and the bytes in flight;
2. **admission**, once the whole body is in: at most ``max_in_flight`` requests between a complete
   body and the answer; one more gets **429** with ``Retry-After`` (a request is also refused
   before its body is read when the worker is already full, so it does not upload for nothing);
3. the image header: more than ``max_pixels`` decoded pixels gets **413**, before any decoding;
4. the **pixel budget**: the decoded pixels are taken from :class:`~acfd.serve.budget.PixelBudget`
   before decoding and given back when the model is done, so images in memory stay bounded;
   a large JPEG (over :data:`REDUCE_ABOVE_PIXELS`) is decoded reduced (1/2, 1/4 or 1/8 of each side)
   as long as it stays larger than the network input: up to 64 times fewer pixels; its boxes are
   mapped back to the upload's pixels;
5. ``request_timeout_s`` from admission to the answer, else **503** with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from acfd.data.image_io import DecodedImage, OpenedImage
from acfd.serve.batching import BatchingWorker, Job
from acfd.serve.budget import PixelBudget
from acfd.serve.decode import check_pixels, decode_opened, open_upload
from acfd.serve.errors import ServiceError
from acfd.serve.memory import TRIM_AFTER_PIXELS, TRIM_DELAY_S, limit_malloc_arenas, trim_memory
from acfd.serve.settings import ServeSettings
from acfd.web.uploads import UploadGauge

logger = logging.getLogger(__name__)

#: JPEGs with more pixels than this are decoded reduced when the network input is smaller (smaller
#: ones are decoded whole, so that the answer is exactly the Python API's ``Detector`` result).
REDUCE_ABOVE_PIXELS = 4_000_000
#: ``detector_factory(settings) -> detector`` with ``detect_arrays(images, batch_size=)`` and a
#: settable ``scales`` (an :class:`acfd.Detector`).
DetectorFactory = Callable[[ServeSettings], Any]
#: ``finish(detections, image, reduction) -> result``: a post-step on the inference thread.
Finish = Callable[[Any, np.ndarray, int], Any]


def default_detector_factory(settings: ServeSettings) -> Any:
    """The configured :class:`acfd.Detector`, at the score floor (requests filter above it)."""
    from acfd import Detector

    return Detector(  # threads: ONNX Runtime's and torch's (process-wide)
        threads=settings.torch_threads,
        precision=settings.precision,
        model=settings.model,
        weights=settings.weights,
        device=settings.device,
        scales=(str(settings.scale),),
        score_thresh=settings.min_score_thr,
        batch_size=settings.max_batch,
    )


def model_name(detector: Any) -> str:
    return str(getattr(getattr(detector, "cfg", None), "name", type(detector).__name__))


def detector_runner(detector: Any) -> Callable[[Any, int], Any]:
    """``run(images, scale)``: one network call at one scale (the detector's scales are set per call)."""
    scales: dict[int, Any] = {}

    def run(images: Any, scale: int) -> Any:
        if scale not in scales:
            from acfd.predict import parse_scales

            scales[scale] = parse_scales(str(scale))
        detector.scales = scales[scale]
        return detector.detect_arrays(list(images), batch_size=len(images))

    return run


@dataclass
class Answer:
    """A detected upload.

    Attributes:
        size: the upload's ``(width, height)``.
        reduction: the image was decoded with each side divided by this (boxes in ``result``
            are in the decoded pixels: multiply by it for the upload's).
        result: the detections, or what ``finish`` made of them.
    """

    size: tuple[int, int]
    reduction: int
    result: Any


class Service:
    """One worker process's state: settings, the model's thread, the limits and their counters."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.worker: BatchingWorker | None = None
        self.identifier: Any = None
        self.model = "?"
        self.in_flight = 0
        self.rejected = 0
        self.pixels: PixelBudget | None = None  # made on the serving event loop, in start()
        self._trim: asyncio.TimerHandle | None = None
        self.uploads = UploadGauge()  # body bytes being received (acfd.web.uploads counts them)

    # -- life cycle --------------------------------------------------------------------------

    def start(self, detector: Any, identifier: Any) -> None:
        settings = self.settings
        limit_malloc_arenas()
        self.model = model_name(detector)
        self.identifier = identifier
        self.pixels = PixelBudget(settings.pixel_budget)
        self.worker = BatchingWorker(
            detector_runner(detector),
            max_batch=settings.max_batch,
            batch_wait_s=settings.batch_wait_ms / 1000.0,
            torch_threads=settings.torch_threads,
            more_coming=lambda in_batch: self.in_flight > in_batch + self.queued,
        )
        self.worker.start()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    @property
    def queued(self) -> int:
        return self.worker.queued if self.worker is not None else 0

    # -- admission ---------------------------------------------------------------------------

    def busy_error(self) -> ServiceError:
        self.rejected += 1
        wait = self.worker.expected_wait_s() if self.worker is not None else 1
        return ServiceError(429, f"busy: {self.in_flight} requests in progress; retry in {wait} s", wait)

    def check_room(self) -> None:
        """429 when this worker is full (before a body is read, so it is not uploaded for nothing)."""
        if self.in_flight >= self.settings.max_in_flight:
            raise self.busy_error()

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Count a request whose body is in as in flight, or refuse it with 429."""
        self.check_room()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    # -- the work ------------------------------------------------------------------------------

    async def detect(self, data: bytes, name: str, scale: int, finish: Finish | None = None) -> Answer:
        """Decode ``data`` within the pixel budget and detect at ``scale``, within the time limit.

        ``finish(detections, image, reduction)`` runs on the inference thread (recognition) with the
        decoded image; without it the result is the detections.
        """
        assert self.worker is not None and self.pixels is not None, "the service has not started"
        settings, worker, pixels = self.settings, self.worker, self.pixels
        job: Job | None = None
        with self.admitted():
            try:
                async with asyncio.timeout(settings.request_timeout_s):
                    loop = asyncio.get_running_loop()
                    opened = open_upload(data, name)
                    try:
                        # a large JPEG is decoded reduced, down to the network input's longer side
                        min_side = scale if opened.decoded_pixels() > REDUCE_ABOVE_PIXELS else None
                        taken = await pixels.acquire(check_pixels(opened, settings.max_pixels, min_side))
                    except BaseException:
                        opened.close()
                        raise
                    decoding = loop.run_in_executor(None, _decode_and_close, opened, settings.max_pixels, min_side)
                    try:
                        decoded = await asyncio.shield(decoding)
                    except BaseException:
                        # the pixels go back when the decoding thread lets go of them (it may still run)
                        decoding.add_done_callback(lambda _: self._give_back(taken))
                        raise
                    reduction = decoded.reduction
                    job = Job(
                        decoded.array, scale, loop.create_future(), loop,
                        finish=None if finish is None else (lambda dets, image: finish(dets, image, reduction)),
                        on_done=lambda: self._give_back(taken),
                    )
                    del decoded
                    worker.submit(job)
                    return Answer(opened.size, reduction, await job.future)
            except TimeoutError as exc:
                if job is not None:
                    job.cancelled = True
                wait = worker.expected_wait_s()
                raise ServiceError(
                    503, f"request not answered within {settings.request_timeout_s:g} s; retry in {wait} s", wait
                ) from exc

    def _give_back(self, taken: int) -> None:
        assert self.pixels is not None
        self.pixels.release(taken)
        if taken >= TRIM_AFTER_PIXELS and self._trim is None:
            # a moment later, once the request's body and answer are freed too; one trim for a burst
            loop = asyncio.get_running_loop()
            self._trim = loop.call_later(TRIM_DELAY_S, self._trim_now, loop)

    def _trim_now(self, loop: asyncio.AbstractEventLoop) -> None:
        self._trim = None
        loop.run_in_executor(None, trim_memory)


def _decode_and_close(opened: OpenedImage, max_pixels: int, min_side: int | None) -> DecodedImage:
    """The decoding thread's work: the pixels, then the file closed (on that thread, after use)."""
    try:
        return decode_opened(opened, max_pixels, min_side)
    finally:
        opened.close()


def timer() -> Callable[[], float]:
    """Milliseconds since this call, for the ``ms`` field."""
    start = time.perf_counter()
    return lambda: round((time.perf_counter() - start) * 1000, 1)
