"""Opening and decoding an upload with :mod:`acfd.data.image_io` (the same conversions and pixel limit
as ``acfd detect``), each failure as the service's 4xx error.

Two steps, so that the service can take the image's pixels from its budget between them: the header
(size, how much a JPEG can be reduced) first, then the pixels.
"""

from __future__ import annotations

from acfd.data.image_io import (
    CorruptImageError,
    DecodedImage,
    EmptyImageError,
    ImageReadError,
    NotAnImageError,
    OpenedImage,
    TooManyPixelsError,
    open_image,
)
from acfd.serve.errors import ServiceError

_STATUS: tuple[tuple[type[ImageReadError], int], ...] = (
    (EmptyImageError, 400),
    (NotAnImageError, 415),
    (TooManyPixelsError, 413),
    (CorruptImageError, 422),
)


def as_service_error(exc: ImageReadError) -> ServiceError:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 422)
    return ServiceError(status, str(exc))


def open_upload(data: bytes, name: str = "upload") -> OpenedImage:
    """The upload's header (no pixel decoded). Raises :class:`ServiceError` (400, 415, 422)."""
    try:
        return open_image(data, name=name)
    except ImageReadError as exc:
        raise as_service_error(exc) from exc


def check_pixels(opened: OpenedImage, max_pixels: int, min_long_side: int | None) -> int:
    """The pixels :func:`decode_opened` will decode. Raises :class:`ServiceError` 413 over ``max_pixels``."""
    try:
        opened.check_pixels(max_pixels, min_long_side)
    except ImageReadError as exc:
        raise as_service_error(exc) from exc
    return opened.decoded_pixels(min_long_side)


def decode_opened(opened: OpenedImage, max_pixels: int, min_long_side: int | None) -> DecodedImage:
    """Decode the pixels, a JPEG reduced while its longer side stays >= ``min_long_side``.

    Raises:
        ServiceError: 413 too many pixels, 415 unsupported colour mode, 422 truncated or corrupt.
    """
    try:
        return opened.decode(max_pixels, min_long_side)
    except ImageReadError as exc:
        raise as_service_error(exc) from exc
