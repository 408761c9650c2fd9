"""Face crops with the papers' *enlarged rate* (arXiv "Enlarged rates", MM'20 section 5.1).

With enlarged rate ``r`` the crop is ``(1 + r)`` times the face box's width and height, centred on
the box: ``r = 1.0`` (the papers' default) gives a crop twice the face's size, which keeps the hair,
the most telling cue of a cartoon character. Parts of the crop outside the image are padded with a
constant colour, then the crop is resized (not letter-boxed: the papers resize) to a square input.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: Side of the square crops the recognition models take by default (the shipped small model).
DEFAULT_INPUT_SIZE = 64

#: The papers' enlarged rate (arXiv tables 3, MM'20 table 5: larger is better up to 1.0).
DEFAULT_ENLARGE_RATE = 1.0


def enlarged_box(box: Sequence[float], enlarge_rate: float = DEFAULT_ENLARGE_RATE) -> tuple[float, float, float, float]:
    """The crop window ``(x1, y1, x2, y2)`` of a face box for enlarged rate ``r`` (may leave the image).

    Raises:
        ValueError: a box that is not 4 finite numbers with x2 > x1 and y2 > y1, or ``r < 0``.
    """
    if len(box) != 4:
        raise ValueError(f"a face box has 4 numbers (x1, y1, x2, y2), got {len(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])):
        raise ValueError(f"face box {box!r} has a non-finite coordinate")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"face box {box!r} is empty (needs x2 > x1 and y2 > y1)")
    if not np.isfinite(enlarge_rate) or enlarge_rate < 0:
        raise ValueError(f"enlarge_rate must be >= 0, got {enlarge_rate}")
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    half_w, half_h = (1.0 + enlarge_rate) * (x2 - x1) / 2.0, (1.0 + enlarge_rate) * (y2 - y1) / 2.0
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def crop_face(
    image: np.ndarray,
    box: Sequence[float],
    enlarge_rate: float = DEFAULT_ENLARGE_RATE,
    size: int = DEFAULT_INPUT_SIZE,
    pad_value: int = 0,
) -> np.ndarray:
    """Cut the enlarged face window out of ``image``, pad it at the border, resize it to ``size``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        box: the face ``(x1, y1, x2, y2)`` in pixels (ground truth or a detection).
        enlarge_rate: the papers' ``r``: the crop is ``(1 + r)`` x the face's width and height.
        size: side of the square output.
        pad_value: grey level of the padding outside the image.

    Returns:
        ``(size, size, 3)`` uint8 RGB.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"crop_face needs an (H, W, 3) uint8 RGB array, got shape {shape}")
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    height, width = image.shape[:2]
    ex1, ey1, ex2, ey2 = enlarged_box(box, enlarge_rate)
    # integer window (at least one pixel), then the part of it inside the image
    x1, y1 = int(np.floor(ex1)), int(np.floor(ey1))
    x2, y2 = max(int(np.ceil(ex2)), x1 + 1), max(int(np.ceil(ey2)), y1 + 1)
    window = np.full((y2 - y1, x2 - x1, 3), pad_value, dtype=np.uint8)
    ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if ix2 > ix1 and iy2 > iy1:
        window[iy1 - y1 : iy2 - y1, ix1 - x1 : ix2 - x1] = image[iy1:iy2, ix1:ix2]
    return resize_square(window, size)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image to ``(size, size, 3)`` (area filter when shrinking)."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    shrinking = image.shape[0] > size or image.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)
