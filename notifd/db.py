# The database connection and its schema: engine set-up (SQLite pragmas in one place), the
# one-thread pool the daemon runs every query on, and Alembic upgrades.
#
# Rule: the reactor thread never runs a query. `Database.run(f, *args)` runs `f(conn, *args)`
# in a transaction on a single worker thread and returns a Deferred. One thread gives one
# writer and FIFO order: a cursor written by one call is seen by the next.
from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, TypeVar

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import URL, Engine, Result, Row, make_url

from . import store
from .posting import default_database_path  # kept there so that notifctl add needs no SQLAlchemy

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 5000  # how long a writer waits for another before "database is locked"


class UnusableDatabase(Exception):
    """The database cannot be used: newer than this notifd, or cannot be created; the message says why."""


def database_url(value: str | None) -> URL:
    """An SQLAlchemy URL from `--db`: a URL as is, anything else a SQLite file path."""
    if not value:
        value = str(default_database_path())
    if "://" in value:
        return make_url(value)
    return make_url("sqlite:///" + str(Path(value).expanduser().resolve()))


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL, or None for other engines and in-memory databases."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def make_engine(url: URL) -> Engine:
    """An engine with notifd's settings; for SQLite: WAL, a busy timeout, and immediate transactions."""
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so that "begin" below decides.
        dbapi_conn.isolation_level = None
        dbapi_conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")
        dbapi_conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives the process being killed, not a power cut.
        dbapi_conn.execute("PRAGMA synchronous = NORMAL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, waiting up to busy_timeout for it. A
        # deferred transaction that reads then writes can fail at once with "database is
        # locked" when another process committed in between; this one cannot.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """An engine plus the thread its queries run on.

    `run(f, *args)` calls `f(conn, *args)` inside a transaction and returns a Deferred of
    its result. Without a thread pool (tests, see `synchronous`), it calls `f` at once and
    returns an already-fired Deferred.
    """

    def __init__(self, engine: Engine, reactor: Any = None, threadpool: Any = None) -> None:
        self.engine = engine
        self._reactor = reactor
        self._threadpool = threadpool

    @classmethod
    def threaded(cls, engine: Engine, reactor: Any) -> "Database":
        from twisted.python.threadpool import ThreadPool

        return cls(engine, reactor, ThreadPool(minthreads=1, maxthreads=1, name="notifd-db"))

    @classmethod
    def synchronous(cls, engine: Engine) -> "Database":
        return cls(engine)

    def start(self) -> None:
        if self._threadpool is not None:
            self._threadpool.start()

    def stop(self) -> None:
        """Finish the queries already queued, then release the connections."""
        if self._threadpool is not None:
            self._threadpool.stop()
        self.engine.dispose()

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any):
        from twisted.internet import defer, threads

        if self._threadpool is None:
            return defer.maybeDeferred(self.call, f, *args, **kwargs)
        return threads.deferToThreadPool(self._reactor, self._threadpool, self.call, f, *args, **kwargs)

    def call(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `f(conn, ...)` in a transaction here and now (on the database thread)."""
        with self.engine.begin() as conn:
            result = f(conn, *args, **kwargs)
        # Rows and Results are bound to the connection: materialise them in f.
        assert not isinstance(result, (Result, Row)), f"{f.__name__} returned a {type(result).__name__}"
        return result


# --- schema ------------------------------------------------------------------------------


def migrations_dir() -> Path:
    """The Alembic scripts: inside the installed package, or the checkout's migrations/."""
    packaged = Path(__file__).parent / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).parent.parent / "migrations"


def schema_version(conn) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def open_engine(url: URL) -> Engine:
    """An engine on a database whose schema is current: created or upgraded if needed.

    Raises UnusableDatabase when the database is newer than this notifd.
    """
    path = sqlite_path(url)
    if path is not None and not path.exists():
        _create_sqlite(path)
    engine = make_engine(url)
    with engine.connect() as conn:
        version = schema_version(conn)
    if version != store.SCHEMA_HEAD:
        upgrade(engine, version)
    return engine


def upgrade(engine: Engine, version: str | None = None) -> list[str]:
    """Bring the schema to head; returns the revisions applied.

    An existing SQLite file is first copied aside (`<file>.backup-<revision>`).
    """
    from alembic.script import ScriptDirectory

    config = _alembic_config()
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    if version is not None and version not in {rev.revision for rev in scripts.walk_revisions()}:
        raise UnusableDatabase(
            f"the database schema is at revision {version}, newer than this notifd "
            f"(which knows up to {head}); upgrade notifd"
        )
    if version == head:
        return []
    path = sqlite_path(engine.url)
    if path is not None and version is not None:
        backup_sqlite(path, path.with_name(f"{path.name}.backup-{version}"))
    applied = [rev.revision for rev in scripts.iterate_revisions(head, version or "base")]
    _alembic_upgrade(engine, config)
    return list(reversed(applied))


def _alembic_config():
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def _alembic_upgrade(engine: Engine, config) -> None:
    from alembic import command

    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def _create_sqlite(path: Path) -> None:
    """Build a new database in a temporary file, then link it into place.

    A failed create leaves nothing behind, and when two programs create the same
    database at once (notifd and notifctl), the first one wins and the other uses it.
    """
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _build_sqlite(path, tmp)
    except OSError as e:
        raise UnusableDatabase(f"cannot create the database {path}: {e.strerror}") from e


def _build_sqlite(path: Path, tmp: Path) -> None:
    try:
        # Owner-only from the start: the database holds token hashes, and posting is
        # an admin act granted by write access to this file.
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        engine = make_engine(make_url("sqlite:///" + str(tmp)))
        try:
            upgrade(engine, None)
        finally:
            engine.dispose()
        try:
            os.link(tmp, path)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


def backup_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database, through SQLite's online backup API."""
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(target, 0o600)
