"""Image files and video frames fed to a :class:`~acfd.predict.detector.Detector` in batches, in
order (:meth:`Detector.detect_paths`, :meth:`Detector.detect_video_frames`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from acfd.data.image_io import ImageReadError, load_image
from acfd.data.video import iter_video_frames
from acfd.predict.results import Detections

logger = logging.getLogger(__name__)


class Detector(Protocol):
    """What these functions use of :class:`acfd.predict.detector.Detector`."""

    def detect_arrays(self, images: Sequence[np.ndarray], sources: Sequence[str | None] | None = None,
                      batch_size: int | None = None) -> list[Detections]: ...

    def timed(self, step: str) -> contextlib.AbstractContextManager[None]: ...


def detect_files(
    detector: Detector,
    paths: Iterable[str | os.PathLike[str]],
    batch_size: int = 1,
    progress: bool = True,
) -> Iterator[tuple[Path, Detections | Exception]]:
    """Detect faces in image files, in order; a file that cannot be read never stops the run.

    Args:
        detector: the detector.
        paths: image files.
        batch_size: images per network call.
        progress: show a tqdm bar on stderr.

    Yields:
        ``(path, Detections)``, or ``(path, ImageReadError)`` for a file that cannot be read.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths = [Path(p) for p in paths]
    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> Iterator[tuple[Path, Detections]]:
        if not pending:
            return
        dets = detector.detect_arrays([im for _, im in pending], [str(p) for p, _ in pending], batch_size=batch_size)
        done = [(p, d) for (p, _), d in zip(pending, dets)]
        pending.clear()
        for item in done:
            bar.update(1)
            yield item

    with tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr, leave=False) as bar:
        for path in paths:
            try:
                with detector.timed("load"):
                    image = load_image(path)
            except (ImageReadError, OSError) as exc:
                yield from flush()
                logger.debug("cannot read %s: %s", path, exc)
                bar.update(1)
                yield path, exc
                continue
            pending.append((path, image))
            if len(pending) >= batch_size:
                yield from flush()
        yield from flush()


def detect_frames(
    detector: Detector,
    path: str | os.PathLike[str],
    every: int = 1,
    batch_size: int = 1,
) -> Iterator[tuple[np.ndarray, Detections]]:
    """Detect faces in every ``every``-th frame of a video, yielding each frame (RGB) too.

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

    for index, ts, frame in iter_video_frames(path, every=every):
        pending.append((index, ts, frame))
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        yield from flush()


__all__ = ["detect_files", "detect_frames"]
