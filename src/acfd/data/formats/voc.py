"""Pascal VOC: one ``.xml`` per image with its size and ``object/bndbox`` boxes."""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path

from acfd.data.formats.records import (
    FACE_CLASS,
    AnnotationError,
    ImageRecord,
    Problem,
    Records,
    as_mapping,
    fmt_coord,
    parse_float,
    fill_image_sizes,
    records_from_lists,
)
from acfd.utils import atomic_path

logger = logging.getLogger(__name__)


def _xml_number(elem: ET.Element | None, tag: str) -> float | None:
    if elem is None:
        return None
    child = elem.find(tag)
    return None if child is None or child.text is None else parse_float(child.text.strip())


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
    return records_from_lists(boxes, None, sizes), problems


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
    recs = as_mapping(records)
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
                ET.SubElement(bb, tag).text = fmt_coord(v)
        ET.indent(root)
        out = xml_dir / Path(rec.filename).with_suffix(".xml")
        with atomic_path(out) as tmp:
            ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
        written.append(out)
    return written


__all__ = ["read_voc", "write_voc"]
