"""COCO JSON (ground truth and results lists) and the JSON that ``acfd detect -o x.json`` writes."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from acfd.data.formats.records import (
    FACE_CLASS,
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
from acfd.utils import atomic_write_text

logger = logging.getLogger(__name__)


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
    text = read_text(path, problems)

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
        vals = [parse_float(str(v)) for v in bbox] if isinstance(bbox, list) else []
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
            score = parse_float(str(a.get("score")))
            if score is None:
                report(f"{where}: missing or non-numeric score; dropped", "error")
                continue
            scores[name].append(score)
        boxes[name].append([x1, y1, x2, y2])
    if other_cat:
        report(f"{other_cat} annotation(s) of other categories ignored", "info")
    if crowd:
        report(f"{crowd} crowd annotation(s) (iscrowd=1) ignored", "info")
    return records_from_lists(boxes, scores if has_scores else None, sizes), problems


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
    recs = as_mapping(records)
    require_sizes(recs, images_dir, path)
    images, anns, ids = [], [], {}
    ann_id = 0
    for img_id, rec in enumerate(recs.values(), start=1):
        ids[rec.filename] = img_id
        w, h = int(rec.width), int(rec.height)  # type: ignore[arg-type]  # checked by require_sizes
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
    text = read_text(Path(path), problems)
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
    return records_from_lists(boxes, scores), problems


def coco_image_ids(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{file_name: id}`` of the images of a COCO dataset JSON.

    Args:
        path: the JSON file.

    Raises:
        AnnotationError: missing file or not a COCO dataset.
    """
    path = Path(path)
    text = read_text(path, [])
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
    for rec in as_mapping(records).values():
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


__all__ = ["coco_image_ids", "read_coco", "read_detections_json", "write_coco", "write_coco_results"]
