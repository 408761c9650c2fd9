"""What every annotation format reads into and writes from: :class:`ImageRecord` (one image's
boxes), :class:`Problem` (one thing wrong, with its file and line), :class:`AnnotationError`, and
the helpers the format modules share: reading text files, parsing numbers, image sizes (from the
image headers) and clipping boxes to their image, split files."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acfd.data.image_io import ImageReadError, is_image_file, read_image_size

logger = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "error")
FACE_CLASS = "face"


class AnnotationError(ValueError):
    """A whole annotation file (or folder) cannot be read; the message names it."""


@dataclass(eq=False)
class ImageRecord:
    """The boxes of one image.

    Args:
        filename: key as written in the annotation file (a file name, or a relative path).
        boxes: ``(N, 4)`` float32, x1, y1, x2, y2 in pixels (anything array-like is converted).
        scores: ``(N,)`` float32 for predictions, ``None`` for ground truth.
        width: image width in pixels, when known.
        height: image height in pixels, when known.
    """

    filename: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{self.filename}: boxes must have shape (N, 4), got {boxes.shape}")
        self.boxes = boxes
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
            if scores.shape[0] != boxes.shape[0]:
                raise ValueError(
                    f"{self.filename}: {scores.shape[0]} scores for {boxes.shape[0]} boxes"
                )
            self.scores = scores

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageRecord):
            return NotImplemented
        if (self.scores is None) != (other.scores is None):
            return False
        return (
            self.filename == other.filename
            and self.width == other.width
            and self.height == other.height
            and np.array_equal(self.boxes, other.boxes)
            and (self.scores is None or np.array_equal(self.scores, other.scores))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable


@dataclass
class Problem:
    """One thing wrong with a dataset.

    Args:
        file: the file concerned (annotation file, image, split file).
        line: 1-based line in ``file``, or ``None``.
        message: what is wrong and what was done about it.
        severity: ``"info"``, ``"warning"`` (fixed or skipped, run goes on) or ``"error"``.
    """

    file: str
    line: int | None
    message: str
    severity: str = "warning"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.severity}: {self.message}"


Records = dict[str, ImageRecord]



def read_text(path: Path, problems: list[Problem]) -> str:
    """Read a text file (UTF-8, optional BOM; Latin-1 fallback reported)."""
    if not path.exists():
        raise AnnotationError(f"{path}: file not found")
    if path.is_dir():
        raise AnnotationError(f"{path}: is a directory, expected a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append(
            Problem(str(path), None, f"not valid UTF-8 ({exc.reason} at byte {exc.start}); read as Latin-1")
        )
        return data.decode("latin-1")


def parse_float(text: str) -> float | None:
    """A finite float, or ``None``."""
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def records_from_lists(
    boxes: dict[str, list[list[float]]],
    scores: dict[str, list[float]] | None,
    sizes: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> Records:
    out: Records = {}
    for name, bl in boxes.items():
        w, h = (sizes or {}).get(name, (None, None))
        out[name] = ImageRecord(
            filename=name,
            boxes=np.asarray(bl, dtype=np.float32).reshape(-1, 4),
            scores=None if scores is None else np.asarray(scores[name], dtype=np.float32),
            width=w,
            height=h,
        )
    return out


def fmt_coord(v: float) -> str:
    """Coordinates: integers stay integers, others keep 2 decimals."""
    r = round(float(v), 2)
    return str(int(r)) if r == int(r) else f"{r:.2f}".rstrip("0").rstrip(".")


def image_path(images_dir: Path, filename: str) -> Path:
    return images_dir / filename


def find_images(images_dir: str | os.PathLike[str], names: Iterable[str]) -> dict[str, Path]:
    """The image file of each record name under ``images_dir``: ``images_dir / name``, else the one
    image of that file name in its subfolders (``acfd detect DIR`` reads them too; the first in
    sorted order when several share it). Names with no image are left out.

    Args:
        images_dir: the images folder.
        names: record names (file names, or paths relative to ``images_dir``).
    """
    images_dir = Path(images_dir)
    found: dict[str, Path] = {}
    by_name: dict[str, Path] | None = None
    for name in names:
        direct = image_path(images_dir, name)
        if direct.is_file():
            found[name] = direct
            continue
        if by_name is None:  # built once, on the first name not directly there
            by_name = {}
            for p in sorted(images_dir.rglob("*")):
                if is_image_file(p) and p.is_file():
                    by_name.setdefault(p.name, p)
        if Path(name).name in by_name:
            found[name] = by_name[Path(name).name]
    return found


def fill_image_sizes(
    records: Mapping[str, ImageRecord], images_dir: str | os.PathLike[str], only_missing: bool = True,
    paths: Mapping[str, Path] | None = None,
) -> list[Problem]:
    """Set ``width``/``height`` of records from their image headers (no pixel decoding).

    Args:
        records: records to update in place.
        images_dir: folder the record file names are relative to.
        only_missing: keep sizes that are already set.
        paths: the image of each record (e.g. :func:`find_images`); records it leaves out are
            skipped. Default: ``images_dir / filename``.

    Returns:
        One error per missing or unreadable image.
    """
    images_dir = Path(images_dir)
    problems: list[Problem] = []
    for rec in records.values():
        if only_missing and rec.width is not None and rec.height is not None:
            continue
        if paths is not None and rec.filename not in paths:
            continue
        img = paths[rec.filename] if paths is not None else image_path(images_dir, rec.filename)
        try:
            rec.width, rec.height = read_image_size(img)
        except ImageReadError as exc:
            problems.append(Problem(str(img), None, exc.reason, "error"))
    return problems


def clip_to_image(records: Mapping[str, ImageRecord], images_dir: str | os.PathLike[str],
                  paths: Mapping[str, Path] | None = None) -> list[Problem]:
    """Clip boxes to their image, reading only image sizes (headers), and report what changed.

    Boxes that stick out of the image are clipped (one warning per image with the count); boxes
    entirely outside are removed (error). Missing or unreadable images are reported (error) and
    their records are left unchanged. Records get their ``width``/``height`` set.

    Args:
        records: records to update in place.
        images_dir: folder the record file names are relative to.
        paths: the image of each record, as for :func:`fill_image_sizes`.
    """
    images_dir = Path(images_dir)
    problems = fill_image_sizes(records, images_dir, only_missing=False, paths=paths)
    for rec in records.values():
        if rec.width is None or rec.height is None or len(rec) == 0:
            continue
        where = paths[rec.filename] if paths is not None and rec.filename in paths else image_path(images_dir, rec.filename)
        problems.extend(clip_record(rec, str(where)))
    return problems


def clip_record(rec: ImageRecord, where: str) -> list[Problem]:
    """Clip the boxes of one record to its image in place and report what changed.

    Args:
        rec: a record with ``width`` and ``height`` set.
        where: the file name to report problems against (usually the image path).

    Raises:
        ValueError: the record has no size.
    """
    if rec.width is None or rec.height is None:
        raise ValueError(f"{rec.filename}: image size unknown, cannot clip")
    b = rec.boxes
    limits = np.array([rec.width, rec.height, rec.width, rec.height], np.float32)
    clipped = np.clip(b, 0.0, limits)
    changed = np.any(clipped != b, axis=1)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    problems: list[Problem] = []
    n_clipped = int(np.sum(changed & keep))
    n_removed = int(np.sum(~keep))
    size = f"{rec.width}x{rec.height}"
    if n_clipped:
        problems.append(Problem(where, None, f"{n_clipped} box(es) extend outside the {size} image; clipped"))
    if n_removed:
        problems.append(
            Problem(where, None, f"{n_removed} box(es) entirely outside the {size} image; removed", "error")
        )
    rec.boxes = np.ascontiguousarray(clipped[keep])
    if rec.scores is not None:
        rec.scores = rec.scores[keep]
    return problems


def require_sizes(
    records: Mapping[str, ImageRecord], images_dir: str | os.PathLike[str] | None, dst: str | os.PathLike[str]
) -> None:
    """Make sure every record has a size (reading headers from ``images_dir``), else raise."""
    if images_dir is not None:
        problems = fill_image_sizes(records, images_dir)
        if problems:
            raise ValueError(
                f"{dst}: cannot get the size of {len(problems)} image(s), e.g. {problems[0]}"
            )
    missing = [r.filename for r in records.values() if r.width is None or r.height is None]
    if missing:
        raise ValueError(
            f"{dst}: this format needs image sizes, unknown for {len(missing)} image(s) "
            f"(e.g. {missing[0]!r}); pass the images folder"
        )


def as_mapping(records: Mapping[str, ImageRecord] | Iterable[ImageRecord]) -> Records:
    if isinstance(records, Mapping):
        return dict(records)
    return {r.filename: r for r in records}


def read_split(path: str | os.PathLike[str]) -> list[str]:
    """Read a split file: one file name per line (BOM, CRLF, blank lines and surrounding spaces
    handled; duplicates removed, keeping the first).

    Args:
        path: the split file.

    Raises:
        AnnotationError: missing or unreadable file.
    """
    problems: list[Problem] = []
    text = read_text(Path(path), problems)
    for p in problems:
        logger.warning("%s", p)
    names = [line.strip() for line in text.splitlines()]
    out = list(dict.fromkeys(n for n in names if n))
    if len(out) < sum(1 for n in names if n):
        logger.warning("%s: duplicate names removed", path)
    return out


__all__ = [
    "FACE_CLASS",
    "SEVERITIES",
    "AnnotationError",
    "ImageRecord",
    "Problem",
    "Records",
    "as_mapping",
    "clip_record",
    "clip_to_image",
    "fill_image_sizes",
    "find_images",
    "fmt_coord",
    "parse_float",
    "read_split",
    "read_text",
    "records_from_lists",
    "require_sizes",
]
