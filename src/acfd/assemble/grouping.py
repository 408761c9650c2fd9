"""The assembling stages that group faces (5-8 of :mod:`acfd.assemble.stages`): near-duplicates
and face tracks, the reference set, candidate characters (prototypes, refitted as answers come in)
and clusters of what the references leave, each adapted to the show when ``cfg.adapt``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from acfd.assemble.config import AssembleConfig
from acfd.assemble.db import from_blob, now_iso, to_blob
from acfd.assemble.project import Project, thumbnail, write_jpeg
from acfd.assemble.reports import (
    Embedder,
    Leaders,
    StageReport,
    check_embedder_model,
    embedding_matrix,
    progress_bar,
    record_report,
    similarity_setting,
)
from acfd.data.image_io import ImageReadError, is_image_file, load_image
from acfd.recognition.adaptation import ShowAdaptation, fit_show_adaptation
from acfd.recognition.gallery_model import adapted, fit_gallery_model

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# 5. near-duplicate removal


def dedup(project: Project, cfg: AssembleConfig, progress: bool = True, commit_every: int = 256) -> StageReport:
    """Mark near-duplicates: a crop whose cosine similarity to an earlier kept representative is
    above ``dup_sim`` becomes a duplicate of it (``faces.dup_of``), else a representative.

    Crops are visited in id order against a Faiss inner-product index of the representatives, so
    the result does not depend on how a run was split. Only representatives are asked about; a
    duplicate takes its representative's label at export.

    With ``cfg.tracks``, a face of a video frame whose box overlaps (IoU >= :data:`TRACK_IOU`) a
    face of the previous sampled frame of the same video, each the other's best overlap, continues
    that face's track: one character, so it becomes a duplicate of the track's representative
    (an episode's structure, given for free).
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    dup_sim = similarity_setting(cfg, "dup_sim")
    reps = db.query("SELECT id, embedding FROM faces WHERE dedup_done = 1 AND dup_of IS NULL AND embedding IS NOT NULL ORDER BY id")
    todo = db.query("SELECT id, embedding FROM faces WHERE dedup_done = 0 AND embedding IS NOT NULL ORDER BY id")
    leaders = Leaders(reps, [r["id"] for r in reps])
    tracks = _Tracks(db) if cfg.tracks else None
    pending: list[tuple[int | None, int]] = []

    def flush() -> None:
        with db.transaction() as c:
            c.executemany("UPDATE faces SET dup_of = ?, dedup_done = 1 WHERE id = ?", pending)
        pending.clear()

    with progress_bar(len(todo), "dedup", "crop", progress) as bar:
        for row in todo:
            v = from_blob(row["embedding"]).reshape(1, -1)
            dup_of = tracks.previous(row["id"]) if tracks is not None else None
            if dup_of is None:
                dup_of = leaders.match(v, dup_sim)
            if dup_of is None:
                leaders.add(v, row["id"])
            if tracks is not None:
                tracks.representative[row["id"]] = dup_of if dup_of is not None else row["id"]
            pending.append((dup_of, row["id"]))
            if len(pending) >= commit_every:
                flush()
            bar.update(1)
        if pending:
            flush()
    n = int(db.scalar("SELECT COUNT(*) FROM faces WHERE dedup_done = 1") or 0)
    dups = int(db.scalar("SELECT COUNT(*) FROM faces WHERE dup_of IS NOT NULL") or 0)
    report = StageReport(
        "dedup", "crops", n_in=n, kept=n - dups,
        dropped={f"near-duplicate (cos > {dup_sim})" + (" or the same face track" if cfg.tracks else ""): dups},
        done_now=len(todo), seconds=time.perf_counter() - t0,
    )
    return record_report(project, report, started)


#: Box overlap above which faces of consecutive sampled video frames continue one face track.
TRACK_IOU = 0.5


class _Tracks:
    """Face tracks across consecutive sampled frames of each video (see :func:`dedup`)."""

    def __init__(self, db: Any) -> None:
        rows = db.query(
            "SELECT f.id, f.frame_id, f.x1, f.y1, f.x2, f.y2, f.dup_of, f.dedup_done, fr.source_id, fr.frame_index"
            " FROM faces f JOIN frames fr ON fr.id = f.frame_id JOIN sources s ON s.id = fr.source_id"
            " WHERE s.kind = 'video' AND f.status = 'kept' AND f.embedding IS NOT NULL ORDER BY fr.source_id, fr.frame_index, f.id"
        )
        self.box = {r["id"]: (r["x1"], r["y1"], r["x2"], r["y2"]) for r in rows}
        self.frame_of = {r["id"]: r["frame_id"] for r in rows}
        self.faces_in: dict[int, list[int]] = {}
        frames_of_source: dict[int, list[int]] = {}
        for r in rows:
            self.faces_in.setdefault(r["frame_id"], []).append(r["id"])
            order = frames_of_source.setdefault(r["source_id"], [])
            if not order or order[-1] != r["frame_id"]:
                order.append(r["frame_id"])
        self.previous_frame = {b: a for order in frames_of_source.values() for a, b in zip(order, order[1:])}
        #: face -> the representative of its track so far (faces already deduplicated count too)
        self.representative = {r["id"]: r["dup_of"] or r["id"] for r in rows if r["dedup_done"]}

    def _best(self, face: int, others: list[int]) -> tuple[int | None, float]:
        if not others:
            return None, 0.0
        iou = box_iou(torch.tensor([self.box[face]]), torch.tensor([self.box[o] for o in others]))[0]
        j = int(iou.argmax())
        return others[j], float(iou[j])

    def previous(self, face: int) -> int | None:
        """The representative of the track ``face`` continues, or None."""
        frame = self.frame_of.get(face)
        before = self.previous_frame.get(frame) if frame is not None else None
        if before is None:
            return None
        match, iou = self._best(face, self.faces_in[before])
        if match is None or iou < TRACK_IOU or self._best(match, self.faces_in[frame])[0] != face:
            return None
        return self.representative.get(match, match)


# ------------------------------------------------------------------------------------------------
# 6. reference set


def _identity_id(c: Any, name: str, origin: str) -> int:
    c.execute("INSERT OR IGNORE INTO identities (name, origin, created_at) VALUES (?, ?, ?)", (name, origin, now_iso()))
    return int(c.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()[0])


def _pin_reference_source(project: Project, key: str, given: Path, option: str) -> None:
    """Record the project's reference folder / gallery on first use; refuse another one later (as
    changed settings are refused: candidates made from two reference sets would not be comparable)."""
    resolved, stored = str(given.resolve()), project.db.get_meta(key)
    if stored is None:
        project.db.set_meta(key, resolved)
    elif stored != resolved:
        raise ValueError(
            f"{project.root}: the project's references come from {stored}, not {resolved} ({option}); "
            "add images to that folder (new ones are loaded) or start a new project"
        )


def add_references(
    project: Project,
    embedder: Embedder,
    references: str | Path | None = None,
    gallery: str | Path | None = None,
    progress: bool = True,
) -> StageReport:
    """Load the reference set: "typical" images per character (the papers' reference images).

    ``references`` is a folder with one subfolder per character holding face crops (a few
    typical images each); ``gallery`` is a gallery file of the recognition issue (``acfd gallery
    add``), whose stored embeddings are used as they are. Images already loaded are skipped.

    Raises:
        ValueError: a references path that is not a folder, a references folder or gallery other
            than the one the project was started with (as changed settings are refused), a
            gallery of another model.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    check_embedder_model(project, "embedder_model_id", embedder)
    dropped: Counter = Counter()
    done_now = 0
    if references is not None:
        root = Path(references)
        if not root.is_dir():
            raise ValueError(f"{root}: --references must be a folder with one subfolder per character")
        _pin_reference_source(project, "references_root", root, "--references")
        files = [p for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
                 for p in sorted(d.iterdir()) if p.is_file() and is_image_file(p)]
        known = {r["origin"] for r in db.query("SELECT origin FROM refs")}
        todo = [p for p in files if str(p.resolve()) not in known]
        with progress_bar(len(todo), "references", "img", progress) as bar:
            for p in todo:
                try:
                    image = load_image(p)
                except ImageReadError as exc:
                    logger.warning("%s", exc)
                    dropped["unreadable"] += 1
                    bar.update(1)
                    continue
                vector = np.asarray(embedder.embed([image]), np.float32)[0]
                with db.transaction() as c:
                    identity = _identity_id(c, p.parent.name, "references")
                    cur = c.execute(
                        "INSERT INTO refs (identity_id, file, origin, embedding) VALUES (?, NULL, ?, ?)",
                        (identity, str(p.resolve()), to_blob(vector)),
                    )
                    ref_id = int(cur.lastrowid)
                    write_jpeg(project.reference_file(ref_id), thumbnail(image, 256))
                    c.execute("UPDATE refs SET file = ? WHERE id = ?", (f"references/{ref_id}.jpg", ref_id))
                done_now += 1
                bar.update(1)
    if gallery is not None:
        from acfd.recognition.gallery import Gallery

        g = Gallery.load(gallery)
        g.check_model(embedder.model_id, embedder.embedding_dim)
        _pin_reference_source(project, "references_gallery", Path(gallery), "--gallery")
        vectors = g.vectors()
        with db.transaction() as c:
            for i, (name, vector) in enumerate(zip(g.names, vectors)):
                origin = f"gallery:{Path(gallery).resolve()}#{i}"
                if c.execute("SELECT 1 FROM refs WHERE origin = ?", (origin,)).fetchone():
                    continue
                identity = _identity_id(c, name, "gallery")
                c.execute("INSERT INTO refs (identity_id, file, origin, embedding) VALUES (?, NULL, ?, ?)",
                          (identity, origin, to_blob(vector)))
                done_now += 1
    n_refs = int(db.scalar("SELECT COUNT(*) FROM refs") or 0)
    n_ids = int(db.scalar("SELECT COUNT(DISTINCT identity_id) FROM refs") or 0)
    report = StageReport(
        "references", "images", n_in=n_refs + sum(dropped.values()), kept=n_refs, dropped=dict(dropped),
        done_now=done_now, seconds=time.perf_counter() - t0, note=f"{n_ids} identities",
    )
    return record_report(project, report, started)


# ------------------------------------------------------------------------------------------------
# 7. candidate identities


def candidates(project: Project, cfg: AssembleConfig, progress: bool = True) -> StageReport:
    """Give each open representative crop its candidate identities, best first.

    A character is a candidate when the crop's cosine to its prototype (the mean of its
    reference images and of the crops already confirmed as it: :mod:`acfd.recognition.gallery_model`)
    is above ``candidate_sim``, or, when that is ``None``, above the threshold calibrated on the
    references themselves. Run again (or :func:`refit_candidates`) after answers, the confirmed
    crops sharpen the prototypes and the open crops are re-ranked.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    state = _candidates_state(db)
    n_open = 0
    if db.get_meta("candidates_state") != state:
        with progress_bar(1, "candidates", "refit", progress) as bar:
            _, n_open = refit_candidates(project, cfg)
            bar.update(1)
        db.set_meta("candidates_state", _candidates_state(db))
    threshold = _candidate_threshold(project)
    with_cand = int(db.scalar("SELECT COUNT(DISTINCT face_id) FROM candidates") or 0)
    shown = "calibrated" if cfg.candidate_sim is None else "set"
    report = StageReport(
        "candidates", "crops", n_in=n_open, kept=with_cand,
        dropped={f"no character above {threshold:.3f} ({shown}; left for clustering)": n_open - with_cand},
        done_now=n_open, seconds=time.perf_counter() - t0,
    )
    return record_report(project, report, started)


#: Fewest kept crops that stand for the show (fewer: no adaptation).
MIN_CROPS_TO_ADAPT = 20


def project_adaptation(project: Project) -> ShowAdaptation | None:
    """The show's adaptation (:mod:`acfd.recognition.adaptation`) fitted on the project's kept
    crops, or None with fewer than :data:`MIN_CROPS_TO_ADAPT` (the mean of a few crops is mostly
    those crops' own characters). Seeded, so the same crops give the same adaptation: it is fitted
    again only when they change (``project.adaptation_cache``), not by every stage and refit."""
    rows = project.db.query("SELECT embedding FROM faces WHERE status = 'kept' AND embedding IS NOT NULL ORDER BY id")
    if len(rows) < MIN_CROPS_TO_ADAPT:
        return None
    digest = hashlib.sha256(b"".join(bytes(r["embedding"]) for r in rows)).digest()
    cached = project.adaptation_cache
    if cached is None or cached[0] != digest:
        cached = project.adaptation_cache = (digest, fit_show_adaptation(embedding_matrix(rows)))
    return cached[1]


def _candidates_state(db: Any) -> str:
    """What the candidates depend on: the references, the answers (and undos), the representatives."""
    row = db.query(
        "SELECT (SELECT COUNT(*) FROM refs) AS r, (SELECT MAX(id) FROM refs) AS rm, (SELECT COUNT(*) FROM actions) AS a,"
        " (SELECT COUNT(undone_at) FROM actions) AS u,"
        " (SELECT COUNT(*) FROM faces WHERE dedup_done = 1 AND dup_of IS NULL AND embedding IS NOT NULL) AS f"
    )[0]
    return f"{row['r']}:{row['rm']}:{row['a']}:{row['u']}:{row['f']}"


def _candidate_threshold(project: Project) -> float:
    """The candidate threshold the last refit used (NaN before any)."""
    stored = project.db.get_meta("candidate_threshold")
    return float(stored) if stored is not None else float("nan")


def refit_candidates(project: Project, cfg: AssembleConfig) -> tuple[float, int]:
    """Re-rank every open representative against prototypes of the references and the confirmed
    crops (what the answers so far taught); answered crops keep their answers.

    Returns:
        The candidate threshold used, and the number of open crops re-ranked.
    """
    from acfd.assemble.review import face_states

    db = project.db
    states = face_states(db)
    rows = db.query(
        "SELECT id, embedding FROM faces WHERE dedup_done = 1 AND dup_of IS NULL AND embedding IS NOT NULL ORDER BY id"
    )
    embedding = {r["id"]: from_blob(r["embedding"]) for r in rows}
    adaptation = project_adaptation(project) if cfg.adapt else None
    refs = db.query("SELECT identity_id, embedding FROM refs ORDER BY id")
    confirmed = [(fid, st.label) for fid, st in states.items() if st.label is not None and fid in embedding]
    vectors = [from_blob(r["embedding"]) for r in refs] + [embedding[fid] for fid, _ in confirmed]
    labels = [int(r["identity_id"]) for r in refs] + [int(label) for _, label in confirmed]
    open_ids = [fid for fid in embedding if fid not in states or not states[fid].reviewed]
    threshold = cfg.candidate_sim if cfg.candidate_sim is not None else float("nan")
    inserts: list[tuple[int, int, float]] = []
    if vectors and open_ids:
        model = fit_gallery_model(np.stack(vectors), np.asarray(labels), fallback_threshold=DEFAULT_CANDIDATE_SIM, adaptation=adaptation)
        if cfg.candidate_sim is None:
            threshold = model.threshold
        scores = model.scores(np.stack([embedding[fid] for fid in open_ids]))
        for fid, row in zip(open_ids, scores):
            inserts += [(fid, int(model.classes[j]), float(row[j])) for j in np.flatnonzero(row > threshold)]
    db.set_meta("candidate_threshold", repr(float(threshold)))
    before = _best_candidates(db.query("SELECT face_id, identity_id, similarity FROM candidates"))
    after = _best_candidates({"face_id": f, "identity_id": i, "similarity": s} for f, i, s in inserts)
    moved = [(fid,) for fid in open_ids if before.get(fid) != after.get(fid)]
    with db.transaction() as c:
        c.executemany("DELETE FROM candidates WHERE face_id = ?", [(fid,) for fid in open_ids])
        c.executemany("INSERT OR REPLACE INTO candidates (face_id, identity_id, similarity) VALUES (?, ?, ?)", inserts)
        c.executemany("UPDATE faces SET cand_done = 1 WHERE id = ?", [(fid,) for fid in embedding])
        # a face whose proposed character changed is a new question: pages showing the old one are stale
        c.executemany("UPDATE faces SET version = version + 1 WHERE id = ?", moved)
    return float(threshold), len(open_ids)


def _best_candidates(rows: Any) -> dict[int, int]:
    """``{face: its most similar candidate character}`` of candidate rows."""
    best: dict[int, tuple[float, int]] = {}
    for r in rows:
        if r["face_id"] not in best or r["similarity"] > best[r["face_id"]][0]:
            best[r["face_id"]] = (r["similarity"], r["identity_id"])
    return {f: ident for f, (_, ident) in best.items()}


#: The candidate threshold when the references cannot calibrate one (one image per character).
DEFAULT_CANDIDATE_SIM = 0.6


# ------------------------------------------------------------------------------------------------
# 8. clusters


def cluster(project: Project, cfg: AssembleConfig, progress: bool = True) -> StageReport:
    """Group representatives by leader clustering: in id order, a crop joins the cluster whose
    leader is most similar when that similarity is above ``cluster_sim``, else it leads a new one.

    The papers do not cluster; this lets a person name a group of crops that no reference
    claims in one answer. Leader clustering (hand-written, a dozen lines over a Faiss index) is
    incremental: a re-run with new crops never moves crops already answered about. Faces of one
    frame are different characters, so a crop never joins a cluster that holds a face of its frame.
    """
    t0, started = time.perf_counter(), now_iso()
    db = project.db
    cluster_sim = similarity_setting(cfg, "cluster_sim")
    adaptation = project_adaptation(project) if cfg.adapt else None
    rows_l = db.query(
        "SELECT c.id AS cid, f.embedding AS embedding FROM clusters c JOIN faces f ON f.id = c.leader_face_id ORDER BY c.id"
    )
    leaders = Leaders(rows_l, [r["cid"] for r in rows_l], adaptation)
    todo = db.query(
        "SELECT id, frame_id, embedding FROM faces WHERE dedup_done = 1 AND dup_of IS NULL AND cluster_id IS NULL ORDER BY id"
    )
    in_frame: dict[int, set[int]] = {}  # frame -> the clusters holding one of its faces
    for r in db.query("SELECT frame_id, cluster_id FROM faces WHERE cluster_id IS NOT NULL"):
        in_frame.setdefault(r["frame_id"], set()).add(r["cluster_id"])
    with progress_bar(len(todo), "cluster", "crop", progress) as bar:
        for start in range(0, len(todo), 256):
            rows = todo[start : start + 256]
            with db.transaction() as c:
                for row in rows:
                    v = adapted(from_blob(row["embedding"]).reshape(1, -1), adaptation)
                    taken = in_frame.setdefault(row["frame_id"], set())
                    target = leaders.match(v, cluster_sim, exclude=taken)
                    if target is None:
                        target = int(c.execute("INSERT INTO clusters (leader_face_id) VALUES (?)", (row["id"],)).lastrowid)
                        leaders.add(v, target)
                    taken.add(target)
                    c.execute("UPDATE faces SET cluster_id = ? WHERE id = ?", (target, row["id"]))
            bar.update(len(rows))
    n = int(db.scalar("SELECT COUNT(*) FROM faces WHERE cluster_id IS NOT NULL") or 0)
    unassigned = db.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT cluster_id) AS k FROM faces WHERE cluster_id IS NOT NULL"
        " AND id NOT IN (SELECT face_id FROM candidates)"
    )[0]
    report = StageReport(
        "cluster", "crops", n_in=n, kept=n, done_now=len(todo), seconds=time.perf_counter() - t0,
        note=f"{int(db.scalar('SELECT COUNT(*) FROM clusters') or 0)} clusters; the {unassigned['n']} crops "
        f"without a candidate fall in {unassigned['k']} of them",
    )
    return record_report(project, report, started)
