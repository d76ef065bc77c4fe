# `notifctl add` on SQLite without SQLAlchemy. Importing SQLAlchemy costs ~150 ms, half
# of a `notifctl add`, for one INSERT; this module stores the same rows with the standard
# library's sqlite3 (the targets: `notifctl add` p50 <= 200 ms, batches >= 10,000 items/s).
#
# Rules: store.py remains the owner of the schema. This module writes exactly the rows
# `store.add_items` writes, on a database already at `SCHEMA_HEAD`, and
# tests/unit/test_posting.py compares the two on a migrated database, table by table, so
# a schema change that this module does not follow fails the suite. Whatever it does not
# do simply goes through store.py: another engine, a database to create or upgrade,
# idempotency keys. Nothing here imports SQLAlchemy, Twisted or Alembic, which is also why
# the database's own error, UnusableDatabase, and where the database lives are kept here.
from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Sequence

SCHEMA_HEAD = "0003"  # == store.SCHEMA_HEAD; a test keeps them equal
SQLITE_BUSY_TIMEOUT_MS = 5000  # == db.SQLITE_BUSY_TIMEOUT_MS; a test keeps them equal


class UnusableDatabase(Exception):
    """The database cannot be used: newer than this notifd, cannot be created, on a read-only disk; the message says why."""


def on_read_only_file_system(path: Path) -> bool:
    """Whether the database file `path` lives on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def read_only_database(path: Path) -> UnusableDatabase:
    # SQLite's own words for it ("unable to open database file", "attempt to write a
    # readonly database") send the reader looking at permissions.
    return UnusableDatabase(f"database {path}: the file system is read-only")


def default_database_path() -> Path:
    """Where the database lives when none is given: systemd's StateDirectory, else per user."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:
        # systemd may pass several, colon-separated; the first is ours.
        return Path(state_dir.split(":")[0]) / "notifd.db"
    import platformdirs

    return platformdirs.user_data_path("notifd") / "notifd.db"


def sqlite_file(value: str | None) -> Path | None:
    """The SQLite file `--db` names when it is a plain path (as db.database_url reads it), else None."""
    if value and "://" in value:
        return None  # a URL: leave it to SQLAlchemy
    if not value:
        value = str(default_database_path())
    return Path(value).expanduser().resolve()


def _timestamp(when: datetime) -> str:
    # SQLAlchemy's storage format for DateTime on SQLite.
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


def insert_items(path: Path, rows: Sequence[tuple[str, str]], now: datetime) -> list[int] | None:
    """Store (type, text) rows in one transaction; returns their ids in order.

    Returns None, having stored nothing, when the fast path does not apply (no database
    file yet, or a schema other than SCHEMA_HEAD): the caller then uses store.py.
    """
    if not path.is_file():
        return None
    try:
        return _insert_items(path, rows, now)
    except sqlite3.OperationalError as e:
        if on_read_only_file_system(path):
            raise read_only_database(path) from e
        raise


def _insert_items(path: Path, rows: Sequence[tuple[str, str]], now: datetime) -> list[int] | None:
    conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        # The same settings as db.make_engine; journal_mode=WAL is kept by the file.
        conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            version = None  # no schema yet
        if version != (SCHEMA_HEAD,):
            conn.execute("ROLLBACK")
            return None
        created_at = _timestamp(now)
        cursor = conn.cursor()
        ids = []
        for type_name, text in rows:
            cursor.execute(
                "INSERT INTO items (type, text, created_at, key) VALUES (?, ?, ?, NULL)", (type_name, text, created_at)
            )
            ids.append(cursor.lastrowid)
        conn.execute("COMMIT")
        return ids
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
