"""The human part (MM'20 section 3.1 "Q/A Manual Annotation", arXiv "Final manual annotation"):
true/false questions "Is this <name>?" about each representative crop, and group answers that
accept or reject a name for many crops at once.

Answers are rows of ``answers`` grouped in ``actions`` (one click = one action, one transaction);
undo marks the annotator's last action undone, nothing is deleted. A face's state is derived from
its answers in order:

- ``yes`` (with an identity) labels it; ``not_face`` excludes it; ``skip`` only moves it back;
- ``no`` rejects that identity; the next question about the face proposes its next-best candidate;
- a face with no candidate left (or none from the references) is *unnamed*: it is shown in its
  cluster in the group view, where a person gives the group a name.

Only representatives are asked about; their near-duplicates share their label at export.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from acfd.assemble.db import ProjectDB, now_iso

ANSWERS = ("yes", "no", "not_face", "skip")
#: How long a question given to one annotator is kept from the others (two browsers at once).
LEASE_SECONDS = 120.0
MAX_NAME_LENGTH = 100


@dataclass
class FaceState:
    """What the answers so far say about one representative crop."""

    face_id: int
    label: int | None = None
    not_face: bool = False
    rejected: set[int] = field(default_factory=set)
    skips: int = 0
    answered_by: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reviewed(self) -> bool:
        return self.label is not None or self.not_face


def representatives(db: ProjectDB) -> list[Any]:
    """Rows (``id, cluster_id``) of the crops that are asked about (kept, not duplicates)."""
    return db.query(
        "SELECT id, cluster_id FROM faces WHERE status = 'kept' AND dedup_done = 1 AND dup_of IS NULL ORDER BY id"
    )


def face_states(db: ProjectDB, face_ids: list[int] | None = None) -> dict[int, FaceState]:
    """Replay the non-undone answers, in order, into a :class:`FaceState` per representative."""
    ids = [r["id"] for r in representatives(db)] if face_ids is None else face_ids
    states = {i: FaceState(i) for i in ids}
    rows = db.query(
        "SELECT a.face_id, a.identity_id, a.answer, t.annotator, t.created_at, t.undone_at, t.id AS action"
        " FROM answers a JOIN actions t ON t.id = a.action_id ORDER BY a.id"
    )
    for r in rows:
        st = states.get(r["face_id"])
        if st is None:
            continue
        st.answered_by.append(
            {"answer": r["answer"], "identity_id": r["identity_id"], "annotator": r["annotator"],
             "at": r["created_at"], "undone_at": r["undone_at"], "action": r["action"]}
        )
        if r["undone_at"] is not None:
            continue
        ans, ident = r["answer"], r["identity_id"]
        if ans == "yes":
            st.label, st.not_face = ident, False
            st.rejected.discard(ident)
        elif ans == "no":
            st.rejected.add(ident)
            if st.label == ident:
                st.label = None
        elif ans == "not_face":
            st.not_face, st.label = True, None
        elif ans == "skip":
            st.skips += 1
    return states


def candidate_lists(db: ProjectDB) -> dict[int, list[tuple[int, float]]]:
    """``{face_id: [(identity_id, similarity), ...]}``, best first."""
    out: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for r in db.query("SELECT face_id, identity_id, similarity FROM candidates ORDER BY face_id, similarity DESC, identity_id"):
        out[r["face_id"]].append((r["identity_id"], r["similarity"]))
    return out


def current_candidate(state: FaceState, cands: list[tuple[int, float]]) -> tuple[int, float] | None:
    """The best candidate identity the answers have not rejected, or ``None``."""
    for ident, sim in cands:
        if ident not in state.rejected:
            return ident, sim
    return None


def identity_names(db: ProjectDB) -> dict[int, str]:
    return {r["id"]: r["name"] for r in db.query("SELECT id, name FROM identities")}


def _face_info(db: ProjectDB, face_id: int) -> dict[str, Any]:
    r = db.query(
        "SELECT f.id, f.x1, f.y1, f.x2, f.y2, f.score, f.sharpness, f.cluster_id, fr.key, fr.frame_index,"
        " fr.timestamp, (SELECT COUNT(*) FROM faces d WHERE d.dup_of = f.id) AS duplicates"
        " FROM faces f JOIN frames fr ON fr.id = f.frame_id WHERE f.id = ?",
        (face_id,),
    )[0]
    return {
        "face_id": r["id"], "box": [round(r[k], 1) for k in ("x1", "y1", "x2", "y2")],
        "score": round(r["score"], 4), "sharpness": round(r["sharpness"] or 0.0, 1),
        "source": r["key"], "frame_index": r["frame_index"], "timestamp": r["timestamp"],
        "duplicates": r["duplicates"], "cluster_id": r["cluster_id"],
    }


def pending_questions(db: ProjectDB) -> list[tuple[int, int, float, int]]:
    """``(face_id, identity_id, similarity, skips)`` of every open yes/no question."""
    states = face_states(db)
    cands = candidate_lists(db)
    out = []
    for fid, st in states.items():
        if st.reviewed:
            continue
        cur = current_candidate(st, cands.get(fid, []))
        if cur is not None:
            out.append((fid, cur[0], cur[1], st.skips))
    return out


def next_question(db: ProjectDB, annotator: str, exclude: tuple[int, ...] = ()) -> dict[str, Any] | None:
    """The next open question for ``annotator`` (least skipped, most similar first), leased to them
    for :data:`LEASE_SECONDS` so that another annotator gets another one; ``None`` when none is left.
    """
    now = time.time()
    with db.transaction() as c:
        open_q = pending_questions(db)
        leases = {r["id"]: (r["lease_by"], r["lease_until"]) for r in c.execute(
            "SELECT id, lease_by, lease_until FROM faces WHERE lease_until IS NOT NULL").fetchall()}
        free = [
            q for q in open_q
            if q[0] not in exclude and not (q[0] in leases and leases[q[0]][0] != annotator and (leases[q[0]][1] or 0) > now)
        ]
        if not free:
            return None
        fid, ident, sim, skips = min(free, key=lambda q: (q[3], -q[2], q[0]))
        c.execute("UPDATE faces SET lease_by = ?, lease_until = ? WHERE id = ?", (annotator, now + LEASE_SECONDS, fid))
    refs = db.query("SELECT id FROM refs WHERE identity_id = ? AND file IS NOT NULL ORDER BY id LIMIT 4", (ident,))
    return {
        **_face_info(db, fid),
        "identity_id": ident,
        "name": identity_names(db)[ident],
        "similarity": round(sim, 4),
        "references": [r["id"] for r in refs],
        "remaining": len(open_q),
    }


def identity_for(db: ProjectDB, identity_id: int | None, name: str | None, c: Any) -> int | None:
    """The identity an answer is about: an existing id, or a name (created when new)."""
    if identity_id is not None:
        if not c.execute("SELECT 1 FROM identities WHERE id = ?", (identity_id,)).fetchone():
            raise ValueError(f"no identity {identity_id}")
        return identity_id
    if name is None:
        return None
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"a name must have 1 to {MAX_NAME_LENGTH} characters")
    c.execute("INSERT OR IGNORE INTO identities (name, origin, created_at) VALUES (?, 'annotator', ?)", (name, now_iso()))
    return int(c.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()[0])


def record_answer(
    db: ProjectDB,
    annotator: str,
    face_ids: list[int],
    answer: str,
    identity_id: int | None = None,
    name: str | None = None,
    kind: str = "question",
) -> int:
    """Store one action (one question, or one group answer) in one transaction; returns its id.

    Raises:
        ValueError: unknown answer, a face that is not a representative crop, ``yes``/``no``
            without an identity, or an empty name.
    """
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {', '.join(ANSWERS)}")
    if not face_ids:
        raise ValueError("no face given")
    with db.transaction() as c:
        ident = identity_for(db, identity_id, name, c)
        if answer in ("yes", "no") and ident is None:
            raise ValueError(f"a '{answer}' answer needs the identity it is about")
        marks = ",".join("?" * len(face_ids))
        found = {r[0] for r in c.execute(
            f"SELECT id FROM faces WHERE id IN ({marks}) AND status = 'kept' AND dup_of IS NULL AND dedup_done = 1",
            tuple(face_ids)).fetchall()}
        missing = [f for f in face_ids if f not in found]
        if missing:
            raise ValueError(f"not a crop to review: {missing[:5]}")
        action = int(c.execute(
            "INSERT INTO actions (annotator, kind, created_at) VALUES (?, ?, ?)", (annotator, kind, now_iso())
        ).lastrowid)
        c.executemany(
            "INSERT INTO answers (action_id, face_id, identity_id, answer) VALUES (?, ?, ?, ?)",
            [(action, f, ident if answer != "not_face" else None, answer) for f in dict.fromkeys(face_ids)],
        )
        c.execute(f"UPDATE faces SET lease_by = NULL, lease_until = NULL WHERE id IN ({marks})", tuple(face_ids))
    return action


def undo_last(db: ProjectDB, annotator: str) -> dict[str, Any] | None:
    """Undo ``annotator``'s last action that is not undone yet; returns it (``None`` if none)."""
    with db.transaction() as c:
        row = c.execute(
            "SELECT id, kind FROM actions WHERE annotator = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1",
            (annotator,),
        ).fetchone()
        if row is None:
            return None
        c.execute("UPDATE actions SET undone_at = ? WHERE id = ?", (now_iso(), row["id"]))
        faces = [r[0] for r in c.execute("SELECT face_id FROM answers WHERE action_id = ?", (row["id"],)).fetchall()]
    return {"action": row["id"], "kind": row["kind"], "face_ids": faces}


def groups(db: ProjectDB, max_faces: int = 200) -> list[dict[str, Any]]:
    """Open crops in groups for the group view: one per candidate identity (the crops whose current
    candidate it is) and one per cluster of unnamed crops; largest first."""
    states = face_states(db)
    cands = candidate_lists(db)
    names = identity_names(db)
    reps = {r["id"]: r["cluster_id"] for r in representatives(db)}
    by_identity: dict[int, list[int]] = defaultdict(list)
    by_cluster: dict[int, list[int]] = defaultdict(list)
    for fid, st in states.items():
        if st.reviewed:
            continue
        cur = current_candidate(st, cands.get(fid, []))
        if cur is not None:
            by_identity[cur[0]].append(fid)
        else:
            by_cluster[reps.get(fid) or 0].append(fid)
    out = [
        {"kind": "candidate", "key": f"identity-{i}", "identity_id": i, "name": names[i], "size": len(f), "face_ids": f[:max_faces]}
        for i, f in by_identity.items()
    ] + [
        {"kind": "cluster", "key": f"cluster-{k}", "cluster_id": k, "identity_id": None, "name": None, "size": len(f), "face_ids": f[:max_faces]}
        for k, f in by_cluster.items()
    ]
    out.sort(key=lambda g: (-g["size"], g["key"]))
    return out


def progress(db: ProjectDB) -> dict[str, Any]:
    """Answered / remaining per identity, and the totals."""
    states = face_states(db)
    cands = candidate_lists(db)
    names = identity_names(db)
    per: dict[int, dict[str, int]] = {i: {"confirmed": 0, "pending": 0, "rejected": 0} for i in names}
    unnamed = not_face = 0
    for fid, st in states.items():
        for ident in st.rejected:
            per[ident]["rejected"] += 1
        if st.not_face:
            not_face += 1
        elif st.label is not None:
            per[st.label]["confirmed"] += 1
        else:
            cur = current_candidate(st, cands.get(fid, []))
            if cur is None:
                unnamed += 1
            else:
                per[cur[0]]["pending"] += 1
    actions = db.query(
        "SELECT kind, COUNT(*) AS n FROM actions WHERE undone_at IS NULL GROUP BY kind"
    )
    return {
        "identities": sorted(
            ({"identity_id": i, "name": names[i], **c} for i, c in per.items()), key=lambda d: (-d["confirmed"] - d["pending"], d["name"])
        ),
        "representatives": len(states),
        "reviewed": sum(st.reviewed for st in states.values()),
        "not_face": not_face,
        "open_questions": sum(c["pending"] for c in per.values()),
        "unnamed": unnamed,
        "actions": {r["kind"]: r["n"] for r in actions},
    }
