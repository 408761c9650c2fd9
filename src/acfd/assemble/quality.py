"""Crop quality filters of the assembling pipeline (arXiv recognition paper, "Detection and remove
duplication": crops with a Laplacian sharpness below 30 or a resolution below 100 are thrown away;
"Statistics": the sharpness is measured on the image resized to 256 x 256)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from acfd.recognition.crops import enlarged_box


def laplacian_variance(image: np.ndarray, size: int = 256) -> float:
    """Sharpness: the variance of the Laplacian of the grey image resized to ``size x size``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey).
        size: the side it is resized to first (the paper's 256).
    """
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if grey.shape[:2] != (size, size):
        grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def crop_resolution(box: Sequence[float], enlarge_rate: float) -> tuple[int, int]:
    """``(width, height)`` in source pixels of the enlarged crop window of a face box."""
    x1, y1, x2, y2 = enlarged_box(box, enlarge_rate)
    return int(round(x2 - x1)), int(round(y2 - y1))


def quality_verdict(
    resolution: tuple[int, int], sharpness: float, min_resolution: int, blur_thr: float
) -> str:
    """``"kept"``, ``"small"`` (shorter side below ``min_resolution``) or ``"blurred"``."""
    if min(resolution) < min_resolution:
        return "small"
    if sharpness < blur_thr:
        return "blurred"
    return "kept"
