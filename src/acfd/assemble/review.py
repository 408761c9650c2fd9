"""The human part (MM'20 section 3.1 "Q/A Manual Annotation", arXiv "Final manual annotation"):
true/false questions "Is this <name>?" about each representative crop, and group answers that
accept or reject a name for many crops at once.

Answers are rows of ``answers`` grouped in ``actions`` (one click = one action, one transaction);
undo marks the last action of the same browser session undone, nothing is deleted. A face's state
is derived from its answers in order:

- ``yes`` (with an identity) labels it; ``not_face`` excludes it; ``skip`` only moves it back;
- ``no`` rejects that identity; the next question about the face proposes its next-best candidate;
- a face with no candidate left (or none from the references) is *unnamed*: it is shown in its
  cluster in the group view, where a person gives the group a name.

Only representatives are asked about; their near-duplicates share their label at export.

Several people at once (the annotation app, :mod:`acfd.annotate.app`):

- a question is *leased* to one browser session (``session``: an id per browser tab) for
  :data:`LEASE_SECONDS`, renewable, so two sessions never hold the same question; a session holds
  one question at a time and gives it back when it leaves (:func:`release_leases`);
- every face has a ``version`` that each answer about it (and each undo) increments; an answer sent
  with the versions the browser saw is refused with :class:`StaleAnswer` when any of them changed
  meanwhile, so an old page never overwrites a newer answer;
- undo takes back the last action of the session (or, without a session, of the annotator name);
- a name is created only when asked to (``create_name``; see :mod:`acfd.assemble.names`, which
  also renames and merges names).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from acfd.assemble.db import ProjectDB, now_iso
from acfd.assemble.names import identity_for, identity_names, shown_identity_names

ANSWERS = ("yes", "no", "not_face", "skip")
#: Action kinds that undo takes back.
UNDOABLE = ("question", "group")
#: How long a question given to one browser session is kept from the others (renewed while shown).
LEASE_SECONDS = 120.0


class StaleAnswer(ValueError):
    """Some faces changed since the browser loaded them; nothing was saved.

    Attributes:
        face_ids: the faces whose version changed.
    """

    def __init__(self, message: str, face_ids: list[int]) -> None:
        super().__init__(message)
        self.face_ids = face_ids


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


def _face_info(db: ProjectDB, face_id: int) -> dict[str, Any]:
    r = db.query(
        "SELECT f.id, f.x1, f.y1, f.x2, f.y2, f.score, f.sharpness, f.cluster_id, f.version, fr.key, fr.frame_index,"
        " fr.timestamp, fr.width, fr.height, (SELECT COUNT(*) FROM faces d WHERE d.dup_of = f.id) AS duplicates"
        " FROM faces f JOIN frames fr ON fr.id = f.frame_id WHERE f.id = ?",
        (face_id,),
    )[0]
    return {
        "face_id": r["id"], "box": [round(r[k], 1) for k in ("x1", "y1", "x2", "y2")],
        "score": round(r["score"], 4), "sharpness": round(r["sharpness"] or 0.0, 1),
        "source": r["key"], "frame_index": r["frame_index"], "timestamp": r["timestamp"],
        "duplicates": r["duplicates"], "cluster_id": r["cluster_id"], "version": r["version"],
        "frame_size": [r["width"], r["height"]],
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


def _lease_key(annotator: str, session: str | None) -> str:
    return f"session:{session}" if session else f"annotator:{annotator}"


def next_question(
    db: ProjectDB,
    annotator: str,
    exclude: tuple[int, ...] = (),
    *,
    session: str | None = None,
    reserve: bool = True,
    prefer: int | None = None,
) -> dict[str, Any] | None:
    """The next open question (least skipped, most similar first) that no other session holds;
    ``None`` when none is left.

    Args:
        db: the project database.
        annotator: who asks.
        exclude: face ids not to ask about.
        session: the browser session asking (leases and undo belong to it); without one, the
            annotator name stands for the session.
        reserve: lease the question to the session for :data:`LEASE_SECONDS` (the page does when
            it shows it); a session holds one question at a time, so its other leases are
            released, and a question it already holds is given again first. ``False`` only looks.
        prefer: this face when it is an open question no other session holds (the page asks
            again about a question whose answer it just undid).
    """
    now = time.time()
    me = _lease_key(annotator, session)
    with db.transaction() as c:
        open_q = pending_questions(db)
        leases = {r["id"]: (r["lease_by"], r["lease_until"]) for r in c.execute(
            "SELECT id, lease_by, lease_until FROM faces WHERE lease_until IS NOT NULL").fetchall()}
        held = lambda fid: fid in leases and leases[fid][0] != me and (leases[fid][1] or 0) > now  # noqa: E731
        free = [q for q in open_q if q[0] not in exclude and not held(q[0])]
        if not free:
            return None
        mine = [q for q in free if q[0] in leases and leases[q[0]][0] == me and (leases[q[0]][1] or 0) > now]
        preferred = [q for q in free if q[0] == prefer]
        fid, ident, sim, skips = min(preferred or mine or free, key=lambda q: (q[3], -q[2], q[0]))
        if reserve:
            c.execute("UPDATE faces SET lease_by = NULL, lease_until = NULL WHERE lease_by = ?", (me,))
            c.execute("UPDATE faces SET lease_by = ?, lease_until = ? WHERE id = ?", (me, now + LEASE_SECONDS, fid))
    refs = db.query("SELECT id FROM refs WHERE identity_id = ? AND file IS NOT NULL ORDER BY id LIMIT 4", (ident,))
    return {
        **_face_info(db, fid),
        "identity_id": ident,
        "name": identity_names(db)[ident],
        "similarity": round(sim, 4),
        "references": [r["id"] for r in refs],
        "remaining": len(open_q),
        "reserved_seconds": LEASE_SECONDS if reserve else 0.0,
    }


def renew_lease(db: ProjectDB, face_id: int, annotator: str, session: str | None = None) -> bool:
    """Extend the session's lease on ``face_id`` by :data:`LEASE_SECONDS` (the page does while it
    shows the question); ``False`` when another session holds it now (the lease ran out and was
    given away) or the face is no longer an open question."""
    now = time.time()
    me = _lease_key(annotator, session)
    with db.transaction() as c:
        row = c.execute("SELECT lease_by, lease_until FROM faces WHERE id = ?", (int(face_id),)).fetchone()
        if row is None or (row["lease_by"] not in (None, me) and (row["lease_until"] or 0) > now):
            return False
        if face_id not in {q[0] for q in pending_questions(db)}:
            return False
        c.execute("UPDATE faces SET lease_by = ?, lease_until = ? WHERE id = ?", (me, now + LEASE_SECONDS, int(face_id)))
    return True


def release_leases(db: ProjectDB, annotator: str, session: str | None = None) -> int:
    """Give back the questions the session holds (it left the page or the questions view); their count."""
    with db.transaction() as c:
        return c.execute(
            "UPDATE faces SET lease_by = NULL, lease_until = NULL WHERE lease_by = ?", (_lease_key(annotator, session),)
        ).rowcount


def face_versions(db: ProjectDB, face_ids: list[int]) -> dict[int, int]:
    """``{face_id: version}`` (the version counts the answers and undos about the face)."""
    marks = ",".join("?" * len(face_ids))
    return {r[0]: r[1] for r in db.query(f"SELECT id, version FROM faces WHERE id IN ({marks})", tuple(face_ids))}


def _last_change(c: Any, face_id: int) -> str:
    r = c.execute(
        "SELECT a.answer, i.name, t.annotator, t.undone_at FROM answers a JOIN actions t ON t.id = a.action_id"
        " LEFT JOIN identities i ON i.id = a.identity_id WHERE a.face_id = ? ORDER BY t.undone_at IS NULL, a.id DESC"
        " LIMIT 1", (face_id,)).fetchone()
    if r is None:
        return ""
    what = r["answer"].replace("_", " ") + (f" {r['name']}" if r["name"] else "")
    return f": {r['annotator']} answered '{what}'{', since undone' if r['undone_at'] else ''}"


def record_answer(
    db: ProjectDB,
    annotator: str,
    face_ids: list[int],
    answer: str,
    identity_id: int | None = None,
    name: str | None = None,
    kind: str = "question",
    *,
    session: str | None = None,
    versions: Mapping[int, int] | None = None,
    create_name: bool = True,
) -> int:
    """Store one action (one question, or one group answer) in one transaction; returns its id.

    Args:
        db: the project database.
        annotator: who answers.
        face_ids: the representative crops answered about.
        answer: one of :data:`ANSWERS`.
        identity_id: the identity a ``yes``/``no`` is about; or ``name`` (see :func:`identity_for`).
        name: the identity by name.
        kind: ``question`` or ``group``.
        session: the browser session (for undo and leases).
        versions: ``{face_id: version}`` as the browser saw them; when given, an answer about a
            face whose version changed since is refused (:class:`StaleAnswer`).
        create_name: create ``name`` when it is new (the app asks the person first).

    Raises:
        ValueError: unknown answer, a face that is not a representative crop, ``yes``/``no``
            without an identity, or an empty name.
        StaleAnswer: ``versions`` are out of date.
        acfd.assemble.names.NewName: ``name`` is new and ``create_name`` is false.
    """
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {', '.join(ANSWERS)}")
    if not face_ids:
        raise ValueError("no face given")
    face_ids = list(dict.fromkeys(int(f) for f in face_ids))
    with db.transaction() as c:
        marks = ",".join("?" * len(face_ids))
        found = {r[0]: r[1] for r in c.execute(
            f"SELECT id, version FROM faces WHERE id IN ({marks}) AND status = 'kept' AND dup_of IS NULL AND dedup_done = 1",
            tuple(face_ids)).fetchall()}
        missing = [f for f in face_ids if f not in found]
        if missing:
            raise ValueError(f"not a crop to review: {missing[:5]}")
        if versions is not None:
            stale = [f for f in face_ids if versions.get(f) != found[f]]
            if stale:
                raise StaleAnswer(
                    f"{len(stale)} of the {len(face_ids)} crop(s) changed since this page showed them "
                    f"(face {stale[0]}{_last_change(c, stale[0])}); nothing was saved", stale)
        ident = identity_for(db, identity_id, name, c, create=create_name)
        if answer in ("yes", "no") and ident is None:
            raise ValueError(f"a '{answer}' answer needs the identity it is about")
        action = int(c.execute(
            "INSERT INTO actions (annotator, kind, created_at, session) VALUES (?, ?, ?, ?)",
            (annotator, kind, now_iso(), session),
        ).lastrowid)
        c.executemany(
            "INSERT INTO answers (action_id, face_id, identity_id, answer) VALUES (?, ?, ?, ?)",
            [(action, f, ident if answer != "not_face" else None, answer) for f in face_ids],
        )
        c.execute(
            f"UPDATE faces SET version = version + 1, lease_by = NULL, lease_until = NULL WHERE id IN ({marks})",
            tuple(face_ids),
        )
    return action


def undo_last(db: ProjectDB, annotator: str, session: str | None = None) -> dict[str, Any] | None:
    """Undo the session's last answer that is not undone yet (without a session: the annotator's).

    Returns:
        What was undone (``action``, ``kind``, ``answer``, ``name``, ``face_ids``), ``None`` if nothing.
    """
    who, value = ("session", session) if session else ("annotator", annotator)
    kinds = ",".join("?" * len(UNDOABLE))
    with db.transaction() as c:
        row = c.execute(
            f"SELECT id, kind, annotator FROM actions WHERE {who} = ? AND undone_at IS NULL AND kind IN ({kinds})"
            " ORDER BY id DESC LIMIT 1",
            (value, *UNDOABLE),
        ).fetchone()
        if row is None:
            return None
        c.execute("UPDATE actions SET undone_at = ? WHERE id = ?", (now_iso(), row["id"]))
        answers = c.execute(
            "SELECT a.face_id, a.answer, i.name FROM answers a LEFT JOIN identities i ON i.id = a.identity_id"
            " WHERE a.action_id = ? ORDER BY a.id", (row["id"],)).fetchall()
        faces = [r["face_id"] for r in answers]
        marks = ",".join("?" * len(faces))
        c.execute(f"UPDATE faces SET version = version + 1 WHERE id IN ({marks})", tuple(faces))
    return {"action": row["id"], "kind": row["kind"], "annotator": row["annotator"], "face_ids": faces,
            "answer": answers[0]["answer"], "name": answers[0]["name"]}


def groups(db: ProjectDB, max_faces: int = 200) -> list[dict[str, Any]]:
    """Open crops in groups for the group view: one per candidate identity (the crops whose current
    candidate it is) and one per cluster of unnamed crops; largest first. Each group carries the
    faces' ``versions`` (in ``face_ids`` order) for the answer to send back."""
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
    shown = [f for g in out for f in g["face_ids"]]
    versions = face_versions(db, shown) if shown else {}
    for g in out:
        g["versions"] = [versions[f] for f in g["face_ids"]]
    return out


def progress(db: ProjectDB, annotator: str | None = None) -> dict[str, Any]:
    """Answered / remaining per identity in use, and the totals; with ``annotator``, also how many
    answers (not undone) that annotator gave (``mine``)."""
    states = face_states(db)
    cands = candidate_lists(db)
    names = shown_identity_names(db)
    refs = {r[0]: r[1] for r in db.query("SELECT identity_id, COUNT(*) FROM refs GROUP BY identity_id")}
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
    mine = None
    if annotator is not None:
        mine = int(db.scalar(
            f"SELECT COUNT(*) FROM actions WHERE annotator = ? AND undone_at IS NULL AND kind IN ({','.join('?' * len(UNDOABLE))})",
            (annotator, *UNDOABLE)) or 0)
    return {
        "identities": sorted(
            ({"identity_id": i, "name": names[i], "references": refs.get(i, 0), **c} for i, c in per.items()),
            key=lambda d: (-d["confirmed"] - d["pending"], d["name"]),
        ),
        "mine": mine,
        "representatives": len(states),
        "reviewed": sum(st.reviewed for st in states.values()),
        "not_face": not_face,
        "open_questions": sum(c["pending"] for c in per.values()),
        "unnamed": unnamed,
        "actions": {r["kind"]: r["n"] for r in actions},
    }
