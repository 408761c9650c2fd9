"""What a detector returns: :class:`Detections` (one image's faces) and :class:`Timings` (where the
time went); and :class:`PreparedBatch`, what its pre-processing step hands to the network."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from acfd.data.formats import ImageRecord
from acfd.predict.inputs import ImageInput, as_rgb_array
from acfd.predict.scales import Scale
from acfd.predict.visualize import DEFAULT_COLOR, draw_detections

if TYPE_CHECKING:  # pragma: no cover
    import torch


def frame_key(key: str, frame_index: int) -> str:
    """The name of a video frame in every output: ``clip.mp4#frame=000120``."""
    return f"{key}#frame={frame_index:06d}"


@dataclass
class Detections:
    """The faces found in one image.

    Args:
        boxes: ``(N, 4)`` float32 x1, y1, x2, y2 in the original image's pixels.
        scores: ``(N,)`` float32 confidences, descending.
        image_size: ``(height, width)`` of the original image.
        source: the file the image came from, if any.
        frame_index: the frame number for video frames.
        timestamp: the frame time in seconds for video frames.
    """

    boxes: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    source: str | None = None
    frame_index: int | None = None
    timestamp: float | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.boxes) != len(self.scores):
            raise ValueError(f"{len(self.scores)} scores for {len(self.boxes)} boxes")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def draw(
        self,
        image: ImageInput,
        color: tuple[int, int, int] | str = DEFAULT_COLOR,
        thickness: int | None = None,
        show_scores: bool = True,
        bgr: bool = False,
    ) -> np.ndarray:
        """Return a copy of ``image`` with the boxes (and scores) drawn.

        Args:
            image: the image these detections belong to (any input :class:`Detector` accepts).
            color: RGB box colour or a colour name.
            thickness: line width; ``None`` scales it with the image size.
            show_scores: write each score above its box.
            bgr: ``image`` is a BGR array (OpenCV); the result is then BGR too.

        Raises:
            ValueError: the image size differs from :attr:`image_size`.
        """
        rgb = as_rgb_array(image, bgr=bgr)
        if rgb.shape[:2] != self.image_size:
            raise ValueError(
                f"image is {rgb.shape[0]}x{rgb.shape[1]} (HxW) but these detections are for "
                f"{self.image_size[0]}x{self.image_size[1]}"
            )
        out = draw_detections(
            rgb, self.boxes, self.scores if show_scores else None, color=color, thickness=thickness
        )
        return np.ascontiguousarray(out[..., ::-1]) if bgr else out

    def to_record(self, filename: str | None = None) -> ImageRecord:
        """An :class:`~acfd.data.formats.ImageRecord` (for the CSV / COCO writers and evaluation).

        Args:
            filename: the record key; defaults to :meth:`default_name` (the source's file name).

        Raises:
            ValueError: no ``filename`` and no :attr:`source`.
        """
        if filename is None:
            if self.source is None:
                raise ValueError("to_record() needs a filename for detections without a source")
            filename = self.default_name()
        h, w = self.image_size
        return ImageRecord(
            filename=filename, boxes=self.boxes.copy(), scores=self.scores.copy(), width=w, height=h
        )

    def default_name(self) -> str | None:
        """The source's file name, with ``#frame=000120`` for a video frame (``None`` without source)."""
        if self.source is None:
            return None
        name = Path(self.source).name
        return name if self.frame_index is None else frame_key(name, self.frame_index)

    def to_dict(self, filename: str | None = None, decimals: int = 2) -> dict[str, Any]:
        """A JSON-friendly dict: ``file, width, height, detections [{box, score}], frame, timestamp``.

        Args:
            filename: the ``file`` value; defaults to :attr:`source` (with ``#frame=...`` for frames).
            decimals: rounding of box coordinates.
        """
        h, w = self.image_size
        return {
            "file": filename if filename is not None else (
                self.source if self.frame_index is None or self.source is None
                else frame_key(self.source, self.frame_index)
            ),
            "width": w,
            "height": h,
            "detections": [
                {"box": [round(float(v), decimals) for v in box], "score": round(float(s), 6)}
                for box, s in zip(self.boxes, self.scores)
            ],
            "frame": self.frame_index,
            "timestamp": None if self.timestamp is None else round(float(self.timestamp), 6),
        }


@dataclass
class Timings:
    """Accumulated wall-clock seconds per inference step (CUDA is synchronised at each step)."""

    load: float = 0.0
    preprocess: float = 0.0
    forward: float = 0.0
    postprocess: float = 0.0
    verify: float = 0.0
    images: int = 0
    batches: int = 0

    @contextlib.contextmanager
    def timed(self, step: str, synchronize: Callable[[], Any] | None = None) -> Iterator[None]:
        """Add the time the block takes to ``step`` (after ``synchronize()``, e.g. CUDA's, at its end)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if synchronize is not None:
                synchronize()
            setattr(self, step, getattr(self, step) + time.perf_counter() - start)

    def reset(self) -> None:
        """Zero every counter."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, type(getattr(self, f.name))(0))

    def add(self, other: Timings) -> None:
        """Add ``other``'s counters to these (e.g. a worker's, after it ran)."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def per_image_ms(self) -> dict[str, float]:
        """Mean milliseconds per image of each step (0 before any image)."""
        n = max(self.images, 1)
        return {k: 1000.0 * getattr(self, k) / n for k in ("load", "preprocess", "forward", "postprocess", "verify")}


@dataclass
class PreparedBatch:
    """The output of :meth:`Detector.preprocess <acfd.predict.detector.Detector.preprocess>`.

    Args:
        tensor: ``(B, 3, Hp, Wp)`` normalised float input, padded bottom/right to the size divisor.
        input_sizes: ``(h, w)`` of each resized image inside ``tensor`` (before padding).
        original_sizes: ``(h, w)`` of each original image.
        scale: the test scale it was resized to (its :attr:`Scale.max_box` applies in
            :meth:`Detector.postprocess`).
    """

    tensor: torch.Tensor
    input_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    scale: Scale | None = None


__all__ = ["Detections", "PreparedBatch", "Timings", "frame_key"]
