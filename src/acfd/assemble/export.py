"""Export an assembling project as a dataset, at any point of the review.

Layout of ``OUT``::

    identities/<name>/<face id>.jpg      crops a person confirmed (and their near-duplicates)
    unreviewed/<name>/<face id>.jpg      crops whose best open candidate is <name> (not yet reviewed)
    unreviewed/_cluster_<k>/...          unnamed crops, by cluster
    boxes.csv                            every detection kept (not marked "not a face"), iCartoonFace CSV
    boxes_coco.json                      the same boxes as a COCO detection dataset
    manifest.json                        settings, stage counts, and per crop: provenance (source
                                         file, frame, timestamp, box, scores), status, label, and
                                         who answered what and when

The folder is built beside ``OUT`` and renamed into place, so an export is never half-written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from acfd.assemble.project import Project
from acfd.assemble.review import candidate_lists, current_candidate, face_states, identity_names
from acfd.data.formats import ImageRecord, write_coco, write_icartoon_csv
from acfd.utils import atomic_write_text

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


def export_project(project: Project, out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Write the dataset of ``project`` to ``out`` (default ``PROJECT_DIR/export``).

    Returns:
        The manifest's ``summary`` (counts per folder kind).

    Raises:
        ValueError: ``out`` is the project folder itself, or an existing file.
    """
    db = project.db
    target = Path(out) if out is not None else project.root / "export"
    if target.resolve() == project.root.resolve():
        raise ValueError(f"{target}: the export folder cannot be the project folder itself")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target}: is a file, not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        summary = _write(project, tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _write(project: Project, root: Path) -> dict[str, Any]:
    db = project.db
    names = identity_names(db)
    folders = _unique_folders(names)
    states = face_states(db)
    cands = candidate_lists(db)
    faces = db.query(
        "SELECT f.*, fr.key AS frame_key, fr.file AS frame_file, fr.frame_index, fr.timestamp, fr.width, fr.height,"
        " s.path AS source_path, s.kind AS source_kind FROM faces f JOIN frames fr ON fr.id = f.frame_id"
        " JOIN sources s ON s.id = fr.source_id ORDER BY f.id"
    )
    counts: Counter = Counter()
    records: dict[str, ImageRecord] = {}
    boxes: dict[str, list[list[float]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    entries = []
    for f in faces:
        rep = f["dup_of"] if f["dup_of"] is not None else f["id"]
        st = states.get(rep)
        entry: dict[str, Any] = {
            "face_id": f["id"], "source": f["source_path"], "source_kind": f["source_kind"],
            "image": f["frame_key"], "frame_index": f["frame_index"], "timestamp": f["timestamp"],
            "box": [round(f[k], 2) for k in ("x1", "y1", "x2", "y2")], "detection_score": round(f["score"], 6),
            "status": f["status"], "crop_size": [f["crop_w"], f["crop_h"]],
            "sharpness": None if f["sharpness"] is None else round(f["sharpness"], 2),
            "duplicate_of": f["dup_of"],
            "candidates": [{"identity": names[i], "similarity": round(s, 4)} for i, s in cands.get(rep, [])],
            "review": None, "label": None, "crop_file": None,
        }
        if f["status"] in _DETECTED and not (st is not None and st.not_face):
            boxes.setdefault(f["frame_key"], []).append([f["x1"], f["y1"], f["x2"], f["y2"]])
            sizes[f["frame_key"]] = (f["width"], f["height"])
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
            counts[entry["review"]] += 1
        entries.append(entry)
    for key, bl in boxes.items():
        w, h = sizes[key]
        records[key] = ImageRecord(key, bl, width=w, height=h)
    write_icartoon_csv(root / "boxes.csv", records, kind="train")
    write_coco(root / "boxes_coco.json", records)
    stage_runs = [dict(r) for r in db.query("SELECT stage, started_at, seconds, n_in, kept, dropped, skipped FROM stage_runs ORDER BY id")]
    for r in stage_runs:
        r["dropped"] = json.loads(r["dropped"])
        r["done_now"] = r.pop("skipped")
    summary = {
        "faces": len(faces), "boxes": sum(len(b) for b in boxes.values()), "images_with_boxes": len(records),
        "confirmed": counts["confirmed"], "unreviewed": counts["unreviewed"], "not_face": counts["not_face"],
        "identities": len({e["label"] for e in entries if e["review"] == "confirmed"}),
    }
    manifest = {
        "format": "acfd-assemble-export/1",
        "project": str(project.root.resolve()),
        "settings": json.loads(db.get_meta("config") or "{}"),
        "embedder_model_id": db.get_meta("embedder_model_id"),
        "summary": summary,
        "identities": {folders[i]: names[i] for i in names},
        "stage_runs": stage_runs,
        "faces": entries,
    }
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return summary


def _copy_crop(project: Project, face_id: int, folder: Path) -> str | None:
    src = project.crop_file(face_id)
    if not src.is_file():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{face_id}.jpg"
    shutil.copyfile(src, dest)
    return dest.relative_to(folder.parents[1]).as_posix()
