"""Video input: decode frames with OpenCV as RGB arrays, with clear errors for unreadable files."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from acfd.utils import FileReadError

logger = logging.getLogger(__name__)

#: Lower-case file suffixes treated as videos when scanning folders.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".wmv", ".flv", ".mpg", ".mpeg", ".ts"}
)


class VideoReadError(FileReadError):
    """A video could not be opened or decoded; ``str(err)`` is ``"<path>: <reason>"``."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says (``frame_count`` and ``fps`` may be 0 when unknown)."""

    width: int
    height: int
    fps: float
    frame_count: int


def is_video_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a video by its name (suffix in :data:`VIDEO_EXTENSIONS`).

    Args:
        path: file name or path.
    """
    p = Path(path)
    return p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")


def _open_capture(path: Path) -> cv2.VideoCapture:
    if not path.exists():
        raise VideoReadError(path, "file not found")
    if path.is_dir():
        raise VideoReadError(path, "is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoReadError(path, "cannot open video (not a video or unsupported codec)")
    return cap


def read_video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Read the frame size, frame rate and frame count of a video from its header.

    Args:
        path: video file.

    Raises:
        VideoReadError: missing, empty or unreadable file.
    """
    p = Path(path)
    cap = _open_capture(p)
    try:
        return VideoInfo(
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            frame_count=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
        )
    finally:
        cap.release()


def iter_video_frames(
    path: str | os.PathLike[str], every: int = 1
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(frame_index, timestamp_s, rgb)`` for every ``every``-th frame of a video.

    Frames are decoded in order (skipped frames are grabbed, not decoded). The timestamp is
    ``frame_index / fps`` when the container gives a frame rate, else the decoder's position.

    Args:
        path: video file (anything OpenCV's FFmpeg backend reads).
        every: keep frames 0, every, 2 * every, ...

    Raises:
        ValueError: ``every < 1``.
        VideoReadError: the file is missing, empty, not a video, or no frame can be decoded.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    p = Path(path)
    cap = _open_capture(p)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        expected = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        index = 0
        decoded = 0
        while True:
            if index % every == 0:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                decoded += 1
                if fps > 0:
                    timestamp = index / fps
                else:
                    timestamp = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
                if frame.ndim == 2:
                    rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
                elif frame.shape[2] == 4:
                    rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
                else:
                    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                yield index, timestamp, rgb
            elif not cap.grab():
                break
            index += 1
        if decoded == 0:
            raise VideoReadError(p, "no frame could be decoded (corrupt or truncated video)")
        if expected and index + 2 < expected:
            logger.warning(
                "%s: decoding stopped at frame %d of %d (truncated video?)", p, index, expected
            )
    finally:
        cap.release()
