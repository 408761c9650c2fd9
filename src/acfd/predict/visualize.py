"""Drawing detections on images (Pillow's ``ImageDraw``, as torchvision's ``draw_bounding_boxes``
does, without importing torch) and saving them atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

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


def default_font_size(height: int, width: int) -> int:
    """Label text height: 2.5 % of the longer side, at least 12 px (readable on saved images)."""
    return max(12, round(0.025 * max(height, width)))


def _draw_labels(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str], color: tuple[int, int, int] | str,
                 font_size: int) -> np.ndarray:
    """Write each label on a filled tab above its box (inside it at the top edge), in place."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    try:
        font = ImageFont.load_default(size=font_size)  # FreeType builds: a scalable font
    except TypeError:  # pragma: no cover - Pillow < 10.1 has only the small bitmap font
        font = ImageFont.load_default()
    fill = ImageColor.getrgb(color) if isinstance(color, str) else tuple(color)
    text_color = (0, 0, 0) if sum(fill[:3]) > 382 else (255, 255, 255)
    for (x1, y1, _, _), text in zip(boxes.tolist(), labels):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 4
        y = y1 - th if y1 - th >= 0 else y1
        draw.rectangle((x1, y, x1 + tw, y + th), fill=fill)
        draw.text((x1 + 2 - left, y + 2 - top), text, fill=text_color, font=font)
    return np.asarray(pil)


def draw_detections(
    image: np.ndarray,
    boxes: Any,
    scores: Any = None,
    color: tuple[int, int, int] | str = DEFAULT_COLOR,
    thickness: int | None = None,
    labels: Sequence[str] | None = None,
    font_size: int | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` with ``boxes`` drawn (and their scores as labels).

    Args:
        image: ``(H, W, 3)`` uint8 RGB array.
        boxes: ``(N, 4)`` x1, y1, x2, y2 in the image's pixels.
        scores: ``(N,)`` confidences written above each box as ``0.97``; ``None`` for no labels.
        color: RGB tuple or a colour name PIL knows.
        thickness: line width in pixels; ``None`` picks :func:`default_thickness`.
        labels: explicit label strings (override ``scores``).
        font_size: label text size in pixels; ``None`` picks :func:`default_font_size`.

    ``boxes`` and ``scores`` are never modified (the clipping for drawing works on a copy).

    Raises:
        ValueError: ``image`` is not ``(H, W, 3)`` uint8, ``boxes`` is not ``(N, 4)``, or
            ``thickness`` / ``font_size`` is below 1.
    """
    if thickness is not None and int(thickness) < 1:
        raise ValueError(f"thickness must be >= 1 pixel, got {thickness}")
    if font_size is not None and int(font_size) < 1:
        raise ValueError(f"font_size must be >= 1 pixel, got {font_size}")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an (H, W, 3) RGB image array, got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    # a copy: the clipping below must not change the caller's results (Detections.boxes)
    box_t = np.array(np.asarray(boxes, dtype=np.float32), dtype=np.float32).reshape(-1, 4)
    if len(box_t) == 0:
        return image.copy()
    h, w = image.shape[:2]
    # Clip and make sure x1 <= x2, y1 <= y2 (Pillow refuses anything else).
    box_t[:, 0::2] = box_t[:, 0::2].clip(0, w - 1)
    box_t[:, 1::2] = box_t[:, 1::2].clip(0, h - 1)
    box_t[:, 2:] = np.maximum(box_t[:, 2:], box_t[:, :2])
    box_t = np.round(box_t)
    if labels is None and scores is not None:
        labels = [f"{float(s):.2f}" for s in np.asarray(scores).reshape(-1)]
    width = thickness if thickness is not None else default_thickness(h, w)
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(pil)
    outline = ImageColor.getrgb(color) if isinstance(color, str) else tuple(int(c) for c in color)
    for x1, y1, x2, y2 in box_t.astype(np.int64).tolist():
        draw.rectangle((x1, y1, x2, y2), width=int(width), outline=outline)
    out = np.array(pil)
    if labels is not None:
        size = font_size if font_size is not None else default_font_size(h, w)
        out = np.array(_draw_labels(out, box_t, list(labels), color, int(size)))
    return out


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
