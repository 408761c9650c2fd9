"""Decoding an uploaded image in memory, with the service's limits and 4xx errors.

Same conversions as :func:`acfd.data.image_io.load_image` (EXIF orientation, any colour mode to RGB,
transparency on white; shared through :func:`~acfd.data.image_io.pil_to_rgb`), but from bytes and
with the pixel limit checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from acfd.data.image_io import pil_to_rgb
from acfd.serve.errors import ServiceError


def decode_upload(data: bytes, max_pixels: int, name: str = "upload") -> np.ndarray:
    """Decode image bytes to ``(H, W, 3)`` uint8 RGB.

    Args:
        data: the uploaded file.
        max_pixels: refuse images larger than this (413), from the header.
        name: the file name for messages.

    Raises:
        ServiceError: 400 empty, 415 not an image, 413 too many pixels, 422 truncated/corrupt.
    """
    if not data:
        raise ServiceError(400, f"{name}: empty upload (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ServiceError(415, f"{name}: not an image or an unsupported image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ServiceError(413, f"{name}: image too large ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - PIL plugins raise many types on bad headers
        raise ServiceError(422, f"{name}: corrupt image header ({type(exc).__name__}: {exc})") from exc
    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ServiceError(422, f"{name}: invalid image size {width}x{height}")
        if width * height > max_pixels:
            raise ServiceError(
                413, f"{name}: too many pixels: {width}x{height} = {width * height:,} > limit {max_pixels:,}"
            )
        try:
            im.load()  # the full decode: truncation and corruption surface here
        except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error...
            raise ServiceError(422, f"{name}: truncated or corrupt image data ({exc or type(exc).__name__})") from exc
        try:
            return pil_to_rgb(im)
        except ValueError as exc:
            raise ServiceError(415, f"{name}: {exc}") from exc
