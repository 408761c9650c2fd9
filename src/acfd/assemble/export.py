"""Export an assembling project as a dataset, at any point of the review.

Layout of ``OUT``::

    identities/<name>/<face id>.jpg      crops a person confirmed (and their near-duplicates)
    unreviewed/<name>/<face id>.jpg      crops whose best open candidate is <name> (not yet reviewed)
    unreviewed/_cluster_<k>/...          unnamed crops, by cluster
    images/<key>                         every image that has a box in boxes.csv: image sources by
                                         their key (path relative to the source folder), sampled
                                         video frames as frames/s<source>_f<frame>.jpg
    boxes.csv                            every detection kept (not marked "not a face"), iCartoonFace
                                         CSV naming the files under images/
    boxes_coco.json                      the same boxes as a COCO detection dataset
    manifest.json                        the project, settings, stage counts, every file written,
                                         and per crop: provenance (source file, frame, timestamp,
                                         box, scores), status, label, and who answered what and when

So ``acfd data check OUT/boxes.csv --images OUT/images`` checks the exported dataset on its own.

The folder is built beside ``OUT`` and renamed into place, so an export is never half-written. An
existing ``OUT`` is replaced only when it is an earlier export of the same project holding nothing
but the files that export wrote (its manifest lists them); anything else is refused before any
work, so an export never deletes what it did not write.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from acfd.assemble.project import Project
from acfd.assemble.names import identity_names, used_identities
from acfd.assemble.review import candidate_lists, current_candidate, face_states
from acfd.data.formats import ImageRecord, write_coco, write_icartoon_csv
from acfd.utils import atomic_write_text

#: ``manifest.json``'s ``format``: what marks a folder as an export (with the project it came from).
EXPORT_FORMAT = "acfd-assemble-export/1"
MANIFEST = "manifest.json"
IMAGES = "images"
#: Face statuses that are detections above the score threshold (exported as boxes).
_DETECTED = ("kept", "small", "blurred")
_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)


def folder_name(name: str) -> str:
    """A file-system-safe folder name for an identity (``/``, ``..`` and control characters go)."""
    safe = _UNSAFE.sub("_", name).strip(" .")
    return safe or "_"


def _unique_folders(names: dict[int, str]) -> dict[int, str]:
    used: Counter = Counter()
    out = {}
    for ident, name in sorted(names.items()):
        base = folder_name(name)
        used[base.lower()] += 1
        out[ident] = base if used[base.lower()] == 1 else f"{base}_{ident}"
    return out


def export_target(project: Project, out: str | os.PathLike[str] | None = None) -> Path:
    """The absolute export folder for ``out`` (default ``PROJECT_DIR/export``), checked before any work.

    Raises:
        ValueError: ``out`` is the current folder, the project folder or a folder holding it, a
            file, or an existing non-empty folder that is not an earlier export of this project
            holding only what that export wrote.
    """
    given = Path(out) if out is not None else project.root / "export"
    target = given.resolve()
    root = project.root.resolve()
    if target == Path.cwd().resolve():
        raise ValueError(
            f"{given}: the export is built beside its folder and moved into place, so it cannot be the "
            "current folder; give a new folder name (e.g. -o dataset)"
        )
    if target == root:
        raise ValueError(f"{given}: the export folder cannot be the project folder itself")
    if target in root.parents:
        raise ValueError(f"{given}: holds the project folder {root}; give a folder outside it")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{given}: is a file, not a folder")
    if target.is_dir() and any(target.iterdir()):
        _check_previous_export(given, target, root)
    return target


def _check_previous_export(given: Path, target: Path, root: Path) -> None:
    """Refuse a non-empty folder unless it is an export of ``root`` with only the files it wrote."""
    refuse = (
        f"{given}: is not empty and not an earlier export of this project; an export replaces its "
        "folder, so give a new or empty folder"
    )
    try:
        manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError(refuse) from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT or manifest.get("project") != str(root):
        raise ValueError(refuse)
    written = {MANIFEST, *(f for f in manifest.get("files", []) if isinstance(f, str))}
    folders = {str(p) for f in written for p in PurePosixPath(f).parents if str(p) != "."}
    for here, dirs, files in os.walk(target):
        rel = Path(here).relative_to(target)
        for name in [*dirs, *files]:
            item = (rel / name).as_posix()
            path = Path(here) / name
            ok = item in folders if name in dirs and not path.is_symlink() else (item in written and not path.is_symlink())
            if not ok:
                raise ValueError(
                    f"{given}: holds {item}, which the earlier export did not write; move it out "
                    "or give another folder (an export replaces its folder)"
                )


def _new_folder(parent: Path, stem: str) -> Path:
    """A new empty folder ``parent/.<stem>.<random>`` (mode from the umask, unlike ``mkdtemp``'s 0700)."""
    while True:
        path = parent / f".{stem}.{secrets.token_hex(6)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def export_project(project: Project, out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Write the dataset of ``project`` to ``out`` (default ``PROJECT_DIR/export``).

    Returns:
        The manifest's ``summary`` (counts per folder kind, images copied and missing).

    Raises:
        ValueError: ``out`` cannot be the export folder (see :func:`export_target`).
    """
    target = export_target(project, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_folder(target.parent, f"{target.name}.new")
    try:
        summary = _write(project, tmp)
        if target.exists():
            old = _new_folder(target.parent, f"{target.name}.old")
            os.replace(target, old)  # onto the new empty folder
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _image_names(frames: list[Any]) -> dict[str, str]:
    """``{frame key: file name under images/}``: video frames as saved in the project
    (``frames/s1_f0000000.jpg``), images by their key made relative and safe; clashes get the frame id."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for fr in frames:
        if fr["frame_index"] is not None:
            name = PurePosixPath(fr["file"]).as_posix()
        else:
            parts = [p for p in PurePosixPath(fr["key"].replace("\\", "/")).parts if p not in ("/", ".", "..")]
            name = "/".join(parts) or f"image_{fr['id']}"
        if name.lower() in taken:
            p = PurePosixPath(name)
            name = str(p.with_name(f"{p.stem}__{fr['id']}{p.suffix}"))
        taken.add(name.lower())
        out[fr["key"]] = name
    return out


def _write(project: Project, root: Path) -> dict[str, Any]:
    db = project.db
    names = identity_names(db)
    shown = used_identities(db)
    folders = _unique_folders({i: n for i, n in names.items() if i in shown})
    states = face_states(db)
    cands = candidate_lists(db)
    faces = db.query(
        "SELECT f.*, fr.key AS frame_key, fr.file AS frame_file, fr.frame_index, fr.timestamp, fr.width, fr.height,"
        " s.path AS source_path, s.kind AS source_kind FROM faces f JOIN frames fr ON fr.id = f.frame_id"
        " JOIN sources s ON s.id = fr.source_id ORDER BY f.id"
    )
    counts: Counter = Counter()
    boxes: dict[str, list[list[float]]] = {}
    frames: dict[str, Any] = {}
    entries = []
    written: list[str] = []
    for f in faces:
        rep = f["dup_of"] if f["dup_of"] is not None else f["id"]
        st = states.get(rep)
        entry: dict[str, Any] = {
            "face_id": f["id"], "source": f["source_path"], "source_kind": f["source_kind"],
            "image": f["frame_key"], "image_file": None, "frame_index": f["frame_index"], "timestamp": f["timestamp"],
            "box": [round(f[k], 2) for k in ("x1", "y1", "x2", "y2")], "detection_score": round(f["score"], 6),
            "status": f["status"], "crop_size": [f["crop_w"], f["crop_h"]],
            "sharpness": None if f["sharpness"] is None else round(f["sharpness"], 2),
            "duplicate_of": f["dup_of"],
            "candidates": [{"identity": names[i], "similarity": round(s, 4)} for i, s in cands.get(rep, [])],
            "review": None, "label": None, "crop_file": None,
        }
        if f["status"] in _DETECTED and not (st is not None and st.not_face):
            boxes.setdefault(f["frame_key"], []).append([f["x1"], f["y1"], f["x2"], f["y2"]])
            frames[f["frame_key"]] = {"id": f["frame_id"], "key": f["frame_key"], "file": f["frame_file"],
                                      "frame_index": f["frame_index"], "width": f["width"], "height": f["height"]}
        if st is not None:
            entry["answers"] = [
                {"answer": a["answer"], "identity": names.get(a["identity_id"]) if a["identity_id"] else None,
                 "annotator": a["annotator"], "at": a["at"], "undone_at": a["undone_at"]}
                for a in st.answered_by
            ]
            if st.not_face:
                entry["review"] = "not_face"
            elif st.label is not None:
                entry["review"], entry["label"] = "confirmed", names[st.label]
                entry["crop_file"] = _copy_crop(project, f["id"], root / "identities" / folders[st.label])
            else:
                cur = current_candidate(st, cands.get(rep, []))
                entry["review"] = "unreviewed"
                if cur is not None:
                    entry["label"] = names[cur[0]]
                    dest = root / "unreviewed" / folders[cur[0]]
                else:
                    rep_cluster = db.scalar("SELECT cluster_id FROM faces WHERE id = ?", (rep,))
                    dest = root / "unreviewed" / f"_cluster_{rep_cluster}"
                entry["crop_file"] = _copy_crop(project, f["id"], dest)
            if entry["crop_file"]:
                written.append(entry["crop_file"])
            counts[entry["review"]] += 1
        entries.append(entry)
    image_files, missing = _copy_images(project, root, list(frames.values()))
    records = {
        image_files[key]: ImageRecord(image_files[key], bl, width=frames[key]["width"], height=frames[key]["height"])
        for key, bl in boxes.items() if key in image_files
    }
    for entry in entries:
        if entry["image"] in image_files and entry["status"] in _DETECTED and entry["review"] != "not_face":
            entry["image_file"] = f"{IMAGES}/{image_files[entry['image']]}"
    written += [f"{IMAGES}/{name}" for name in image_files.values()]
    write_icartoon_csv(root / "boxes.csv", records, kind="train")
    write_coco(root / "boxes_coco.json", records)
    written += ["boxes.csv", "boxes_coco.json"]
    stage_runs = [dict(r) for r in db.query("SELECT stage, started_at, seconds, n_in, kept, dropped, skipped FROM stage_runs ORDER BY id")]
    for r in stage_runs:
        r["dropped"] = json.loads(r["dropped"])
        r["done_now"] = r.pop("skipped")
    summary = {
        "faces": len(faces), "boxes": sum(len(r.boxes) for r in records.values()), "images_with_boxes": len(records),
        "images_missing": len(missing),
        "first_missing": f"{missing[0]['file']}: {missing[0]['error']}" if missing else None,
        "confirmed": counts["confirmed"], "unreviewed": counts["unreviewed"], "not_face": counts["not_face"],
        "identities": len({e["label"] for e in entries if e["review"] == "confirmed"}),
    }
    manifest = {
        "format": EXPORT_FORMAT,
        "project": str(project.root.resolve()),
        "settings": json.loads(db.get_meta("config") or "{}"),
        "embedder_model_id": db.get_meta("embedder_model_id"),
        "summary": summary,
        "identities": {folders[i]: names[i] for i in folders},
        "images_missing": missing,
        "stage_runs": stage_runs,
        "files": sorted(written),
        "faces": entries,
    }
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return summary


def _copy_images(project: Project, root: Path, frames: list[dict[str, Any]]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Copy the images that have boxes under ``root/images``; returns ``{frame key: name}`` and the
    ones whose file could not be read (moved or deleted sources: their boxes are left out)."""
    names = _image_names(sorted(frames, key=lambda fr: fr["id"]))
    copied: dict[str, str] = {}
    missing = []
    for fr in frames:
        src = project.resolve(fr["file"])
        dest = root / IMAGES / names[fr["key"]]
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        except OSError as exc:
            missing.append({"image": fr["key"], "file": str(src), "error": exc.strerror or type(exc).__name__})
            continue
        copied[fr["key"]] = names[fr["key"]]
    return copied, missing


def _copy_crop(project: Project, face_id: int, folder: Path) -> str | None:
    src = project.crop_file(face_id)
    if not src.is_file():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{face_id}.jpg"
    shutil.copyfile(src, dest)
    return dest.relative_to(folder.parents[1]).as_posix()
