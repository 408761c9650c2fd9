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

Writers write atomically (temporary file + rename). One module per format (:mod:`.icartoon`,
:mod:`.coco`, :mod:`.yolo`, :mod:`.voc`) over the shared :mod:`.records`; this package names them
all and chooses one by name or path (:func:`read_annotations`, :func:`write_annotations`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from acfd.data.formats.coco import coco_image_ids, read_coco, read_detections_json, write_coco, write_coco_results
from acfd.data.formats.icartoon import ICARTOON_KINDS, read_icartoon_csv, write_icartoon_csv
from acfd.data.formats.records import (
    FACE_CLASS,
    SEVERITIES,
    AnnotationError,
    ImageRecord,
    Problem,
    Records,
    as_mapping,
    clip_record,
    clip_to_image,
    fill_image_sizes,
    find_images,
    read_split,
)
from acfd.data.formats.voc import read_voc, write_voc
from acfd.data.formats.yolo import read_yolo, write_yolo

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
    recs = as_mapping(records)
    if fmt == "icartoon":
        scored = any(r.scores is not None for r in recs.values())
        write_icartoon_csv(path, recs, kind="submission" if scored else "train")
    elif fmt == "coco":
        write_coco(path, recs, images_dir)
    elif fmt == "yolo":
        write_yolo(path, recs, images_dir)
    else:
        write_voc(path, recs, images_dir)


__all__ = [
    "FACE_CLASS",
    "FORMATS",
    "ICARTOON_KINDS",
    "SEVERITIES",
    "AnnotationError",
    "ImageRecord",
    "Problem",
    "Records",
    "clip_record",
    "clip_to_image",
    "coco_image_ids",
    "fill_image_sizes",
    "find_images",
    "guess_format",
    "normalize_format",
    "read_annotations",
    "read_coco",
    "read_detections_json",
    "read_icartoon_csv",
    "read_split",
    "read_voc",
    "read_yolo",
    "write_annotations",
    "write_coco",
    "write_coco_results",
    "write_icartoon_csv",
    "write_voc",
    "write_yolo",
]
