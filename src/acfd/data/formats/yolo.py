"""YOLO labels: one ``.txt`` per image, ``class cx cy w h`` normalised by the image size."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from acfd.data.formats.records import (
    AnnotationError,
    ImageRecord,
    Problem,
    Records,
    as_mapping,
    parse_float,
    read_text,
    records_from_lists,
    require_sizes,
)
from acfd.data.image_io import ImageReadError, is_image_file, read_image_size
from acfd.utils import atomic_write_text

logger = logging.getLogger(__name__)


def _list_images(images_dir: Path) -> list[Path]:
    return sorted(p for p in images_dir.rglob("*") if p.is_file() and is_image_file(p))


def read_yolo(
    labels_dir: str | os.PathLike[str], images_dir: str | os.PathLike[str]
) -> tuple[Records, list[Problem]]:
    """Read a YOLO label folder: ``<stem>.txt`` per image, lines ``class cx cy w h`` (normalised).

    Images are found under ``images_dir`` (recursively); the label of ``images_dir/a/b.jpg`` is
    ``labels_dir/a/b.txt``. An image without a label file has no faces (YOLO convention). Only
    class 0 (face) is read; a sixth value is read as a score. Image sizes come from the headers.

    Args:
        labels_dir: folder of ``.txt`` label files.
        images_dir: folder of images.

    Raises:
        AnnotationError: a folder is missing.
    """
    labels_dir, images_dir = Path(labels_dir), Path(images_dir)
    for d, what in ((labels_dir, "labels"), (images_dir, "images")):
        if not d.is_dir():
            raise AnnotationError(f"{d}: {what} folder not found")
    problems: list[Problem] = []
    boxes: dict[str, list[list[float]]] = {}
    scores: dict[str, list[float]] = {}
    sizes: dict[str, tuple[int | None, int | None]] = {}
    used_labels: set[Path] = set()
    any_score = False
    src = str(labels_dir)  # the label file being read

    def report(at: int, message: str, severity: str = "warning") -> None:
        problems.append(Problem(src, at, message, severity))

    for img in _list_images(images_dir):
        rel = img.relative_to(images_dir)
        name = rel.as_posix()
        label = labels_dir / rel.with_suffix(".txt")
        used_labels.add(label.resolve())
        try:
            w, h = read_image_size(img)
        except ImageReadError as exc:
            problems.append(Problem(str(img), None, f"{exc.reason}; image skipped", "error"))
            continue
        sizes[name] = (w, h)
        boxes[name], scores[name] = [], []
        if not label.is_file():
            continue
        text = read_text(label, problems)
        src = str(label)
        for lineno, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (5, 6):
                report(lineno, f"expected 'class cx cy w h [score]', got {len(fields)} values "
                       "(segment/polygon labels are not supported); row dropped", "error")
                continue
            vals = [parse_float(v) for v in fields]
            if any(v is None for v in vals):
                report(lineno, f"non-numeric value in {line.strip()!r}; row dropped", "error")
                continue
            cls, cx, cy, bw, bh = (float(v) for v in vals[:5])  # type: ignore[arg-type]
            if cls != 0:
                report(lineno, f"class {fields[0]} is not 0 (face); row ignored", "info")
                continue
            if bw <= 0 or bh <= 0:
                report(lineno, f"empty box (w {bw:g}, h {bh:g}); row dropped", "error")
                continue
            x1, y1, x2, y2 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
            c = [min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)]
            if c[2] <= c[0] or c[3] <= c[1]:
                report(lineno, "box entirely outside the image; row dropped", "error")
                continue
            if c != [x1, y1, x2, y2]:
                report(lineno, "box extends outside the image (values outside 0..1); clipped")
            boxes[name].append(c)
            if len(vals) == 6:
                any_score = True
                scores[name].append(float(vals[5]))  # type: ignore[arg-type]
            else:
                scores[name].append(math.nan)
    for label in sorted(labels_dir.rglob("*.txt")):
        if label.resolve() not in used_labels and label.name != "classes.txt":
            problems.append(Problem(str(label), None, "label file without a matching image; ignored"))
    if any_score:
        for name, s in scores.items():
            if any(math.isnan(v) for v in s):
                message = "some rows have a score and some do not; missing scores set to 0"
                problems.append(Problem(str(labels_dir / name), None, message))
                scores[name] = [0.0 if math.isnan(v) else v for v in s]
    return records_from_lists(boxes, scores if any_score else None, sizes), problems


def write_yolo(
    labels_dir: str | os.PathLike[str],
    records: Mapping[str, ImageRecord] | Iterable[ImageRecord],
    images_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write YOLO labels: one ``<stem>.txt`` per record (empty for no faces), class 0, atomically.

    Boxes are clipped to the image and normalised (``cx cy w h`` with 6 decimals); records with
    scores get a sixth column.

    Args:
        labels_dir: output folder; ``a/b.jpg`` goes to ``labels_dir/a/b.txt``.
        records: records to write.
        images_dir: folder to read missing image sizes from.

    Returns:
        The label files written.
    """
    recs = as_mapping(records)
    require_sizes(recs, images_dir, labels_dir)
    labels_dir = Path(labels_dir)
    written = []
    for rec in recs.values():
        w, h = float(rec.width), float(rec.height)  # type: ignore[arg-type]
        b = np.clip(rec.boxes.astype(np.float64), 0, [w, h, w, h])
        lines = []
        for j, (x1, y1, x2, y2) in enumerate(b.tolist()):
            if x2 <= x1 or y2 <= y1:
                logger.warning("%s: box %d outside the image not written", rec.filename, j)
                continue
            row = f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            if rec.scores is not None:
                row += f" {float(rec.scores[j]):.6f}"
            lines.append(row + "\n")
        out = labels_dir / Path(rec.filename).with_suffix(".txt")
        atomic_write_text(out, "".join(lines))
        written.append(out)
    return written


__all__ = ["read_yolo", "write_yolo"]
