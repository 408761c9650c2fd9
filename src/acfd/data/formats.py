"""Annotation formats: iCartoonFace CSV, COCO JSON, YOLO txt and Pascal VOC XML.

Every reader returns ``(records, problems)``: ``records`` maps a file name (the key as written in
the annotation file) to an :class:`ImageRecord`, ``problems`` lists what was wrong, each with its
file and (1-based) line where the format has lines. Bad rows never crash a reader and are never
dropped silently. A file that cannot be read at all (missing, not JSON...) raises
:class:`AnnotationError` (a ``ValueError``) naming the file.

Severities of a :class:`Problem`:

- ``"error"``: a row or an image could not be used (malformed row, empty box, missing image);
  it was dropped.
- ``"warning"``: something was fixed or skipped and the data is still usable (duplicate row
  removed, negative coordinate clipped to 0, box clipped to the image).
- ``"info"``: harmless (blank line, header line, image without annotations).

Writers write atomically (temporary file + rename).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acfd.data.image_io import ImageReadError, is_image_file, read_image_size
from acfd.utils import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "error")
FORMATS = ("icartoon", "coco", "yolo", "voc")
_FORMAT_ALIASES = {
    "icartoon": "icartoon",
    "icartoonface": "icartoon",
    "csv": "icartoon",
    "coco": "coco",
    "json": "coco",
    "yolo": "yolo",
    "voc": "voc",
    "pascal_voc": "voc",
    "pascal-voc": "voc",
    "xml": "voc",
}
ICARTOON_KINDS = ("train", "gt", "submission")
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


# --------------------------------------------------------------------------------------------
# helpers


def _read_text(path: Path, problems: list[Problem]) -> str:
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


def _parse_float(text: str) -> float | None:
    """A finite float, or ``None``."""
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _records_from_lists(
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


def _fmt_coord(v: float) -> str:
    """Coordinates: integers stay integers, others keep 2 decimals."""
    r = round(float(v), 2)
    return str(int(r)) if r == int(r) else f"{r:.2f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------------------------
# iCartoonFace CSV


def read_icartoon_csv(path: str | os.PathLike[str]) -> tuple[Records, list[Problem]]:
    """Read an iCartoonFace CSV (no header; one box per line).

    Accepts the three official layouts: ``filename,x1,y1,x2,y2`` (training),
    ``filename,x1,y1,x2,y2,face`` (test ground truth) and ``filename,x1,y1,x2,y2,face,score``
    (submission). Handles a UTF-8 BOM, CRLF line ends, spaces around fields and a header line.
    Rows with the wrong number of fields, non-numeric values, ``x2 <= x1`` or ``y2 <= y1`` are
    dropped (error); duplicate annotation rows are dropped (warning), duplicate submission rows kept
    and reported, as the official scorer counts them; negative coordinates are clipped to 0
    (warning); blank lines are skipped (info).

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
    text = _read_text(path, problems)

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
        coords = [_parse_float(v) for v in row[1:5]]
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
            score = _parse_float(row[6])
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

    records = _records_from_lists(boxes, scores if with_score else None)
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
                    [rec.filename, *(_fmt_coord(v) for v in (x1, y1, x2, y2)), FACE_CLASS,
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


# --------------------------------------------------------------------------------------------
# image sizes


def _image_path(images_dir: Path, filename: str) -> Path:
    return images_dir / filename


def fill_image_sizes(
    records: Mapping[str, ImageRecord], images_dir: str | os.PathLike[str], only_missing: bool = True
) -> list[Problem]:
    """Set ``width``/``height`` of records from their image headers (no pixel decoding).

    Args:
        records: records to update in place.
        images_dir: folder the record file names are relative to.
        only_missing: keep sizes that are already set.

    Returns:
        One error per missing or unreadable image.
    """
    images_dir = Path(images_dir)
    problems: list[Problem] = []
    for rec in records.values():
        if only_missing and rec.width is not None and rec.height is not None:
            continue
        img = _image_path(images_dir, rec.filename)
        try:
            rec.width, rec.height = read_image_size(img)
        except ImageReadError as exc:
            problems.append(Problem(str(img), None, exc.reason, "error"))
    return problems


def clip_to_image(records: Mapping[str, ImageRecord], images_dir: str | os.PathLike[str]) -> list[Problem]:
    """Clip boxes to their image, reading only image sizes (headers), and report what changed.

    Boxes that stick out of the image are clipped (one warning per image with the count); boxes
    entirely outside are removed (error). Missing or unreadable images are reported (error) and
    their records are left unchanged. Records get their ``width``/``height`` set.

    Args:
        records: records to update in place.
        images_dir: folder the record file names are relative to.
    """
    images_dir = Path(images_dir)
    problems = fill_image_sizes(records, images_dir, only_missing=False)
    for rec in records.values():
        if rec.width is None or rec.height is None or len(rec) == 0:
            continue
        problems.extend(clip_record(rec, str(_image_path(images_dir, rec.filename))))
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


def _require_sizes(
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


def _as_mapping(records: Mapping[str, ImageRecord] | Iterable[ImageRecord]) -> Records:
    if isinstance(records, Mapping):
        return dict(records)
    return {r.filename: r for r in records}


# --------------------------------------------------------------------------------------------
# COCO JSON


def read_coco(path: str | os.PathLike[str]) -> tuple[Records, list[Problem]]:
    """Read a COCO detection JSON (``images``, ``annotations``, ``categories``).

    Only the ``face`` category is read (or the only category when there is one), crowd
    annotations (``iscrowd``) are skipped; boxes are
    converted from ``[x, y, w, h]`` to ``x1, y1, x2, y2``. Images without annotations give
    records with no boxes. Annotations with a ``score`` give records with scores.
    Problems name the offending entry as ``annotations[i]``; JSON has no useful line numbers
    except for syntax errors.

    Args:
        path: the JSON file.

    Raises:
        AnnotationError: missing file, invalid JSON, or not a COCO dataset (e.g. a results list).
    """
    path = Path(path)
    src = str(path)
    problems: list[Problem] = []
    text = _read_text(path, problems)

    def report(message: str, severity: str = "warning") -> None:
        problems.append(Problem(src, None, message, severity))

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{src}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
    if isinstance(data, list):
        raise AnnotationError(
            f"{src}: a JSON list (a COCO results file?); expected a dataset object with "
            f"'images' and 'annotations'"
        )
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError(f"{src}: not a COCO dataset: needs an 'images' list")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise AnnotationError(f"{src}: 'annotations' must be a list")

    cats = [c for c in data.get("categories", []) if isinstance(c, dict)]
    face_ids = {c.get("id") for c in cats if str(c.get("name", "")).lower() == FACE_CLASS}
    if not face_ids and len(cats) == 1:
        face_ids = {cats[0].get("id")}
        report(f"no 'face' category; using the only category {cats[0].get('name')!r}", "info")
    elif not face_ids and cats:
        report(f"no 'face' category among {[c.get('name') for c in cats]}; reading all")

    id_to_name: dict[object, str] = {}
    boxes: dict[str, list[list[float]]] = {}
    scores: dict[str, list[float]] = {}
    sizes: dict[str, tuple[int | None, int | None]] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            report(f"images[{i}]: needs 'id' and 'file_name'; skipped", "error")
            continue
        name = str(im["file_name"])
        if name in boxes:
            report(f"images[{i}]: duplicate file_name {name!r}; skipped")
            continue
        if im["id"] in id_to_name:
            report(f"images[{i}]: duplicate id {im['id']!r}; skipped", "error")
            continue
        id_to_name[im["id"]] = name
        boxes[name] = []
        scores[name] = []
        w, h = im.get("width"), im.get("height")
        ok = isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0
        sizes[name] = (w, h) if ok else (None, None)

    has_scores = any(isinstance(a, dict) and "score" in a for a in anns)
    other_cat = crowd = 0
    for i, a in enumerate(anns):
        where = f"annotations[{i}]" + (f" (id {a.get('id')})" if isinstance(a, dict) and "id" in a else "")
        if not isinstance(a, dict):
            report(f"{where}: not an object; skipped", "error")
            continue
        if face_ids and a.get("category_id") not in face_ids:
            other_cat += 1
            continue
        if a.get("iscrowd"):
            crowd += 1
            continue
        name = id_to_name.get(a.get("image_id"))
        if name is None:
            report(f"{where}: unknown image_id {a.get('image_id')!r}; dropped", "error")
            continue
        bbox = a.get("bbox")
        vals = [_parse_float(str(v)) for v in bbox] if isinstance(bbox, list) else []
        if len(vals) != 4 or any(v is None for v in vals):
            report(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}; dropped", "error")
            continue
        x, y, w, h = (float(v) for v in vals)  # type: ignore[arg-type]
        if w <= 0 or h <= 0:
            report(f"{where}: empty box (width {w:g}, height {h:g}); dropped", "error")
            continue
        x1, y1, x2, y2 = x, y, x + w, y + h
        if x1 < 0 or y1 < 0:
            report(f"{where}: negative coordinate; clipped to 0")
            x1, y1 = max(x1, 0.0), max(y1, 0.0)
            if x2 <= x1 or y2 <= y1:
                report(f"{where}: box entirely at negative coordinates; dropped", "error")
                continue
        score = None
        if has_scores:
            score = _parse_float(str(a.get("score")))
            if score is None:
                report(f"{where}: missing or non-numeric score; dropped", "error")
                continue
            scores[name].append(score)
        boxes[name].append([x1, y1, x2, y2])
    if other_cat:
        report(f"{other_cat} annotation(s) of other categories ignored", "info")
    if crowd:
        report(f"{crowd} crowd annotation(s) (iscrowd=1) ignored", "info")
    return _records_from_lists(boxes, scores if has_scores else None, sizes), problems


def write_coco(
    path: str | os.PathLike[str],
    records: Mapping[str, ImageRecord] | Iterable[ImageRecord],
    images_dir: str | os.PathLike[str] | None = None,
) -> dict[str, int]:
    """Write a COCO detection JSON with one category ``face`` (id 1), atomically.

    Image ids are 1, 2, ... in record order; annotation ids likewise. Records with scores get a
    ``score`` on each annotation.

    Args:
        path: output file.
        records: records to write; each needs ``width``/``height`` unless ``images_dir`` is given.
        images_dir: folder to read missing image sizes from (headers only).

    Returns:
        ``{file_name: image_id}`` (pass it to :func:`write_coco_results`).

    Raises:
        ValueError: an image size is unknown.
    """
    recs = _as_mapping(records)
    _require_sizes(recs, images_dir, path)
    images, anns, ids = [], [], {}
    ann_id = 0
    for img_id, rec in enumerate(recs.values(), start=1):
        ids[rec.filename] = img_id
        w, h = int(rec.width), int(rec.height)  # type: ignore[arg-type]  # checked by _require_sizes
        images.append({"id": img_id, "file_name": rec.filename, "width": w, "height": h})
        for j, (x1, y1, x2, y2) in enumerate(rec.boxes.tolist()):
            ann_id += 1
            w, h = x2 - x1, y2 - y1
            ann = {
                "id": ann_id,
                "image_id": img_id,
                "category_id": 1,
                "bbox": [round(x1, 3), round(y1, 3), round(w, 3), round(h, 3)],
                "area": round(w * h, 3),
                "iscrowd": 0,
            }
            if rec.scores is not None:
                ann["score"] = round(float(rec.scores[j]), 6)
            anns.append(ann)
    data = {
        "info": {"description": "written by acfd"},
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": FACE_CLASS, "supercategory": FACE_CLASS}],
    }
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return ids


def read_detections_json(path: str | os.PathLike[str]) -> tuple[Records, list[Problem]]:
    """Read the per-image JSON of ``acfd detect -o x.json`` as prediction records.

    The file is a list of ``{"file", "width", "height", "detections": [{"box", "score"}]}``;
    records are keyed by ``file``. A COCO *results* list (``image_id``, ``bbox``) holds no file
    names, so it is refused with a hint.

    Args:
        path: the JSON file.

    Raises:
        AnnotationError: not JSON, or not a list of per-image detections.
    """
    src = str(path)
    problems: list[Problem] = []
    text = _read_text(Path(path), problems)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{src}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, list) and data and isinstance(data[0], dict) and "image_id" in data[0]:
        raise AnnotationError(
            f"{src}: a COCO results list has image ids but no file names; score it with the COCO "
            "tools, or write predictions with acfd detect -o NAME.csv / NAME.json"
        )
    if not isinstance(data, list) or not all(isinstance(d, dict) and "file" in d for d in data):
        raise AnnotationError(f"{src}: expected the per-image list written by acfd detect -o NAME.json")
    boxes: dict[str, list[list[float]]] = {}
    scores: dict[str, list[float]] = {}
    for i, item in enumerate(data):
        name = str(item["file"])
        boxes.setdefault(name, [])
        scores.setdefault(name, [])
        for det in item.get("detections") or []:
            try:
                box = [float(v) for v in det["box"]]
                score = float(det["score"])
            except (KeyError, TypeError, ValueError):
                problems.append(Problem(src, None, f"entry {i} ({name}): a detection without box/score; skipped", "error"))
                continue
            if len(box) != 4:
                problems.append(Problem(src, None, f"entry {i} ({name}): box needs 4 numbers; skipped", "error"))
                continue
            boxes[name].append(box)
            scores[name].append(score)
    return _records_from_lists(boxes, scores), problems


def coco_image_ids(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{file_name: id}`` of the images of a COCO dataset JSON.

    Args:
        path: the JSON file.

    Raises:
        AnnotationError: missing file or not a COCO dataset.
    """
    path = Path(path)
    text = _read_text(path, [])
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError(f"{path}: not a COCO dataset: needs an 'images' list")
    return {
        str(im["file_name"]): im["id"]
        for im in data["images"]
        if isinstance(im, dict) and "file_name" in im and "id" in im
    }


def write_coco_results(
    path: str | os.PathLike[str],
    records: Mapping[str, ImageRecord] | Iterable[ImageRecord],
    image_ids: Mapping[str, int] | str | os.PathLike[str],
) -> int:
    """Write detections in the COCO results format (a list of ``{image_id, category_id, bbox, score}``).

    Args:
        path: output JSON file.
        records: predictions; every record needs scores.
        image_ids: ``{file_name: image_id}`` of the ground truth, or the path of the ground-truth
            COCO JSON to read them from.

    Returns:
        Number of detections written.

    Raises:
        ValueError: a record without scores, or a file name not in ``image_ids``.
    """
    ids = coco_image_ids(image_ids) if isinstance(image_ids, (str, os.PathLike)) else dict(image_ids)
    out = []
    for rec in _as_mapping(records).values():
        if len(rec) == 0:
            continue
        if rec.scores is None:
            raise ValueError(f"{path}: record {rec.filename!r} has no scores")
        if rec.filename not in ids:
            raise ValueError(f"{path}: {rec.filename!r} is not an image of the ground truth")
        for (x1, y1, x2, y2), s in zip(rec.boxes.tolist(), rec.scores.tolist()):
            out.append(
                {
                    "image_id": ids[rec.filename],
                    "category_id": 1,
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                    "score": round(s, 6),
                }
            )
    atomic_write_text(path, json.dumps(out) + "\n")
    return len(out)


# --------------------------------------------------------------------------------------------
# YOLO txt


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
        text = _read_text(label, problems)
        src = str(label)
        for lineno, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (5, 6):
                report(lineno, f"expected 'class cx cy w h [score]', got {len(fields)} values "
                       "(segment/polygon labels are not supported); row dropped", "error")
                continue
            vals = [_parse_float(v) for v in fields]
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
    return _records_from_lists(boxes, scores if any_score else None, sizes), problems


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
    recs = _as_mapping(records)
    _require_sizes(recs, images_dir, labels_dir)
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


# --------------------------------------------------------------------------------------------
# Pascal VOC XML


def _xml_number(elem: ET.Element | None, tag: str) -> float | None:
    if elem is None:
        return None
    child = elem.find(tag)
    return None if child is None or child.text is None else _parse_float(child.text.strip())


def read_voc(xml_dir: str | os.PathLike[str]) -> tuple[Records, list[Problem]]:
    """Read a folder of Pascal VOC XML files (recursively), objects named ``face``.

    The record key is the ``<filename>`` of each file (the XML's name with ``.jpg`` when absent).
    Coordinates are read as they are (no 1-based shift, as LabelImg and CVAT write them).

    Args:
        xml_dir: folder of ``.xml`` files.

    Raises:
        AnnotationError: the folder is missing.
    """
    xml_dir = Path(xml_dir)
    if not xml_dir.is_dir():
        raise AnnotationError(f"{xml_dir}: VOC annotation folder not found")
    problems: list[Problem] = []
    boxes: dict[str, list[list[float]]] = {}
    sizes: dict[str, tuple[int | None, int | None]] = {}
    owner: dict[str, str] = {}
    src = str(xml_dir)

    def report(message: str, severity: str = "warning") -> None:
        problems.append(Problem(src, None, message, severity))

    for xml in sorted(xml_dir.rglob("*.xml")):
        src = str(xml)
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            problems.append(Problem(src, exc.position[0], f"invalid XML: {exc}; file skipped", "error"))
            continue
        if root.tag != "annotation":
            report(f"root element <{root.tag}> is not <annotation>; file skipped", "error")
            continue
        fn = root.findtext("filename")
        if not fn or not fn.strip():
            fn = xml.relative_to(xml_dir).with_suffix(".jpg").as_posix()
            report(f"no <filename>; using {fn!r}")
        name = fn.strip()
        if name in owner:
            report(f"{name!r} already annotated in {owner[name]}; file skipped", "error")
            continue
        owner[name] = src
        size = root.find("size")
        w, h = _xml_number(size, "width"), _xml_number(size, "height")
        sizes[name] = (int(w), int(h)) if w and h and w > 0 and h > 0 else (None, None)
        bl: list[list[float]] = []
        other = 0
        for k, obj in enumerate(root.iter("object"), start=1):
            if (obj.findtext("name") or "").strip().lower() != FACE_CLASS:
                other += 1
                continue
            bb = obj.find("bndbox")
            c = [_xml_number(bb, t) for t in ("xmin", "ymin", "xmax", "ymax")]
            if any(v is None for v in c):
                report(f"object {k}: <bndbox> needs numeric xmin, ymin, xmax, ymax; dropped", "error")
                continue
            x1, y1, x2, y2 = (float(v) for v in c)  # type: ignore[arg-type]
            if min(x1, y1) < 0:
                report(f"object {k}: negative coordinate; clipped to 0")
                x1, y1 = max(x1, 0.0), max(y1, 0.0)
            if x2 <= x1 or y2 <= y1:
                report(f"object {k}: empty box ({x1:g},{y1:g},{x2:g},{y2:g}); dropped", "error")
                continue
            bl.append([x1, y1, x2, y2])
        if other:
            report(f"{other} object(s) not named 'face' ignored", "info")
        boxes[name] = bl
    return _records_from_lists(boxes, None, sizes), problems


def write_voc(
    xml_dir: str | os.PathLike[str],
    records: Mapping[str, ImageRecord] | Iterable[ImageRecord],
    images_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write one Pascal VOC XML per record (``a/b.jpg`` -> ``xml_dir/a/b.xml``), atomically.

    Args:
        xml_dir: output folder.
        records: records to write; ``<size>`` is written when the size is known (or read from
            ``images_dir``).
        images_dir: folder to read missing image sizes from.

    Returns:
        The XML files written.
    """
    recs = _as_mapping(records)
    if images_dir is not None:
        for p in fill_image_sizes(recs, images_dir):
            logger.warning("%s", p)
    xml_dir = Path(xml_dir)
    written = []
    for rec in recs.values():
        root = ET.Element("annotation")
        parent = Path(rec.filename).parent.as_posix()
        ET.SubElement(root, "folder").text = "" if parent == "." else parent
        ET.SubElement(root, "filename").text = rec.filename
        if rec.width is not None and rec.height is not None:
            size = ET.SubElement(root, "size")
            ET.SubElement(size, "width").text = str(int(rec.width))
            ET.SubElement(size, "height").text = str(int(rec.height))
            ET.SubElement(size, "depth").text = "3"
        ET.SubElement(root, "segmented").text = "0"
        for x1, y1, x2, y2 in rec.boxes.tolist():
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = FACE_CLASS
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = "0"
            bb = ET.SubElement(obj, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2)):
                ET.SubElement(bb, tag).text = _fmt_coord(v)
        ET.indent(root)
        out = xml_dir / Path(rec.filename).with_suffix(".xml")
        with atomic_path(out) as tmp:
            ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
        written.append(out)
    return written


# --------------------------------------------------------------------------------------------
# dispatch and splits


def normalize_format(fmt: str) -> str:
    """Canonical format name (``icartoon``, ``coco``, ``yolo``, ``voc``) of a name or alias.

    Args:
        fmt: a format name, case-insensitive (``csv``, ``json``, ``pascal_voc``... accepted).

    Raises:
        ValueError: unknown format.
    """
    key = fmt.strip().lower()
    if key not in _FORMAT_ALIASES:
        raise ValueError(f"unknown annotation format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _FORMAT_ALIASES[key]


def guess_format(path: str | os.PathLike[str]) -> str:
    """Guess the annotation format of a path: ``.csv`` icartoon, ``.json`` coco, a folder of
    ``.xml`` voc, a folder of ``.txt`` yolo.

    Args:
        path: annotation file or folder (existing or to be written).

    Raises:
        ValueError: the format cannot be told from the path.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_dir():
        if suffix == ".csv":
            return "icartoon"
        if suffix == ".json":
            return "coco"
    else:
        if next(p.rglob("*.xml"), None) is not None:
            return "voc"
        if next(p.rglob("*.txt"), None) is not None:
            return "yolo"
    raise ValueError(f"{p}: cannot guess the annotation format; give it ({', '.join(FORMATS)})")


def read_annotations(
    path: str | os.PathLike[str], fmt: str | None = None, images_dir: str | os.PathLike[str] | None = None
) -> tuple[Records, list[Problem]]:
    """Read annotations of any supported format.

    Args:
        path: CSV file (icartoon), JSON file (coco), or folder (yolo labels, voc XMLs).
        fmt: format name; guessed from ``path`` when ``None``.
        images_dir: the images folder (needed for yolo).

    Raises:
        AnnotationError: the file cannot be read at all.
        ValueError: unknown format, or yolo without ``images_dir``.
    """
    fmt = normalize_format(fmt) if fmt else guess_format(path)
    if fmt == "icartoon":
        return read_icartoon_csv(path)
    if fmt == "coco":
        return read_coco(path)
    if fmt == "voc":
        return read_voc(path)
    if images_dir is None:
        raise ValueError(f"{path}: reading YOLO labels needs the images folder (image sizes)")
    return read_yolo(path, images_dir)


def write_annotations(
    path: str | os.PathLike[str],
    records: Mapping[str, ImageRecord] | Iterable[ImageRecord],
    fmt: str | None = None,
    images_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Write annotations in any supported format.

    For icartoon, records with scores are written as a submission, others in the training layout.

    Args:
        path: output file (icartoon, coco) or folder (yolo, voc).
        records: records to write.
        fmt: format name; guessed from ``path`` when ``None``.
        images_dir: folder to read missing image sizes from (coco and yolo need sizes).
    """
    fmt = normalize_format(fmt) if fmt else guess_format(path)
    recs = _as_mapping(records)
    if fmt == "icartoon":
        scored = any(r.scores is not None for r in recs.values())
        write_icartoon_csv(path, recs, kind="submission" if scored else "train")
    elif fmt == "coco":
        write_coco(path, recs, images_dir)
    elif fmt == "yolo":
        write_yolo(path, recs, images_dir)
    else:
        write_voc(path, recs, images_dir)


def read_split(path: str | os.PathLike[str]) -> list[str]:
    """Read a split file: one file name per line (BOM, CRLF, blank lines and surrounding spaces
    handled; duplicates removed, keeping the first).

    Args:
        path: the split file.

    Raises:
        AnnotationError: missing or unreadable file.
    """
    problems: list[Problem] = []
    text = _read_text(Path(path), problems)
    for p in problems:
        logger.warning("%s", p)
    names = [line.strip() for line in text.splitlines()]
    out = list(dict.fromkeys(n for n in names if n))
    if len(out) < sum(1 for n in names if n):
        logger.warning("%s: duplicate names removed", path)
    return out
