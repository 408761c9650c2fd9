"""The project database: one SQLite file (``project.db``) holding every stage's state and every answer.

Every stage writes in transactions (``with db.transaction():``), one unit of work at a time (a
source, a batch of frames, a batch of crops), together with the flag saying that unit is done. So
a killed run loses at most the unit it was doing and a re-run starts where it stopped. WAL
journalling lets the annotation server's readers and writers (several browsers) work at once;
every write waits for the lock (``busy_timeout``) instead of failing.

Tables (see :data:`SCHEMA`): ``meta`` (settings), ``sources``, ``frames``, ``faces`` (one row per
detection: box, score, crop filter verdict, embedding, duplicate link, cluster), ``identities`` and
``refs`` (reference images and their embeddings), ``candidates`` (face -> identity similarity above
the threshold), ``clusters``, ``actions`` / ``answers`` (who answered what and when; undo marks an
action, nothing is deleted) and ``stage_runs`` (counts and seconds of every stage run).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
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
    lease_by TEXT, lease_until REAL);
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
    undone_at TEXT);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY, action_id INTEGER NOT NULL REFERENCES actions(id),
    face_id INTEGER NOT NULL REFERENCES faces(id), identity_id INTEGER REFERENCES identities(id),
    answer TEXT NOT NULL CHECK (answer IN ('yes', 'no', 'not_face', 'skip')));
CREATE INDEX IF NOT EXISTS answers_face ON answers(face_id);
CREATE TABLE IF NOT EXISTS stage_runs (
    id INTEGER PRIMARY KEY, stage TEXT NOT NULL, started_at TEXT NOT NULL, seconds REAL NOT NULL,
    n_in INTEGER NOT NULL, kept INTEGER NOT NULL, dropped TEXT NOT NULL, skipped INTEGER NOT NULL);
"""


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds (what the manifest and answers record)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


class ProjectDB:
    """A connection to a project's SQLite database (created on first open).

    One connection serves one thread at a time; :meth:`transaction` serialises writers of this
    object with a lock, and SQLite's own locking (WAL + busy timeout) serialises processes.

    Args:
        path: the ``.db`` file.
        create: create it (and its folder) when missing; else a missing file is an error.

    Raises:
        FileNotFoundError: ``create=False`` and there is no database.
    """

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise FileNotFoundError(2, "no assembling project here (run 'acfd assemble' first)", str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self.conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=30000")
        with self.transaction():
            for statement in SCHEMA.split(";"):  # executescript would COMMIT our transaction
                if statement.strip():
                    self.conn.execute(statement)
            version = self.get_meta("schema_version")
            if version is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise ValueError(f"{self.path}: project schema {version}, this acfd reads {SCHEMA_VERSION}")

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

    def __enter__(self) -> ProjectDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
