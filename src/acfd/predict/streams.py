"""Image files and video frames fed to a :class:`~acfd.predict.detector.Detector` in batches, in
order (:meth:`Detector.detect_paths`, :meth:`Detector.detect_video_frames`).

Decoding overlaps inference: a background thread decodes the next few files or frames
(:func:`prefetched`, at most :data:`PREFETCH` ahead, so memory stays bounded) while the detector
runs on the current ones; OpenCV's and libjpeg's decoders and the network release the GIL, so the
two run on different cores. A large JPEG (:data:`REDUCE_ABOVE_PIXELS`) larger than the detector
needs is decoded reduced by libjpeg (:func:`min_long_side`), and its boxes are mapped back to the
file's own pixels.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from tqdm.auto import tqdm

from acfd.data.image_io import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageReadError,
    open_image,
)
from acfd.data.video import iter_video_frames
from acfd.predict.parallel import ImageWorkers, Pipeline
from acfd.predict.results import Detections, Timings

logger = logging.getLogger(__name__)

#: JPEGs with more pixels than this (1920x1080 and larger) are decoded reduced when the detector
#: needs fewer; smaller ones are decoded whole, so that their boxes are exactly those of
#: ``Detector()(path)`` (the service draws the same line at 4 MP).
REDUCE_ABOVE_PIXELS = 2_000_000

#: Files or frames decoded ahead of the detector: enough to hide the decoder's jitter, few enough
#: that a 4K video holds only a handful of frames (4 x 25 MB) beyond the batch being detected.
PREFETCH = 4

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")


class Detector(Protocol):
    """What these functions use of :class:`acfd.predict.detector.Detector` (its ``scales`` and
    ``verifier``, when it has them, size the reduced JPEG decoding; its ``image_workers()``, when it
    has them, run several images at once)."""

    def detect_arrays(self, images: Sequence[np.ndarray], sources: Sequence[str | None] | None = None,
                      batch_size: int | None = None) -> list[Detections]: ...

    timings: Timings


_DONE = object()


class _Failure:
    """An exception raised by the prefetching thread, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched(items: Iterable[T], size: int = PREFETCH) -> Iterator[T]:
    """Iterate ``items`` on a background thread, at most ``size`` items ahead of the consumer.

    An exception raised while iterating ``items`` is raised here, in the consumer, after the items
    before it. When the consumer stops early (``break``, an exception, closing this generator), the
    thread stops too: it closes ``items`` (a generator's ``finally`` runs, a video file is
    released) and is joined before this generator returns.

    Args:
        items: any iterable; it is iterated on the background thread only.
        size: the queue's bound (>= 1).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    slots: queue.Queue[object] = queue.Queue(maxsize=size)
    stop = threading.Event()

    def offer(item: object) -> bool:
        """Put ``item`` once there is room; ``False`` when the consumer has gone."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not offer(item):
                    return
            offer(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            offer(_Failure(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="acfd-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def min_long_side(detector: object, height: int, width: int) -> int | None:
    """The shortest longer side an image of ``height x width`` may be decoded at and still give
    ``detector`` every pixel it uses: each test scale's network input (both sides, so an exact
    ``HxW`` scale of another aspect is never enlarged) and the verifier's resized image.

    ``None`` when the detector has no :attr:`scales` (decode every pixel).
    """
    scales = getattr(detector, "scales", None)
    if not scales:
        return None
    long_side = max(height, width)
    need = 0
    for scale in scales:
        th, tw = scale.target_size(height, width)
        need = max(need, math.ceil(long_side * th / height), math.ceil(long_side * tw / width))
    verifier_cfg = getattr(getattr(detector, "verifier", None), "cfg", None)
    need = max(need, int(getattr(verifier_cfg, "long_side", 0) or 0))
    return need


def _decode_for(detector: object, path: Path, reduce: bool) -> DecodedImage:
    with open_image(path) as opened:
        large = reduce and opened.decoded_pixels() > REDUCE_ABOVE_PIXELS
        wanted = min_long_side(detector, opened.size[1], opened.size[0]) if large else None
        return opened.decode(DEFAULT_MAX_PIXELS, wanted)


def _in_full_pixels(dets: Detections, decoded: DecodedImage) -> Detections:
    """``dets`` found on a reduced decode, with boxes and image size in the file's own pixels."""
    if decoded.reduction == 1:
        return dets
    w, h = decoded.size
    boxes = dets.boxes * decoded.reduction
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    return dataclasses.replace(dets, boxes=boxes, image_size=(h, w))


def detect_files(
    detector: Detector,
    paths: Iterable[str | os.PathLike[str]],
    batch_size: int = 1,
    progress: bool = True,
    reduce: bool = True,
) -> Iterator[tuple[Path, Detections | Exception]]:
    """Detect faces in image files, in order; a file that cannot be read never stops the run.

    Files are decoded on a background thread, a few ahead of the detector (:func:`prefetched`).
    A detector with image workers (:mod:`acfd.predict.parallel`) gets one image per free worker
    (``batch_size`` 1) or ``batch_size`` x ``detector.parallel_images`` images at a time.

    Args:
        detector: the detector.
        paths: image files.
        batch_size: images per network call.
        progress: show a tqdm bar on stderr.
        reduce: decode a JPEG of more than :data:`REDUCE_ABOVE_PIXELS` that is larger than the
            detector needs reduced (1/2, 1/4 or 1/8 of each side, :func:`min_long_side`); the boxes
            are in the file's pixels either way.

    Yields:
        ``(path, Detections)``, or ``(path, ImageReadError)`` for a file that cannot be read.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths = [Path(p) for p in paths]
    pending: list[tuple[Path, DecodedImage]] = []

    def load(path: Path) -> tuple[DecodedImage | Exception, float]:
        start = time.perf_counter()
        try:
            image: DecodedImage | Exception = _decode_for(detector, path, reduce)
        except (ImageReadError, OSError) as exc:
            logger.debug("cannot read %s: %s", path, exc)
            image = exc
        return image, time.perf_counter() - start

    def decoded() -> Iterator[tuple[Path, DecodedImage | Exception, float]]:
        for path in paths:
            yield path, *load(path)

    def flush() -> Iterator[tuple[Path, Detections]]:
        if not pending:
            return
        dets = detector.detect_arrays([d.array for _, d in pending], [str(p) for p, _ in pending], batch_size=batch_size)
        done = [(p, _in_full_pixels(det, d)) for (p, d), det in zip(pending, dets)]
        pending.clear()
        for item in done:
            bar.update(1)
            yield item

    timings = detector.timings
    workers = _image_workers(detector) if batch_size == 1 and len(paths) > 1 else None
    if workers is not None:
        yield from _detect_files_on_workers(workers, load, paths, progress, timings)
        return
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr, leave=False))
        for path, image, seconds in stack.enter_context(contextlib.closing(prefetched(decoded()))):
            timings.load += seconds  # decoding time, though it overlaps the detector's
            if isinstance(image, Exception):
                yield from flush()
                bar.update(1)
                yield path, image
                continue
            pending.append((path, image))
            if len(pending) >= batch_size * getattr(detector, "parallel_images", 1):
                yield from flush()
        yield from flush()


def _detect_files_on_workers(
    workers: ImageWorkers, load: Callable[[Path], tuple[DecodedImage | Exception, float]], paths: list[Path],
    progress: bool, timings: Timings,
) -> Iterator[tuple[Path, Detections | Exception]]:
    """:func:`detect_files` on image workers: each worker decodes a file and detects its faces,
    then takes the next; at most two files per worker are under way, results come out in input order."""

    def task(path: Path) -> Callable[[Pipeline], tuple[DecodedImage | Exception, float, Detections | None]]:
        def run(pipeline: Pipeline) -> tuple[DecodedImage | Exception, float, Detections | None]:
            image, seconds = load(path)
            if isinstance(image, Exception):
                return image, seconds, None
            return image, seconds, pipeline.detect_arrays([image.array], [str(path)], 1)[0]

        return run

    jobs = ((path, workers.run(task(path))) for path in paths)
    with tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr, leave=False) as bar:
        for path, done in _in_order(jobs, 2 * workers.workers):
            yield _finished(path, done, timings, bar)


def _finished(path: Path, done: tuple[DecodedImage | Exception, float, Detections | None], timings: Timings,
              bar: tqdm) -> tuple[Path, Detections | Exception]:
    image, seconds, dets = done
    timings.load += seconds
    bar.update(1)
    if isinstance(image, Exception):
        return path, image
    assert dets is not None  # a decoded file always has its detections
    return path, _in_full_pixels(dets, image)


def detect_frames(
    detector: Detector,
    path: str | os.PathLike[str],
    every: int = 1,
    batch_size: int = 1,
) -> Iterator[tuple[np.ndarray, Detections]]:
    """Detect faces in every ``every``-th frame of a video, yielding each frame (RGB) too.

    Frames are decoded on a background thread, at most :data:`PREFETCH` ahead of the detector; a
    detector with image workers (:mod:`acfd.predict.parallel`) gets one frame per free worker
    (``batch_size`` 1).

    Args:
        detector: the detector.
        path: video file.
        every: keep frames 0, every, 2 * every...
        batch_size: frames per network call.

    Yields:
        ``(frame (H, W, 3) uint8 RGB, Detections)`` with ``source``, ``frame_index`` and ``timestamp`` set.

    Raises:
        VideoReadError: the video cannot be opened or no frame decodes.
    """
    src = str(path)
    pending: list[tuple[int, float, np.ndarray]] = []

    def flush() -> Iterator[tuple[np.ndarray, Detections]]:
        dets = detector.detect_arrays([f for _, _, f in pending], [src] * len(pending), batch_size=batch_size)
        done = list(zip(pending, dets))
        pending.clear()
        for (index, ts, frame), d in done:
            d.frame_index, d.timestamp = index, ts
            yield frame, d

    frames = prefetched(iter_video_frames(path, every=every), max(PREFETCH, batch_size))
    workers = _image_workers(detector) if batch_size == 1 else None
    if workers is not None:
        with contextlib.closing(frames):
            yield from _detect_frames_on_workers(workers, frames, src)
        return
    with contextlib.closing(frames):
        for index, ts, frame in frames:
            pending.append((index, ts, frame))
            if len(pending) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()


def _detect_frames_on_workers(workers: ImageWorkers, frames: Iterator[tuple[int, float, np.ndarray]],
                              src: str) -> Iterator[tuple[np.ndarray, Detections]]:
    """:func:`detect_frames` on image workers: each decoded frame goes to the next free worker; at
    most two frames per worker are under way, results come out in frame order."""
    jobs = (((index, ts, frame), workers.submit([frame], [src], 1)) for index, ts, frame in frames)
    for (index, ts, frame), dets in _in_order(jobs, 2 * workers.workers):
        dets[0].frame_index, dets[0].timestamp = index, ts
        yield frame, dets[0]


def _image_workers(detector: Detector) -> ImageWorkers | None:
    """The detector's image workers (:mod:`acfd.predict.parallel`), if it has any."""
    workers_of = getattr(detector, "image_workers", None)
    return workers_of() if workers_of is not None else None


def _in_order(jobs: Iterator[tuple[K, Future[R]]], depth: int) -> Iterator[tuple[K, R]]:
    """``(key, result)`` of ``jobs`` in their order, drawing (and so submitting) at most ``depth``
    ahead of the one awaited; on an early stop (Ctrl-C, a closed generator) what is still queued is
    cancelled."""
    in_flight: collections.deque[tuple[K, Future[R]]] = collections.deque()
    try:
        for key, job in jobs:
            in_flight.append((key, job))
            if len(in_flight) >= depth:
                key, job = in_flight.popleft()
                yield key, job.result()
        while in_flight:
            key, job = in_flight.popleft()
            yield key, job.result()
    finally:
        for _, job in in_flight:
            job.cancel()


__all__ = ["PREFETCH", "REDUCE_ABOVE_PIXELS", "detect_files", "detect_frames", "min_long_side", "prefetched"]
