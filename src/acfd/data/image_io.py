"""Robust image decoding: any image file PIL can read -> ``(H, W, 3)`` uint8 RGB, or a clear error.

Every failure raises :class:`ImageReadError` (a ``ValueError``) whose message is one line naming the
file and the reason, so a batch can log it and go on with the other files.

Conversions done by :func:`load_image`:

- EXIF orientation is applied (``ImageOps.exif_transpose``), so the array is what a viewer shows.
- Grayscale (``1``, ``L``), palette (``P``), ``CMYK``, ``YCbCr``... are converted to RGB by PIL.
- Transparency (``RGBA``, ``LA``, ``PA``, palette with a transparent colour) is composited onto a
  **white** background: transparent pixels often hold arbitrary colours, and cartoon artwork is
  usually drawn on white.
- 16-bit (``I;16*``) and 32-bit integer (``I``) images are scaled from 0..65535 to 0..255
  (``round(v / 257)``), not clipped; float (``F``) images in 0..1 are scaled by 255, others are
  min-max scaled.
- Multi-frame files (GIF, TIFF) give their first frame.

The pixel limit is checked from the header before any decoding; PIL's own decompression-bomb guard
is bypassed (thread-safely) so that ``max_pixels`` is the only limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from acfd.utils import FileReadError

logger = logging.getLogger(__name__)

#: Lower-case file suffixes treated as images when scanning folders.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)

#: Default pixel limit of :func:`load_image` (200 MP: a 12000x9000 image loads, bombs do not).
DEFAULT_MAX_PIXELS = 200_000_000

# PIL's bomb limit is a module global: change it under a lock, only around Image.open.
_PIL_LIMIT_LOCK = threading.Lock()

# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


class ImageReadError(FileReadError):
    """An image file could not be read; ``str(err)`` is ``"<path>: <reason>"``."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like an image by its name (suffix in :data:`IMAGE_EXTENSIONS`).

    Hidden files (name starting with ``.``, such as macOS ``._x.jpg`` resource forks) are not
    images. The file is not opened.

    Args:
        path: file name or path.
    """
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


@contextlib.contextmanager
def _no_pil_bomb_limit() -> Iterator[None]:
    """Disable PIL's decompression-bomb check (we check ``max_pixels`` ourselves)."""
    with _PIL_LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _check_path(path: Path) -> None:
    """Raise :class:`ImageReadError` for a missing path, a directory or an empty file."""
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")


def _open(path: Path) -> Image.Image:
    """Open ``path`` lazily (header only) with clear errors."""
    _check_path(path)
    try:
        with _no_pil_bomb_limit():
            return Image.open(path)
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not an image or unsupported image format") from exc
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied") from exc
    except OSError as exc:  # PIL raises OSError for headers cut short ("Truncated File Read")
        raise ImageReadError(path, f"truncated or corrupt image header ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - PIL plugins raise many types on bad headers
        raise ImageReadError(path, f"corrupt image header ({type(exc).__name__}: {exc})") from exc


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` after applying the EXIF orientation, from the header only."""
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - broken EXIF: the image itself may still be fine
        return w, h
    return (h, w) if orientation in _SWAPPING_ORIENTATIONS else (w, h)


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Read ``(width, height)`` of an image from its header, without decoding the pixels.

    The EXIF orientation is taken into account, so the size matches :func:`load_image`'s array.

    Args:
        path: image file.

    Raises:
        ImageReadError: missing, empty, not an image, or a corrupt header.
    """
    p = Path(path)
    im = _open(p)
    with im:
        return _oriented_size(im)


def _check_pixels(path: Path, im: Image.Image, max_pixels: int | None) -> None:
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageReadError(path, f"invalid image size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageReadError(
            path, f"too many pixels: {w}x{h} = {w * h:,} > limit {max_pixels:,} (max_pixels)"
        )


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to ``(H, W, 3)`` uint8 RGB."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(a, 0.0, 65535.0)
        gray = np.rint(a / 257.0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            a = a * 255.0
        elif hi > lo:
            a = (a - lo) / (hi - lo) * 255.0
        else:
            a = np.zeros_like(a)
        gray = np.rint(np.clip(a, 0, 255)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    elif mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")  # tRNS chunk on a grayscale PNG
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = _composite_on_white(im)
    elif mode != "RGB":
        im = im.convert("RGB")
    arr = np.asarray(im, dtype=np.uint8)
    return np.ascontiguousarray(arr)


def pil_to_rgb(im: Image.Image, exif_transpose: bool = True) -> np.ndarray:
    """Convert an already opened PIL image to ``(H, W, 3)`` uint8 RGB, as :func:`load_image` does.

    Args:
        im: a PIL image of any mode.
        exif_transpose: apply the EXIF orientation first.

    Raises:
        ValueError: the colour mode cannot be converted.
    """
    if exif_transpose:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block should not lose the image
            logger.warning("ignoring unreadable EXIF orientation (%s)", exc)
    try:
        return _to_rgb_array(im)
    except OSError as exc:
        raise ValueError(f"unsupported colour mode {im.mode!r} ({exc})") from exc


def load_image(
    path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` uint8 RGB array (see the module docstring).

    Args:
        path: image file.
        max_pixels: refuse images with more than this many pixels (checked from the header,
            before decoding); ``None`` for no limit.

    Raises:
        ImageReadError: missing path, directory, empty file, not an image, unsupported format,
            truncated or corrupt data, unsupported colour mode, or too many pixels.
    """
    p = Path(path)
    im = _open(p)
    with im:
        _check_pixels(p, im, max_pixels)
        try:
            im.load()  # full decode now: truncation and corruption surface here
        except MemoryError as exc:
            raise ImageReadError(p, f"out of memory decoding {im.size[0]}x{im.size[1]}") from exc
        except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error...
            msg = str(exc) or type(exc).__name__
            raise ImageReadError(p, f"truncated or corrupt image data ({msg})") from exc
        try:
            oriented = ImageOps.exif_transpose(im)
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block should not lose the image
            logger.warning("%s: ignoring unreadable EXIF orientation (%s)", p, exc)
            oriented = im
        try:
            return _to_rgb_array(oriented)
        except (ValueError, OSError) as exc:
            raise ImageReadError(p, f"unsupported colour mode {oriented.mode!r} ({exc})") from exc
