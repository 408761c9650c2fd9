"""The project database: one SQLite file (``project.db``) holding every stage's state and every answer.

Every stage writes in transactions (``with db.transaction():``), one unit of work at a time (a
source, a batch of frames, a batch of crops), together with the flag saying that unit is done. So
a killed run loses at most the unit it was doing and a re-run starts where it stopped. WAL
journalling lets the annotation server's readers and writers (several browsers) work at once;
every write waits for the lock (``busy_timeout``) instead of failing.

Tables (see :data:`SCHEMA`): ``meta`` (settings), ``sources``, ``frames``, ``faces`` (one row per
detection: box, score, crop filter verdict, embedding, duplicate link, cluster, the question lease
and a ``version`` every answer about the face increments), ``identities`` and ``refs`` (reference
images and their embeddings), ``candidates`` (face -> identity similarity above the threshold),
``clusters``, ``actions`` / ``answers`` (who answered what, from which browser session and when;
undo marks an action, nothing is deleted), ``identity_changes`` (renamed and merged names) and
``stage_runs`` (counts and seconds of every stage run).

A new database is built under a temporary name and renamed into place, so ``project.db`` is either
absent or a complete project. An existing file is opened only when it is one: an empty, foreign,
damaged or read-only file is refused with one line naming it (:class:`ProjectDBError`), and no
schema is ever written into a file this module did not create.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DB_NAME = "project.db"
SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, key TEXT NOT NULL, kind TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', error TEXT);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY, source_id INTEGER NOT NULL REFERENCES sources(id),
    frame_index INTEGER, timestamp REAL, file TEXT NOT NULL, key TEXT NOT NULL UNIQUE,
    width INTEGER NOT NULL, height INTEGER NOT NULL, detected INTEGER NOT NULL DEFAULT 0,
    error TEXT);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY, frame_id INTEGER NOT NULL REFERENCES frames(id),
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL, score REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'new', crop_w INTEGER, crop_h INTEGER, sharpness REAL,
    embedding BLOB, dup_of INTEGER REFERENCES faces(id), dedup_done INTEGER NOT NULL DEFAULT 0,
    cand_done INTEGER NOT NULL DEFAULT 0, cluster_id INTEGER REFERENCES clusters(id),
    lease_by TEXT, lease_until REAL, version INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS faces_frame ON faces(frame_id);
CREATE INDEX IF NOT EXISTS faces_status ON faces(status);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, origin TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY, identity_id INTEGER NOT NULL REFERENCES identities(id),
    file TEXT, origin TEXT NOT NULL, embedding BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    face_id INTEGER NOT NULL REFERENCES faces(id), identity_id INTEGER NOT NULL REFERENCES identities(id),
    similarity REAL NOT NULL, PRIMARY KEY (face_id, identity_id));
CREATE TABLE IF NOT EXISTS clusters (id INTEGER PRIMARY KEY, leader_face_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY, annotator TEXT NOT NULL, kind TEXT NOT NULL, created_at TEXT NOT NULL,
    undone_at TEXT, session TEXT);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY, action_id INTEGER NOT NULL REFERENCES actions(id),
    face_id INTEGER NOT NULL REFERENCES faces(id), identity_id INTEGER REFERENCES identities(id),
    answer TEXT NOT NULL CHECK (answer IN ('yes', 'no', 'not_face', 'skip')));
CREATE INDEX IF NOT EXISTS answers_face ON answers(face_id);
CREATE TABLE IF NOT EXISTS identity_changes (
    id INTEGER PRIMARY KEY, identity_id INTEGER NOT NULL, old_name TEXT NOT NULL, new_name TEXT NOT NULL,
    merged_into INTEGER, annotator TEXT NOT NULL, session TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stage_runs (
    id INTEGER PRIMARY KEY, stage TEXT NOT NULL, started_at TEXT NOT NULL, seconds REAL NOT NULL,
    n_in INTEGER NOT NULL, kept INTEGER NOT NULL, dropped TEXT NOT NULL, skipped INTEGER NOT NULL);
"""
#: Columns added to tables of the same schema version: (table, column, declaration). A project
#: made before them gets them when opened; older readers ignore them.
ADDED_COLUMNS = (
    ("faces", "version", "INTEGER NOT NULL DEFAULT 0"),
    ("actions", "session", "TEXT"),
)
_SQLITE_HEADER = b"SQLite format 3\x00"


class ProjectDBError(ValueError):
    """``project.db`` cannot be used: empty, not a project database, damaged, or read-only.

    ``str(err)`` is one line, ``"<file>: <problem>"``.
    """


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds (what the manifest and answers record)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


class ProjectDB:
    """A connection to a project's SQLite database (created when missing and ``create``).

    One connection serves one thread at a time; :meth:`transaction` serialises writers of this
    object with a lock, and SQLite's own locking (WAL + busy timeout) serialises processes.

    Args:
        path: the ``.db`` file.
        create: create it (and its folder) when missing; else a missing file is an error.

    Raises:
        FileNotFoundError: ``create=False`` and there is no database.
        ProjectDBError: the file is empty, not a project database, damaged, of another schema
            version, or cannot be written.
    """

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise FileNotFoundError(2, "no assembling project here (run 'acfd assemble' first)", str(self.path))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                _create(self.path)
            except sqlite3.DatabaseError as exc:
                raise _db_error(self.path, exc) from None
        else:
            _check_header(self.path)
        self.conn = self._connect(self.path)
        self._lock = threading.RLock()
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise _db_error(self.path, exc) from None
        except BaseException:
            self.conn.close()
            raise

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    def _open(self) -> None:
        """Check that the file is a whole, writable project database; add the newer columns."""
        c = self.conn
        c.execute("PRAGMA busy_timeout=30000")
        check = c.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise ProjectDBError(f"{self.path}: the database is damaged (SQLite quick_check: {check})")
        if not c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
            raise ProjectDBError(f"{self.path}: a SQLite database, but not an acfd project (no meta table)")
        version = self.get_meta("schema_version")
        if version is None:
            raise ProjectDBError(f"{self.path}: a SQLite database, but not an acfd project (no schema version)")
        if version != SCHEMA_VERSION:
            raise ProjectDBError(f"{self.path}: project schema {version}, this acfd reads {SCHEMA_VERSION}")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        with self.transaction():
            # a write at once: a read-only file or folder is refused here, not at the first answer
            c.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
            _add_schema(c)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error); nested calls join the outer one."""
        with self._lock:
            if self.conn.in_transaction:
                yield self.conn
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: tuple | dict = ()) -> object:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def get_meta(self, key: str) -> str | None:
        row = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0][0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def _add_schema(c: sqlite3.Connection) -> None:
    """Create the tables and indexes of :data:`SCHEMA` that are missing, and :data:`ADDED_COLUMNS`."""
    for statement in SCHEMA.split(";"):  # executescript would COMMIT the caller's transaction
        if statement.strip():
            c.execute(statement)
    for table, column, decl in ADDED_COLUMNS:
        have = {r[1] for r in c.execute(f"PRAGMA table_info({table})").fetchall()}
        if column not in have:
            c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


def _create(path: Path) -> None:
    """A new project database at ``path``: built under a temporary name, then renamed into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            _add_schema(conn)
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _check_header(path: Path) -> None:
    """Refuse a file that is not a SQLite database before SQLite touches it."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except IsADirectoryError:
        raise ProjectDBError(f"{path}: is a folder, not a project database") from None
    if not head:
        raise ProjectDBError(f"{path}: empty file (0 bytes), not a project database; 'acfd assemble' makes one")
    if not head.startswith(_SQLITE_HEADER):
        raise ProjectDBError(f"{path}: not a SQLite database (not made by 'acfd assemble')")
    if len(head) < 100:
        raise ProjectDBError(f"{path}: the database is damaged (truncated to {len(head)} bytes)")


def _db_error(path: Path, exc: sqlite3.DatabaseError) -> ProjectDBError:
    """One line for a SQLite error met while opening ``path``."""
    text = str(exc)
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return ProjectDBError(
            f"{path}: cannot be written (read-only file or folder: {text}); answers and stages need to write it"
        )
    return ProjectDBError(f"{path}: the database is damaged ({text})")

    def __enter__(self) -> ProjectDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
