"""project.db is used only when it is a whole, writable project database: an empty, foreign, damaged
or read-only file is refused at start with one line naming it, and never gets a schema written in."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from acfd.annotate.app import create_app
from acfd.assemble.db import ProjectDB, ProjectDBError
from acfd.assemble.project import Project
from acfd.cli import app

from test_assemble import _run, dataset  # noqa: F401 - the synthetic project fixture


@pytest.fixture
def project_dir(dataset: dict[str, Path]) -> Path:  # noqa: F811
    project, _ = _run(dataset)
    project.close()
    return dataset["project"]


def _annotate_error(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """What ``acfd annotate`` prints when it refuses to start (it must not start)."""
    import uvicorn

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", started)
    result = CliRunner().invoke(app, ["annotate", str(project_dir)])
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_empty_project_db_is_refused_and_left_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "project.db").write_bytes(b"")
    line = _annotate_error(tmp_path, monkeypatch)
    assert f"{tmp_path / 'project.db'}: empty file (0 bytes)" in line
    with pytest.raises(ProjectDBError, match="empty file"):
        create_app(tmp_path)
    with pytest.raises(ProjectDBError, match="empty file"):
        Project(tmp_path, create=True)  # not even acfd assemble writes a schema into it
    assert (tmp_path / "project.db").stat().st_size == 0


def test_corrupt_truncated_and_foreign_files_are_refused(
    project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = project_dir / "project.db"
    good = db.read_bytes()
    assert len(good) > 8 * 4096
    db.write_bytes(b"garbage" * 1000)
    assert "not a SQLite database" in _annotate_error(project_dir, monkeypatch)
    db.write_bytes(good[: len(good) // 3])  # truncated
    line = _annotate_error(project_dir, monkeypatch)
    assert str(db) in line and "damaged" in line
    db.write_bytes(good[:50])
    assert "damaged (truncated" in _annotate_error(project_dir, monkeypatch)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    conn = sqlite3.connect(foreign / "project.db")
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.commit()
    conn.close()
    assert "a SQLite database, but not an acfd project" in _annotate_error(foreign, monkeypatch)
    conn = sqlite3.connect(foreign / "project.db")
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]  # nothing added
    conn.close()


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """``chattr +i``: read-only even for root (as a read-only mount is); skips where unsupported."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_project_db_is_refused_at_start(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = project_dir / "project.db"

    def no_journal() -> None:
        for wal in project_dir.glob("project.db-*"):
            wal.unlink()

    no_journal()
    with _immutable(db):
        line = _annotate_error(project_dir, monkeypatch)
        assert f"{db}: cannot be written (read-only file or folder" in line
        with pytest.raises(ProjectDBError, match="cannot be written"):
            create_app(project_dir)
    no_journal()
    with _immutable(project_dir):  # a read-only folder: the journal cannot be created beside the file
        assert "cannot be written" in _annotate_error(project_dir, monkeypatch)
    create_app(project_dir)  # writable again: it starts


def test_new_database_is_complete_or_absent(tmp_path: Path) -> None:
    ProjectDB(tmp_path / "p" / "project.db").close()
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["project.db"]  # no temporary left
    conn = sqlite3.connect(tmp_path / "p" / "project.db")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    conn.close()


def test_older_project_gets_the_newer_columns(project_dir: Path) -> None:
    conn = sqlite3.connect(project_dir / "project.db")
    conn.execute("ALTER TABLE faces DROP COLUMN version")
    conn.execute("ALTER TABLE actions DROP COLUMN session")
    conn.commit()
    conn.close()
    with Project(project_dir) as project:
        assert project.db.scalar("SELECT COUNT(*) FROM faces WHERE version = 0") > 0
        assert project.db.query("SELECT session FROM actions") == []
