"""Drawing detections on images (torchvision's ``draw_bounding_boxes``) and saving them atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from acfd.utils import atomic_path

logger = logging.getLogger(__name__)

#: Default box colour (RGB): a green that stands out on most cartoon palettes.
DEFAULT_COLOR: tuple[int, int, int] = (0, 255, 0)


def default_thickness(height: int, width: int) -> int:
    """A line width that stays visible on large images: 0.3 % of the longer side, at least 2 px.

    Args:
        height: image height in pixels.
        width: image width in pixels.
    """
    return max(2, round(0.003 * max(height, width)))


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray | torch.Tensor,
    scores: np.ndarray | torch.Tensor | None = None,
    color: tuple[int, int, int] | str = DEFAULT_COLOR,
    thickness: int | None = None,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` with ``boxes`` drawn (and their scores as labels).

    Args:
        image: ``(H, W, 3)`` uint8 RGB array.
        boxes: ``(N, 4)`` x1, y1, x2, y2 in the image's pixels.
        scores: ``(N,)`` confidences written above each box as ``0.97``; ``None`` for no labels.
        color: RGB tuple or a colour name PIL knows.
        thickness: line width in pixels; ``None`` picks :func:`default_thickness`.
        labels: explicit label strings (override ``scores``).

    Raises:
        ValueError: ``image`` is not ``(H, W, 3)`` uint8 or ``boxes`` is not ``(N, 4)``.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an (H, W, 3) RGB image array, got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    box_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    if len(box_t) == 0:
        return image.copy()
    h, w = image.shape[:2]
    # Clip and make sure x1 <= x2, y1 <= y2 (draw_bounding_boxes refuses anything else).
    box_t[:, 0::2] = box_t[:, 0::2].clamp(0, w - 1)
    box_t[:, 1::2] = box_t[:, 1::2].clamp(0, h - 1)
    box_t[:, 2:] = torch.maximum(box_t[:, 2:], box_t[:, :2])
    if labels is None and scores is not None:
        labels = [f"{float(s):.2f}" for s in np.asarray(scores).reshape(-1)]
    width = thickness if thickness is not None else default_thickness(h, w)
    chw = torch.from_numpy(np.array(image, dtype=np.uint8, order="C")).permute(2, 0, 1)
    drawn = draw_bounding_boxes(
        chw, box_t.round(), labels=list(labels) if labels is not None else None, colors=color, width=width
    )
    return np.ascontiguousarray(drawn.permute(1, 2, 0).numpy())


def save_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 92) -> Path:
    """Write an RGB image atomically; the format follows the suffix (``.jpg`` / ``.png`` ...).

    Args:
        path: output file; parent folders are created.
        image: ``(H, W, 3)`` uint8 RGB array.
        quality: JPEG quality.

    Raises:
        ValueError: OpenCV cannot encode to that suffix.
    """
    target = Path(path)
    suffix = target.suffix.lower() or ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"{target}: cannot encode an image as {suffix}")
    with atomic_path(target) as tmp:
        tmp.write_bytes(buf.tobytes())
    return target
