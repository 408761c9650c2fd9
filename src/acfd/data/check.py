"""Dataset checks: annotation problems, missing or unreadable images, boxes outside images, splits.

``check_dataset`` never raises on bad data: everything it finds is a :class:`Problem`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from acfd.data.formats import (
    AnnotationError,
    ImageRecord,
    Problem,
    clip_record,
    read_annotations,
)
from acfd.data.image_io import ImageReadError, is_image_file, load_image, read_image_size

logger = logging.getLogger(__name__)


@dataclass
class DatasetCheck:
    """Result of :func:`run_check`.

    Args:
        records: the annotations as read (boxes clipped to their images, sizes filled in).
        problems: everything found, in file order.
        num_images_checked: images whose header (or pixels) were read.
    """

    records: dict[str, ImageRecord] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    num_images_checked: int = 0

    def counts(self) -> dict[str, int]:
        """Number of problems per severity (``error``, ``warning``, ``info``)."""
        c = Counter(p.severity for p in self.problems)
        return {s: c.get(s, 0) for s in ("error", "warning", "info")}

    @property
    def ok(self) -> bool:
        """True when there is no error."""
        return self.counts()["error"] == 0

    def summary(self) -> str:
        """One line: images, boxes and problem counts."""
        c = self.counts()
        boxes = sum(len(r) for r in self.records.values())
        return (
            f"{len(self.records)} annotated images, {boxes} boxes, {self.num_images_checked} images read: "
            f"{c['error']} errors, {c['warning']} warnings, {c['info']} info"
        )


def run_check(
    annotations_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    split: str | os.PathLike[str] | None = None,
    fmt: str | None = None,
    decode: bool = False,
) -> DatasetCheck:
    """Check a dataset and keep the records (see :func:`check_dataset`).

    Args:
        annotations_path: annotation file or folder.
        images_dir: folder the annotation file names are relative to.
        split: optional split file (one file name per line).
        fmt: annotation format; guessed from the path when ``None``.
        decode: fully decode every image (finds truncated files; slower) instead of reading
            only the headers.
    """
    result = DatasetCheck()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        result.problems.append(Problem(str(images_dir), None, "images folder not found", "error"))
        return result
    try:
        records, problems = read_annotations(annotations_path, fmt, images_dir=images_dir)
    except (AnnotationError, ValueError) as exc:
        result.problems.append(Problem(str(annotations_path), None, str(exc), "error"))
        return result
    result.records = records
    result.problems.extend(problems)
    if not any(len(r) for r in records.values()):  # an empty file is not a valid dataset
        result.problems.append(
            Problem(str(annotations_path), None, "no annotated face in this file; nothing to check", "error")
        )

    for rec in records.values():
        img = images_dir / rec.filename
        try:
            if decode:
                h, w = load_image(img).shape[:2]
            else:
                w, h = read_image_size(img)
        except ImageReadError as exc:
            result.problems.append(Problem(str(img), None, exc.reason, "error"))
            continue
        result.num_images_checked += 1
        if rec.width is not None and rec.height is not None and (rec.width, rec.height) != (w, h):
            result.problems.append(
                Problem(
                    str(img), None,
                    f"annotation says {rec.width}x{rec.height}, the image is {w}x{h}; using the image",
                )
            )
        rec.width, rec.height = w, h
        if len(rec):
            result.problems.extend(clip_record(rec, str(img)))

    if split is not None:
        result.problems.extend(_check_split(Path(split), records, images_dir))
    else:
        unannotated = [
            p for p in sorted(images_dir.iterdir())
            if p.is_file() and is_image_file(p) and p.name not in records
        ]
        if unannotated:
            result.problems.append(
                Problem(
                    str(images_dir), None,
                    f"{len(unannotated)} image(s) without annotations (e.g. {unannotated[0].name}): "
                    "no faces, or not annotated",
                    "info",
                )
            )
    return result


def _check_split(split: Path, records: dict[str, ImageRecord], images_dir: Path) -> list[Problem]:
    """Split entries without annotations (info) or without an image file (error)."""
    problems: list[Problem] = []
    if not split.is_file():
        return [Problem(str(split), None, "split file not found", "error")]
    text = split.read_bytes().decode("utf-8-sig", errors="replace")
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            problems.append(Problem(str(split), lineno, f"{name} already listed on line {seen[name]}"))
            continue
        seen[name] = lineno
        if name in records:
            continue
        if not (images_dir / name).is_file():
            problems.append(Problem(str(split), lineno, f"{name}: image not found in {images_dir}", "error"))
        else:
            problems.append(Problem(str(split), lineno, f"{name}: no annotation entry (no faces?)", "info"))
    return problems


def check_dataset(
    annotations_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    split: str | os.PathLike[str] | None = None,
    fmt: str | None = None,
    decode: bool = False,
) -> list[Problem]:
    """Check a dataset: annotation problems, missing or unreadable images, boxes outside their
    image, split entries without annotations (info) or without images (error). With no split,
    images in ``images_dir`` without annotations are counted (info).

    Args:
        annotations_path: annotation file or folder.
        images_dir: folder the annotation file names are relative to.
        split: optional split file (one file name per line).
        fmt: annotation format; guessed from the path when ``None``.
        decode: fully decode every image instead of reading only the headers.

    Returns:
        The problems found; ``summarize_problems`` counts them.
    """
    return run_check(annotations_path, images_dir, split, fmt, decode).problems


def summarize_problems(problems: list[Problem]) -> str:
    """``"N errors, N warnings, N info"``.

    Args:
        problems: as returned by :func:`check_dataset`.
    """
    c = Counter(p.severity for p in problems)
    return f"{c.get('error', 0)} errors, {c.get('warning', 0)} warnings, {c.get('info', 0)} info"
