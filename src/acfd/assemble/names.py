"""The names of the characters in a project (the ``identities`` table): how an answer's name is
matched, when a new one is created, renames and merges, and which names are shown.

- Names are compared ignoring case (``fred`` answers as ``Fred``); white space is collapsed.
- A new name is created only when asked to (``create``); else :class:`NewName` carries the
  look-alike names, so the app can ask the person first.
- A name nothing refers to (no reference image, no candidate, no answer that is not undone: say the
  group answer that created it was undone) is not shown (:func:`used_identities`); typing it again
  asks again.
- :func:`rename_identity` renames; onto a name in use it merges the two (answers, candidates and
  reference images move) once confirmed (:class:`NameTaken` until then). Every face concerned gets a
  new version (acfd.assemble.review), so pages showing the old names must reload them. Changes are
  logged in ``identity_changes``.
"""

from __future__ import annotations

import difflib
from typing import Any

from acfd.assemble.db import ProjectDB, now_iso

MAX_NAME_LENGTH = 100


class NewName(ValueError):
    """The answer would create a new name and ``create_name`` was not given; nothing was saved.

    Attributes:
        name: the name as it would be stored.
        similar: existing names that look alike (a typo?).
    """

    def __init__(self, name: str, similar: list[str]) -> None:
        near = f" (existing names that look alike: {', '.join(similar)})" if similar else ""
        super().__init__(f"'{name}' is a new name{near}; confirm to create it")
        self.name, self.similar = name, similar


class NameTaken(ValueError):
    """A rename onto a name in use: it merges two names, which needs ``merge=True``.

    Attributes:
        name: the other identity's name.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"'{name}' is already a name: renaming merges the two into '{name}'; confirm to merge")
        self.name = name


def identity_names(db: ProjectDB) -> dict[int, str]:
    return {r["id"]: r["name"] for r in db.query("SELECT id, name FROM identities")}


def normalise_name(name: str) -> str:
    """``name`` with its white space collapsed.

    Raises:
        ValueError: empty, too long, or with control characters.
    """
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"a name must have 1 to {MAX_NAME_LENGTH} characters")
    if any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in name):
        raise ValueError("a name cannot hold control characters")
    return name


def used_identities(db: ProjectDB | Any) -> set[int]:
    """Identities something refers to: a reference, a candidate or an answer not undone. The
    others (a name whose only answers were undone) are not shown anywhere."""
    run = db.query if isinstance(db, ProjectDB) else (lambda sql: db.execute(sql).fetchall())
    return {r[0] for r in run(
        "SELECT identity_id FROM refs UNION SELECT identity_id FROM candidates UNION"
        " SELECT a.identity_id FROM answers a JOIN actions t ON t.id = a.action_id"
        " WHERE t.undone_at IS NULL AND a.identity_id IS NOT NULL"
    )}


def shown_identity_names(db: ProjectDB) -> dict[int, str]:
    """``{id: name}`` of the identities in use (:func:`used_identities`)."""
    used = used_identities(db)
    return {i: n for i, n in identity_names(db).items() if i in used}


def _same_name(c: Any, name: str, used: set[int], other_than: int | None = None) -> int | None:
    """The identity called ``name`` ignoring case (an exact match first, then one in use)."""
    rows = [r for r in c.execute("SELECT id, name FROM identities").fetchall() if r["id"] != other_than]
    exact = [r["id"] for r in rows if r["name"] == name]
    if exact:
        return exact[0]
    folded = sorted((r["id"] not in used, r["id"]) for r in rows if r["name"].casefold() == name.casefold())
    return folded[0][1] if folded else None


def _similar_names(c: Any, name: str, used: set[int]) -> list[str]:
    names = {r["name"].casefold(): r["name"] for r in c.execute("SELECT id, name FROM identities").fetchall() if r["id"] in used}
    return [names[n] for n in difflib.get_close_matches(name.casefold(), list(names), n=3, cutoff=0.6)]


def identity_for(db: ProjectDB, identity_id: int | None, name: str | None, c: Any, create: bool = True) -> int | None:
    """The identity an answer is about: an existing id, or a name (the same name in another case
    is that name; a new one is created only with ``create``).

    Raises:
        ValueError: no such identity id, or a bad name.
        NewName: a name not in use and ``create`` is false.
    """
    if identity_id is not None:
        if not c.execute("SELECT 1 FROM identities WHERE id = ?", (identity_id,)).fetchone():
            raise ValueError(f"no identity {identity_id}")
        return identity_id
    if name is None:
        return None
    name = normalise_name(name)
    used = used_identities(c)
    found = _same_name(c, name, used)
    if found is not None and found in used:
        return found
    if not create:
        raise NewName(name, _similar_names(c, name, used))
    if found is not None:  # a name left unused (its answers undone) comes back as typed now
        c.execute("UPDATE identities SET name = ? WHERE id = ?", (name, found))
        return found
    return int(c.execute(
        "INSERT INTO identities (name, origin, created_at) VALUES (?, 'annotator', ?)", (name, now_iso())
    ).lastrowid)


def rename_identity(
    db: ProjectDB, identity_id: int, name: str, annotator: str, session: str | None = None, merge: bool = False
) -> dict[str, Any]:
    """Rename an identity; onto a name in use, merge it into that one (its answers, candidates and
    reference images move there). Every face concerned gets a new version, so pages showing the old
    names must reload them. The change is logged in ``identity_changes``.

    Returns:
        ``{"identity_id": the identity now bearing the name, "name": ..., "merged": bool}``.

    Raises:
        ValueError: no such identity, a bad name.
        NameTaken: the name is in use by another identity and ``merge`` is false.
    """
    new = normalise_name(name)
    with db.transaction() as c:
        row = c.execute("SELECT id, name FROM identities WHERE id = ?", (int(identity_id),)).fetchone()
        if row is None:
            raise ValueError(f"no identity {identity_id}")
        used = used_identities(c)
        other = _same_name(c, new, used, other_than=row["id"])
        if other is not None and other in used and not merge:
            raise NameTaken(c.execute("SELECT name FROM identities WHERE id = ?", (other,)).fetchone()[0])
        faces = [r[0] for r in c.execute(
            "SELECT face_id FROM answers WHERE identity_id IN (?, ?) UNION"
            " SELECT face_id FROM candidates WHERE identity_id IN (?, ?)", (row["id"], other, row["id"], other)).fetchall()]
        if other is None:
            c.execute("UPDATE identities SET name = ? WHERE id = ?", (new, row["id"]))
            target = row["id"]
        else:
            target = other
            c.execute("UPDATE answers SET identity_id = ? WHERE identity_id = ?", (target, row["id"]))
            c.execute(
                "INSERT INTO candidates (face_id, identity_id, similarity) SELECT face_id, ?, similarity FROM candidates"
                " WHERE identity_id = ? ON CONFLICT (face_id, identity_id) DO UPDATE SET"
                " similarity = max(similarity, excluded.similarity)", (target, row["id"]))
            c.execute("DELETE FROM candidates WHERE identity_id = ?", (row["id"],))
            c.execute("UPDATE refs SET identity_id = ? WHERE identity_id = ?", (target, row["id"]))
            c.execute("DELETE FROM identities WHERE id = ?", (row["id"],))
            if other in used:  # merged into a name in use: it keeps its spelling
                new = c.execute("SELECT name FROM identities WHERE id = ?", (target,)).fetchone()[0]
            else:
                c.execute("UPDATE identities SET name = ? WHERE id = ?", (new, target))
        c.execute(
            "INSERT INTO identity_changes (identity_id, old_name, new_name, merged_into, annotator, session, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", (row["id"], row["name"], new, other, annotator, session, now_iso()))
        if faces:
            c.execute(f"UPDATE faces SET version = version + 1 WHERE id IN ({','.join('?' * len(faces))})", tuple(faces))
    return {"identity_id": target, "name": new, "merged": other is not None}
