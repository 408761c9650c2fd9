"""Robust image decoding: any image file PIL can read -> ``(H, W, 3)`` uint8 RGB, or a clear error.

Every failure raises :class:`ImageReadError` (a ``ValueError``) whose message is one line naming the
file and the reason, so a batch can log it and go on with the other files. Its subclasses say which
kind of failure it was (empty, not an image, too many pixels, corrupt), for callers that answer
each kind differently (the HTTP service's 4xx codes).

Conversions done by :func:`load_image` and :func:`decode_image`:

- EXIF orientation is applied (``ImageOps.exif_transpose``), so the array is what a viewer shows.
- Grayscale (``1``, ``L``), palette (``P``), ``CMYK``, ``YCbCr``... are converted to RGB by PIL.
- Transparency (``RGBA``, ``LA``, ``PA``, palette with a transparent colour) is composited onto a
  **white** background: transparent pixels often hold arbitrary colours, and cartoon artwork is
  usually drawn on white.
- 16-bit (``I;16*``) and 32-bit integer (``I``) images are scaled from 0..65535 to 0..255
  (``round(v / 257)``), not clipped; float (``F``) images in 0..1 are scaled by 255, others are
  min-max scaled.
- Multi-frame files (GIF, TIFF) give their first frame.

**Memory.** One pixel limit, :data:`DEFAULT_MAX_PIXELS`, sized to this machine's memory (one decode
may use at most 1/16 of it), is the default of every reader here (``acfd detect``, ``acfd serve``,
the datasets). It is checked from the header before any pixel is decoded; PIL's own
decompression-bomb guard is bypassed (thread-safely) so that it is the only limit. The conversion to
a numpy array goes in strips of rows, so a decode holds PIL's pixels plus the array and little more
(:data:`DECODE_BYTES_PER_PIXEL`). A JPEG larger than needed is decoded reduced by libjpeg (PIL's
``draft``: 1/2, 1/4 or 1/8 of each side) when the caller says how large it must stay
(``min_long_side``); :class:`DecodedImage` then records the reduction, to map coordinates back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from acfd.utils import FileReadError

logger = logging.getLogger(__name__)

#: Lower-case file suffixes treated as images when scanning folders.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)

#: Peak bytes per decoded pixel while decoding (PIL keeps RGB as 4 bytes a pixel, the array takes 3,
#: plus a strip and allocator slack); measured on a 14000x14000 PNG and a 6300x6300 JPEG.
DECODE_BYTES_PER_PIXEL = 8
#: One decode may use at most this share of the machine's memory.
DECODE_MEMORY_SHARE = 1 / 16
#: The pixel limit never goes below this (a 16 MP photo loads on a small machine) nor above the
#: ceiling (a 1-gigapixel decode is a bomb whatever the memory).
MIN_PIXEL_LIMIT = 16_000_000
MAX_PIXEL_LIMIT = 1_000_000_000
# Rows are converted to the array in strips of about this many pixels.
_STRIP_PIXELS = 1 << 22


def machine_memory_bytes() -> int:
    """Physical memory, or the control group's memory limit when that is lower (containers)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
        total = 8 << 30
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def pixel_limit_for(memory_bytes: int) -> int:
    """The pixel limit for a machine with ``memory_bytes`` of memory (see :data:`DEFAULT_MAX_PIXELS`)."""
    limit = int(memory_bytes * DECODE_MEMORY_SHARE / DECODE_BYTES_PER_PIXEL)
    return max(MIN_PIXEL_LIMIT, min(MAX_PIXEL_LIMIT, limit))


#: The default pixel limit of every decode: 1/16 of this machine's memory at
#: :data:`DECODE_BYTES_PER_PIXEL` (24 GiB: about 200 MP, a 14000x14000 image).
DEFAULT_MAX_PIXELS = pixel_limit_for(machine_memory_bytes())

# PIL's bomb limit is a module global: change it under a lock, only around Image.open.
_PIL_LIMIT_LOCK = threading.Lock()

# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


class ImageReadError(FileReadError):
    """An image file could not be read; ``str(err)`` is ``"<path>: <reason>"``."""


class EmptyImageError(ImageReadError):
    """The file or upload has no bytes."""


class NotAnImageError(ImageReadError):
    """Not an image, an unsupported format, or a colour mode that cannot become RGB."""


class TooManyPixelsError(ImageReadError):
    """The image would decode to more pixels than the limit (found from its header)."""


class CorruptImageError(ImageReadError):
    """A corrupt or truncated header or pixel data."""


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
        raise EmptyImageError(path, "empty file (0 bytes)")


def _open(source: Path | bytes, name: str | Path) -> Image.Image:
    """Open a file or in-memory bytes lazily (header only) with clear errors."""
    if isinstance(source, bytes):
        if not source:
            raise EmptyImageError(name, "empty upload (0 bytes)")
        fp: Path | io.BytesIO = io.BytesIO(source)
    else:
        _check_path(source)
        fp = source
    try:
        with _no_pil_bomb_limit():
            return Image.open(fp)
    except UnidentifiedImageError as exc:
        raise NotAnImageError(name, "not an image or unsupported image format") from exc
    except PermissionError as exc:
        raise ImageReadError(name, "permission denied") from exc
    except OSError as exc:  # PIL raises OSError for headers cut short ("Truncated File Read")
        raise CorruptImageError(name, f"truncated or corrupt image header ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - PIL plugins raise many types on bad headers
        raise CorruptImageError(name, f"corrupt image header ({type(exc).__name__}: {exc})") from exc


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
    im = _open(p, p)
    with im:
        return _oriented_size(im)


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _float_to_rgb(im: Image.Image) -> np.ndarray:
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


def _strip_to_rgb(im: Image.Image, transparent: bool) -> np.ndarray:
    """A decoded image (or a strip of one) of any mode but ``F`` as ``(h, w, 3)`` uint8 RGB."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.clip(np.asarray(im, dtype=np.float64), 0.0, 65535.0)
        gray = np.rint(a / 257.0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA") if transparent else im.convert("RGB")
        mode = im.mode
    elif mode == "L" and transparent:
        im = im.convert("RGBA")  # tRNS chunk on a grayscale PNG
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = _composite_on_white(im)
    elif mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to ``(H, W, 3)`` uint8 RGB.

    Converted in strips of rows into one preallocated array, so the peak memory is PIL's pixels
    plus the array (a whole-image conversion would hold one or two more full-size copies).
    """
    if im.mode == "F":  # min-max scaling needs the whole image; float images are rare and small
        return _float_to_rgb(im)
    transparent = "transparency" in im.info
    w, h = im.size
    out = np.empty((h, w, 3), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    if rows >= h:
        out[:] = _strip_to_rgb(im, transparent)
        return out
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        out[top:bottom] = _strip_to_rgb(im.crop((0, top, w, bottom)), transparent)
    return out


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


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded to RGB, perhaps reduced.

    Attributes:
        array: ``(h, w, 3)`` uint8 RGB, as a viewer shows it (EXIF orientation applied).
        size: ``(width, height)`` of the full image, as a viewer shows it.
        reduction: each side of ``array`` is the full side divided by this (1: not reduced; 2, 4
            or 8 for a JPEG decoded reduced). A coordinate in ``array`` times ``reduction`` is the
            same place in the full image.
    """

    array: np.ndarray
    size: tuple[int, int]
    reduction: int = 1


class OpenedImage:
    """An image opened from its header: its size is known, no pixel is decoded yet.

    Use as a context manager (or call :meth:`close`); :func:`open_image` makes one.
    """

    def __init__(self, im: Image.Image, name: str | os.PathLike[str]) -> None:
        self._im = im
        self.name = str(name)
        self.size = _oriented_size(im)
        if self.size[0] <= 0 or self.size[1] <= 0:
            im.close()
            raise CorruptImageError(name, f"invalid image size {self.size[0]}x{self.size[1]}")

    def __enter__(self) -> OpenedImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._im.close()

    @property
    def format(self) -> str | None:
        return self._im.format

    def reduction_for(self, min_long_side: int | None) -> int:
        """The largest JPEG reduction (1, 2, 4 or 8) that keeps the longer side >= ``min_long_side``
        (1 for other formats, or when ``min_long_side`` is ``None``)."""
        if min_long_side is None or self._im.format != "JPEG" or len(getattr(self._im, "tile", ())) != 1:
            return 1
        long_side, short_side = max(self.size), min(self.size)
        for reduction in (8, 4, 2):
            if -(-long_side // reduction) >= min_long_side and short_side >= reduction:
                return reduction
        return 1

    def decoded_size(self, min_long_side: int | None = None) -> tuple[int, int]:
        """``(width, height)`` that :meth:`decode` gives for this ``min_long_side``."""
        r = self.reduction_for(min_long_side)
        return -(-self.size[0] // r), -(-self.size[1] // r)

    def decoded_pixels(self, min_long_side: int | None = None) -> int:
        w, h = self.decoded_size(min_long_side)
        return w * h

    def check_pixels(self, max_pixels: int | None, min_long_side: int | None = None) -> None:
        """Raise :class:`TooManyPixelsError` if :meth:`decode` would decode more than ``max_pixels``."""
        w, h = self.decoded_size(min_long_side)
        if max_pixels is not None and w * h > max_pixels:
            raise TooManyPixelsError(
                self.name, f"too many pixels: {w}x{h} = {w * h:,} > limit {max_pixels:,} (max_pixels)"
            )

    def decode(self, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_long_side: int | None = None) -> DecodedImage:
        """Decode the pixels (see the module docstring).

        Args:
            max_pixels: refuse to decode more pixels than this (``None``: no limit).
            min_long_side: decode a JPEG reduced as long as its longer side stays at least this.

        Raises:
            ImageReadError: too many pixels, truncated or corrupt data, unsupported colour mode.
        """
        im, name = self._im, self.name
        self.check_pixels(max_pixels, min_long_side)
        reduction = self.reduction_for(min_long_side)
        if reduction > 1:
            # PIL picks the largest reduction whose result is at least the size asked for
            im.draft(None, (im.size[0] // reduction, im.size[1] // reduction))
        try:
            im.load()  # full decode now: truncation and corruption surface here
        except MemoryError as exc:
            raise ImageReadError(name, f"out of memory decoding {im.size[0]}x{im.size[1]}") from exc
        except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error...
            msg = str(exc) or type(exc).__name__
            raise CorruptImageError(name, f"truncated or corrupt image data ({msg})") from exc
        oriented = im
        try:
            # in place: no second full-size copy; without an orientation tag nothing is copied
            ImageOps.exif_transpose(im, in_place=True)
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block should not lose the image
            logger.warning("%s: ignoring unreadable EXIF orientation (%s)", name, exc)
        try:
            array = _to_rgb_array(oriented)
        except (ValueError, OSError) as exc:
            raise NotAnImageError(name, f"unsupported colour mode {oriented.mode!r} ({exc})") from exc
        return DecodedImage(array, self.size, reduction)


def open_image(source: str | os.PathLike[str] | bytes, name: str | os.PathLike[str] | None = None) -> OpenedImage:
    """Open an image file, or image bytes held in memory, from its header only.

    Args:
        source: a path, or the file's bytes (an upload).
        name: what error messages call it (default: the path, or ``"upload"`` for bytes).

    Raises:
        ImageReadError: missing path, directory, empty, not an image, or a corrupt header.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        label: str | os.PathLike[str] = "upload" if name is None else name
        return OpenedImage(_open(data, label), label)
    path = Path(source)
    return OpenedImage(_open(path, path if name is None else name), path if name is None else name)


def decode_image(
    source: str | os.PathLike[str] | bytes,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_long_side: int | None = None,
    name: str | os.PathLike[str] | None = None,
) -> DecodedImage:
    """Decode an image file or image bytes to RGB, a JPEG perhaps reduced (see :class:`DecodedImage`).

    Args:
        source: a path, or the file's bytes.
        max_pixels: refuse images that would decode to more pixels (from the header, before
            decoding); ``None`` for no limit.
        min_long_side: decode a JPEG reduced (1/2, 1/4, 1/8 of each side) as long as its longer side
            stays at least this; ``None`` decodes every pixel.
        name: what error messages call it.

    Raises:
        ImageReadError: see :func:`load_image`; the subclass says which kind.
    """
    with open_image(source, name) as opened:
        return opened.decode(max_pixels, min_long_side)


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
    return decode_image(path, max_pixels).array
