"""The iCartoonFace CSV: ``filename,x1,y1,x2,y2`` (training), ``...,face`` (ground truth) and
``...,face,score`` (a submission), no header, one box per line."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from acfd.data.formats.records import (
    FACE_CLASS,
    ImageRecord,
    Problem,
    Records,
    fmt_coord,
    parse_float,
    read_text,
    records_from_lists,
)
from acfd.utils import atomic_write_text

logger = logging.getLogger(__name__)

#: Layouts of the CSV: ``filename,x1,y1,x2,y2`` / ``...,face`` / ``...,face,score``.
ICARTOON_KINDS = ("train", "gt", "submission")
#: Coordinates beyond this are no pixel position of any image: such rows are dropped.
MAX_COORDINATE = 1_000_000


def read_icartoon_csv(path: str | os.PathLike[str]) -> tuple[Records, list[Problem]]:
    """Read an iCartoonFace CSV (no header; one box per line).

    Accepts the three official layouts: ``filename,x1,y1,x2,y2`` (training),
    ``filename,x1,y1,x2,y2,face`` (test ground truth) and ``filename,x1,y1,x2,y2,face,score``
    (submission). Handles a UTF-8 BOM, CRLF line ends, spaces around fields and a header line.
    Rows with the wrong number of fields, non-numeric values, ``x2 <= x1`` or ``y2 <= y1`` are
    dropped (error), as are coordinates beyond :data:`MAX_COORDINATE`; duplicate annotation rows
    are dropped (warning), duplicate submission rows kept and reported, as the official scorer
    counts them; negative coordinates are clipped to 0 and scores outside [0, 1] kept (warning);
    blank lines are skipped (info).

    Args:
        path: the CSV file.

    Returns:
        ``(records, problems)``; ``records[name].scores`` is set for the submission layout.

    Raises:
        AnnotationError: the file is missing or unreadable.
    """
    path = Path(path)
    src = str(path)
    problems: list[Problem] = []
    text = read_text(path, problems)

    boxes: dict[str, list[list[float]]] = {}
    scores: dict[str, list[float]] = {}
    seen: dict[tuple, int] = {}
    with_score: bool | None = None  # decided by the first good row
    layout_line = 0

    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            problems.append(Problem(src, lineno, "blank line skipped", "info"))
            continue
        try:
            row = [f.strip() for f in next(csv.reader([line]))]
        except csv.Error as exc:
            problems.append(Problem(src, lineno, f"unparsable CSV row ({exc}); row dropped", "error"))
            continue
        if len(row) not in (5, 6, 7):
            problems.append(
                Problem(
                    src,
                    lineno,
                    f"expected 5, 6 or 7 comma-separated fields (filename,x1,y1,x2,y2[,face[,score]]),"
                    f" got {len(row)}; row dropped",
                    "error",
                )
            )
            continue
        name = row[0]
        coords = [parse_float(v) for v in row[1:5]]
        if lineno == 1 and all(c is None for c in coords):
            problems.append(Problem(src, lineno, f"header line skipped: {line.strip()!r}", "info"))
            continue
        if not name:
            problems.append(Problem(src, lineno, "empty file name; row dropped", "error"))
            continue
        bad = [row[1 + i] for i, c in enumerate(coords) if c is None]
        if bad:
            problems.append(
                Problem(src, lineno, f"non-numeric coordinate(s) {bad}; row dropped", "error")
            )
            continue
        score: float | None = None
        if len(row) == 7:
            score = parse_float(row[6])
            if score is None:
                problems.append(Problem(src, lineno, f"non-numeric score {row[6]!r}; row dropped", "error"))
                continue
        if with_score is None:
            with_score, layout_line = score is not None, lineno
        elif with_score != (score is not None):
            want = "7 fields (with a score)" if with_score else "5 or 6 fields (no score)"
            problems.append(
                Problem(
                    src,
                    lineno,
                    f"{len(row)} fields but line {layout_line} set the layout to {want}; row dropped",
                    "error",
                )
            )
            continue
        if len(row) >= 6 and row[5].lower() != FACE_CLASS:
            problems.append(
                Problem(src, lineno, f"class {row[5]!r} is not {FACE_CLASS!r}; box kept as a face")
            )
        x1, y1, x2, y2 = (float(c) for c in coords)  # type: ignore[arg-type]
        if max(abs(x1), abs(y1), abs(x2), abs(y2)) > MAX_COORDINATE:
            problems.append(Problem(src, lineno, f"coordinates ({','.join(row[1:5])}) beyond {MAX_COORDINATE:,} "
                                    "pixels are no position in an image; row dropped", "error"))
            continue
        if score is not None and not 0.0 <= score <= 1.0:
            problems.append(Problem(src, lineno, f"score {row[6]} outside [0, 1]; kept (AP ranks by it)"))
        if min(x1, y1, x2, y2) < 0:
            problems.append(
                Problem(src, lineno, f"negative coordinate in ({','.join(row[1:5])}); clipped to 0")
            )
            x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), max(x2, 0.0), max(y2, 0.0)
        if x2 <= x1 or y2 <= y1:
            problems.append(
                Problem(
                    src,
                    lineno,
                    f"empty box ({x1:g},{y1:g},{x2:g},{y2:g}): needs x2 > x1 and y2 > y1; row dropped",
                    "error",
                )
            )
            continue
        key = (name, x1, y1, x2, y2, score)
        if key in seen:
            if score is None:
                problems.append(Problem(src, lineno, f"duplicate of line {seen[key]}; row dropped"))
                continue
            # A repeated detection is the submitter's: the official scorer counts it (as a false
            # positive once its face is taken), so dropping it would inflate AP.
            problems.append(Problem(src, lineno, f"duplicate of line {seen[key]}; kept (scored as submitted)"))
        seen.setdefault(key, lineno)
        boxes.setdefault(name, []).append([x1, y1, x2, y2])
        if score is not None:
            scores.setdefault(name, []).append(score)

    records = records_from_lists(boxes, scores if with_score else None)
    logger.debug("%s: %d boxes on %d images, %d problems", src, sum(map(len, records.values())),
                 len(records), len(problems))
    return records, problems


def write_icartoon_csv(
    path: str | os.PathLike[str], records: Mapping[str, ImageRecord] | Iterable[ImageRecord],
    kind: str = "train",
) -> None:
    """Write an iCartoonFace CSV (no header), atomically.

    Args:
        path: output file.
        records: a mapping (as returned by the readers) or an iterable of records.
        kind: ``"train"`` (``filename,x1,y1,x2,y2``, integer pixels), ``"gt"`` (adds ``,face``),
            or ``"submission"`` (``filename,x1,y1,x2,y2,face,score``: boxes of an image in
            descending score order, coordinates with up to 2 decimals, scores with 6 decimals).
            Integer boxes are rounded to the nearest pixel, keeping at least 1 pixel of width and
            height. Images without boxes cannot be written in this format and are left out.

    Raises:
        ValueError: unknown ``kind``, or a submission record without scores.
    """
    if kind not in ICARTOON_KINDS:
        raise ValueError(f"kind must be one of {ICARTOON_KINDS}, got {kind!r}")
    recs = list(records.values()) if isinstance(records, Mapping) else list(records)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    skipped = 0
    for rec in recs:
        n = len(rec.boxes)
        if n == 0:
            skipped += 1
            continue
        if kind == "submission":
            if rec.scores is None:
                raise ValueError(f"{path}: record {rec.filename!r} has no scores (needed for a submission)")
            order = np.argsort(-rec.scores, kind="stable")
            for i in order:
                x1, y1, x2, y2 = rec.boxes[i]
                writer.writerow(
                    [rec.filename, *(fmt_coord(v) for v in (x1, y1, x2, y2)), FACE_CLASS,
                     f"{float(rec.scores[i]):.6f}"]
                )
            continue
        b = np.rint(rec.boxes).astype(np.int64)
        b[:, 2] = np.maximum(b[:, 2], b[:, 0] + 1)
        b[:, 3] = np.maximum(b[:, 3], b[:, 1] + 1)
        for x1, y1, x2, y2 in b.tolist():
            row = [rec.filename, x1, y1, x2, y2]
            if kind == "gt":
                row.append(FACE_CLASS)
            writer.writerow(row)
    if skipped:
        logger.info("%s: %d image(s) without boxes not written (the CSV format has no empty rows)",
                    path, skipped)
    atomic_write_text(path, buf.getvalue())


__all__ = ["ICARTOON_KINDS", "MAX_COORDINATE", "read_icartoon_csv", "write_icartoon_csv"]
