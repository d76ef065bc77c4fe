# The database connection and its schema: engine set-up (SQLite pragmas in one place), the
# reader and writer threads the daemon runs every query on, and Alembic upgrades.
#
# Rule: the reactor thread never runs a query. `Database.run(f, *args)` runs `f(conn, *args)`
# in a transaction on a worker thread and returns a Deferred: writes on one writer thread
# (one writer, in FIFO order: a cursor written by one call is seen by the next write),
# reads on one reader thread (served even while a write waits for a foreign lock).
#
# Two engines are supported: SQLite (a file on one host, the default) and PostgreSQL
# through psycopg 3 (several nodes on one database). Whatever differs between
# them is decided here (`make_engine`, `transaction`, `upgrade`) or in `store.py`.
from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, Engine, Result, Row, make_url
from sqlalchemy.exc import OperationalError

from . import store
from .errors import first_line

# Kept in posting.py so that notifctl add needs no SQLAlchemy.
from .posting import (
    SQLITE_BUSY_TIMEOUT_MS,
    UnusableDatabase,
    default_database_path,
    on_read_only_file_system,
    read_only_database,
)

T = TypeVar("T")

FOLLOW = "follow"  # the key of the catch-up thread's pool (store.follows)
OUTAGE_BUSY_TIMEOUT_MS = 100  # the SQLite busy timeout while the last call already failed with "database is locked"


def _log():
    from twisted.logger import Logger

    return Logger(namespace="notifd.db")



def database_url(value: str | None) -> URL:
    """An SQLAlchemy URL from `--db`: a URL, anything else a SQLite file path.

    `postgresql://` and `postgres://` mean psycopg 3, the one PostgreSQL driver notifd
    uses (its LISTEN connection needs it). Raises UnusableDatabase for other engines.
    """
    if not value:
        value = str(default_database_path())
    if "://" not in value:
        # Built, not formatted: a file name may hold '?' or '#', which a URL string would parse.
        return URL.create("sqlite", database=str(Path(value).expanduser().resolve()))
    try:
        url = make_url(value)
    except Exception:
        raise UnusableDatabase(f"--db: not a database URL: {value!r}") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise UnusableDatabase(
            f"--db: notifd works with SQLite (a file path) or PostgreSQL (postgresql+psycopg://...), "
            f"not {url.drivername!r}"
        )
    return url


def is_postgresql(url: URL) -> bool:
    return url.get_backend_name() == "postgresql"


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL, or None for other engines and in-memory databases."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


# How long a PostgreSQL connection attempt may take before it counts as failed.
PG_CONNECT_TIMEOUT_S = 10
# TCP keepalives on every PostgreSQL connection: a server that vanished without closing
# (a partition, a dead host) is noticed within about a minute, not hours.
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def pg_connect_args(name: str = "notifd") -> dict[str, Any]:
    """psycopg connection settings notifd adds to the URL's own; `name` shows in pg_stat_activity."""
    # application_name is cut to 63 bytes by the server; keep it whole.
    return {"application_name": name.encode()[:63].decode(errors="ignore"),
            "connect_timeout": PG_CONNECT_TIMEOUT_S, **PG_KEEPALIVES}


def make_engine(url: URL, name: str = "notifd", busy_timeout: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> Engine:
    """An engine with notifd's settings.

    SQLite: WAL, a busy timeout, and immediate transactions. PostgreSQL: psycopg 3, a
    pre-ping (a restarted server costs one failed check, not one failed query), and
    `name` as the application name of the connections. `busy_timeout`: seconds a SQLite
    writer waits for a lock another process holds (config `sqlite_busy_timeout`).
    """
    if is_postgresql(url):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            # Named by the pip of notifd's own environment: a bare `pip install notifd[...]`
            # would fetch an unrelated project of that name from PyPI.
            pip = Path(sys.prefix) / "bin" / "pip"
            raise UnusableDatabase(
                f"PostgreSQL needs the psycopg package in notifd's environment: {pip} install 'psycopg[binary]>=3.1'"
            ) from None
        return create_engine(url, pool_pre_ping=True, connect_args=pg_connect_args(name))
    engine = create_engine(url)
    busy_ms = int(busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so that "begin" below decides.
        dbapi_conn.isolation_level = None
        dbapi_conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")
        dbapi_conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives the process being killed, not a power cut;
        # transactions that store posted items ask for FULL (below, and store.durable).
        dbapi_conn.execute("PRAGMA synchronous = NORMAL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A writer takes the write lock up front (IMMEDIATE), waiting up to busy_timeout for
        # it: a deferred transaction that reads then writes can fail at once with "database
        # is locked" when another process committed in between. A reader stays deferred, so
        # it is served even while another process holds the write lock.
        options = conn.get_execution_options()
        busy = options.get("notifd_busy_ms", busy_ms)
        if conn.info.get("notifd_busy_ms", busy_ms) != busy:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(busy)}")
            conn.info["notifd_busy_ms"] = busy
        # A transaction that stores posted items is on disk when its commit returns (FULL
        # syncs the WAL at each commit); the others need only survive a killed process.
        # SQLite refuses to change this inside a transaction: here, just before BEGIN.
        synchronous = "FULL" if options.get("notifd_durable") else "NORMAL"
        if conn.info.get("notifd_synchronous", "NORMAL") != synchronous:
            conn.exec_driver_sql(f"PRAGMA synchronous = {synchronous}")
            conn.info["notifd_synchronous"] = synchronous
        # Unmarked transactions (engine.begin(): migrations, tools, tests) count as writers.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("notifd_write", True) else "BEGIN")

    @event.listens_for(engine, "before_cursor_execute")
    def _refuse_unmarked_writes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # A write in a read transaction (a query missing @store.writes) would take the lock
        # late and could fail at once with "database is locked": refuse it loudly instead.
        if conn.get_execution_options().get("notifd_write") is False and statement.lstrip()[:6].upper() in _WRITES:
            raise UnmarkedWrite(f"a write in a read-only transaction; mark the query @store.writes: {statement[:60]}")

    return engine


_WRITES = {"INSERT", "UPDATE", "DELETE", "REPLAC"}


class UnmarkedWrite(AssertionError):
    """A query wrote without being marked `store.writes` (a bug in notifd or a plugin)."""


@contextlib.contextmanager
def transaction(
    engine: Engine, write: bool = False, busy_ms: int | None = None, durable: bool = False
) -> Iterator[Connection]:
    """A transaction; `write=True` for one that will write (see `store.writes`).

    `busy_ms` overrides how long SQLite waits for a lock held by another process;
    `durable=True` syncs the commit to disk before it returns (see `store.durable`).
    """
    with engine.connect() as conn:
        conn.execution_options(notifd_write=write or durable, notifd_durable=durable)
        if not write and engine.dialect.name == "postgresql":
            # BEGIN READ ONLY: a query not marked `store.writes` that writes fails at once.
            conn.execution_options(postgresql_readonly=True)
        if busy_ms is not None:
            conn.execution_options(notifd_busy_ms=busy_ms)
        with conn.begin():
            yield conn


class Database:
    """An engine plus the threads its queries run on.

    `run(f, *args)` calls `f(conn, *args)` inside a transaction and returns a Deferred of
    its result. Queries marked `store.writes` run on the writer thread, in order; the
    others on the reader thread, so that reads go on while a write waits for a lock held by
    another process. Without thread pools (tests, see `synchronous`), `run` calls `f` at
    once and returns an already-fired Deferred.
    """

    def __init__(
        self,
        engine: Engine,
        reactor: Any = None,
        pools: dict[bool, Any] | None = None,
        observe: Callable[[float], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self._reactor = reactor
        self._pools = pools  # writes? (or FOLLOW) -> ThreadPool of one thread
        self._observe = observe  # called with each call's seconds, queue wait included
        self._on_error = on_error  # called with "reads" or "writes" for each failed call
        self.failing = {False: False, True: False}  # writes? -> in an outage (reactor side, for the log)
        self._blocked = {False: False, True: False}  # the same, database-thread side

    @classmethod
    def threaded(
        cls, engine: Engine, reactor: Any, observe: Callable[[float], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> "Database":
        from twisted.python.threadpool import ThreadPool

        # A reader, a writer, and the hub's catch-up on a thread of its own (store.follows):
        # it must never wait behind client queries, which may be waiting for it.
        pools = {key: ThreadPool(minthreads=1, maxthreads=1, name=f"notifd-db-{name}")
                 for key, name in ((False, "read"), (True, "write"), (FOLLOW, "follow"))}
        return cls(engine, reactor, pools, observe, on_error)

    @classmethod
    def synchronous(cls, engine: Engine) -> "Database":
        return cls(engine)

    def start(self) -> None:
        for pool in (self._pools or {}).values():
            pool.start()

    def stop(self) -> None:
        """Stop the threads (after the query each is running), then release the connections."""
        for pool in (self._pools or {}).values():
            pool.stop()
        self.engine.dispose()

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any):
        from twisted.internet import defer, threads

        write = getattr(f, "writes", False)
        if self._pools is None:
            d = defer.maybeDeferred(self.call, f, *args, **kwargs)
        else:
            pool = self._pools[FOLLOW if getattr(f, "follows", False) else write]
            d = threads.deferToThreadPool(self._reactor, pool, self.call, f, *args, **kwargs)
            if self._observe is not None:
                started = self._reactor.seconds()

                def observed(result):
                    self._observe(self._reactor.seconds() - started)
                    return result

                d.addBoth(observed)
        return d.addCallbacks(self._succeeded, self._failed, callbackArgs=(write,), errbackArgs=(f, write))

    def run_blocking(self, f: Callable[..., T], *args: Any):
        """Run `f(*args)`, no transaction, on the writer thread (file-system work the reactor
        must not wait for, in order with the writes queued before it); returns a Deferred."""
        from twisted.internet import defer, threads

        if self._pools is None:
            return defer.maybeDeferred(f, *args)
        return threads.deferToThreadPool(self._reactor, self._pools[True], f, *args)

    def _succeeded(self, result, write: bool):
        if self.failing[write]:
            self.failing[write] = False
            _log().info("the database answers {kind} again", kind=_KIND[write])
        return result

    def _failed(self, failure, f, write: bool):
        from sqlalchemy.exc import DBAPIError

        if self._on_error is not None:
            self._on_error(_KIND[write])
        if not failure.check(DBAPIError):
            _log().failure("database call {query} failed", failure, query=f.__name__)
        elif not self.failing[write]:
            # An outage is logged once, not once per client: it ends with "answers ... again".
            self.failing[write] = True
            _log().error("database unavailable for {kind}: {error}", kind=_KIND[write], error=self.describe(failure.value))
        return failure

    def describe(self, error: BaseException) -> str:
        """One line for a failed call: a read-only file system is named as such."""
        return str(read_only_error(self.engine.url, error) or first_line(error))

    def call(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `f(conn, ...)` in a transaction here and now (on a database thread)."""
        write = getattr(f, "writes", False)
        # In an outage, fail fast: one call waited the whole busy timeout already, and the
        # calls queued behind it would each wait as long. The next success ends the outage.
        # (Decided here, on the database thread, before the reactor hears of the failure.)
        busy_ms = OUTAGE_BUSY_TIMEOUT_MS if self._blocked[write] else None
        try:
            durable = getattr(f, "durable", False)
            with transaction(self.engine, write=write, busy_ms=busy_ms, durable=durable) as conn:
                result = f(conn, *args, **kwargs)
        except OperationalError:
            self._blocked[write] = True
            raise
        self._blocked[write] = False
        # Rows and Results are bound to the connection: materialise them in f.
        assert not isinstance(result, (Result, Row)), f"{f.__name__} returned a {type(result).__name__}"
        return result


_KIND = {False: "reads", True: "writes"}


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


def missing(path: Path) -> str:
    """What notifctl says when there is no database file where it looked."""
    return (f"no database at {path}; check --db, NOTIFD_DB or the config file's db, "
            "or create it with `notifctl db upgrade` (notifd also creates it when it starts)")


class NoDatabase(UnusableDatabase):
    """`open_engine(create=False)` found no notifd database where it looked; the message says where."""


def open_engine(
    url: URL, name: str = "notifd", create: bool = True, busy_timeout: float = SQLITE_BUSY_TIMEOUT_MS / 1000,
    migrate: bool = True,
) -> Engine:
    """An engine on a database whose schema is current: upgraded if needed (and `migrate`),
    created if allowed.

    Raises UnusableDatabase when the database is newer than this notifd, or older and not
    `migrate` (notifctl: an upgrade is an operator's decision, made with `notifctl db
    upgrade` or by starting notifd, not a side effect of `notifctl status`), and
    NoDatabase when there is none and `create` is False (notifctl: a mistyped path must not
    create an empty database that no daemon will ever read).
    """
    path = sqlite_path(url)
    if path is not None and not path.exists():
        if not create:
            raise NoDatabase(missing(path))
        _create_sqlite(path)
    engine = make_engine(url, name, busy_timeout)
    try:
        with transaction(engine) as conn:  # a read: no need to wait for a writer's lock
            version = schema_version(conn)
        if version is None and not create:
            raise NoDatabase(
                f"the database {url.render_as_string(hide_password=True)} holds no notifd schema; "
                "create it with `notifctl db upgrade` (notifd also creates it when it starts)"
            )
        if version != store.SCHEMA_HEAD:
            if not migrate and version is not None and is_known_revision(version):
                raise UnusableDatabase(
                    f"the database schema is at revision {version}, older than this notifd's {store.SCHEMA_HEAD}: "
                    "upgrade it with `notifctl db upgrade` (notifd also does when it starts), then run this again"
                )
            upgrade(engine, version)
    except (OperationalError, sqlite3.OperationalError) as e:
        engine.dispose()
        # In WAL mode even a read must create the -shm file beside the database.
        raise read_only_error(url, e) or e
    except BaseException:
        engine.dispose()
        raise
    return engine


def read_only_error(url: URL, error: BaseException) -> UnusableDatabase | None:
    """What to say instead of `error` when it comes from a SQLite file on a read-only file system."""
    path = sqlite_path(url)
    if path is not None and isinstance(error, (OperationalError, sqlite3.OperationalError)) and on_read_only_file_system(path):
        return read_only_database(path)
    return None


def is_known_revision(version: str) -> bool:
    """Whether this notifd's migrations know `version`; a revision they do not is a newer notifd's."""
    from alembic.script import ScriptDirectory

    return version in {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def upgrade(engine: Engine, version: str | None = None) -> list[str]:
    """Bring the schema to head; returns the revisions applied.

    An existing SQLite file is first copied aside (`<file>.backup-<revision>`).
    """
    from alembic.script import ScriptDirectory

    config = _alembic_config()
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    if version is not None and not is_known_revision(version):
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


# Any constant: the key of the advisory lock held while the schema changes on PostgreSQL.
_PG_SCHEMA_LOCK = 0x6E6F7469  # "noti"


def _alembic_upgrade(engine: Engine, config) -> None:
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several nodes starting at once on an empty database: one migrates, the others
            # wait here, then find the schema at head (Alembic reads the version after the
            # lock) and do nothing. The lock ends with the transaction.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
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
        if e.errno == errno.EROFS:
            raise read_only_database(path) from e
        raise UnusableDatabase(f"cannot create the database {path}: {e.strerror}") from e


def write_database_file(path: Path, data: bytes = b"", exclusive: bool = False) -> None:
    """Write a new database file (`data`: its bytes, or none yet) as notifd creates one.

    Owner-only from the start: the database holds token hashes, and posting is an admin
    act granted by write access to this file. Created by root (an admin's `sudo notifctl
    db upgrade`), it belongs to whoever owns its directory (the service's state
    directory), or the daemon could not open it; SQLite gives its -wal and -shm files the
    database's owner. `exclusive`: fail if the file exists, instead of emptying it.
    """
    flags = os.O_CREAT | os.O_WRONLY | (os.O_EXCL if exclusive else os.O_TRUNC)
    with open(os.open(path, flags, 0o600), "wb") as f:
        f.write(data)
    if os.geteuid() == 0:
        directory = path.parent.stat()
        os.chown(path, directory.st_uid, directory.st_gid)


def _build_sqlite(path: Path, tmp: Path) -> None:
    try:
        # Built under a temporary name, owned as the database will be (the link keeps it).
        write_database_file(tmp)
        engine = make_engine(URL.create("sqlite", database=str(tmp)))
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


@dataclass(frozen=True)
class Restored:
    """What `restore_sqlite` did."""

    items: int  # in the backup
    schema: str | None  # the backup's revision
    ids_after: int  # new items get ids above this: the replaced database's last one, or the backup's if higher
    unreadable: str | None  # why the replaced database could not be read (then ids continue after the backup's)


def restore_sqlite(backup: Path, target: Path, now: Any) -> Restored:
    """Put `backup` in place of the database at `target`, with notifd stopped.

    New ids continue after the last ones the replaced database handed out (items, clients,
    deliveries, changes), not after the backup's: an item posted after the backup was
    taken, and gone with the restore, keeps an id no new item takes, so a consumer that
    remembers ids (an event stream's Last-Event-ID, a webhook receiver) misses nothing
    new. The restored file has the replaced one's owner and mode (owner-only, owned like
    its directory, when there was none); it is written aside, synced and renamed into
    place, and the replaced database's -wal and -shm files go with it. Raises
    UnusableDatabase, one line, and changes nothing, when it cannot.
    """
    from urllib.parse import quote

    from .posting import NODES_QUERY, running_daemons

    backup_uri = f"file:{quote(str(backup.resolve()))}?immutable=1"  # a path may hold '?' or '#'
    try:
        with contextlib.closing(sqlite3.connect(backup_uri, uri=True)) as conn:
            checked = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if checked != ["ok"]:
                raise UnusableDatabase(f"{backup} is damaged: {'; '.join(checked[:3])}")
            schema = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    except sqlite3.Error as e:
        raise UnusableDatabase(f"{backup} is not a notifd database: {first_line(e)}") from e
    except OSError as e:
        raise UnusableDatabase(f"cannot read {backup}: {e.strerror}") from e

    counters: dict[str, int] = {}
    unreadable = None
    if target.exists():
        try:
            with contextlib.closing(sqlite3.connect(target)) as conn:
                running = running_daemons(conn.execute(NODES_QUERY).fetchall(), now)
                if not running:
                    counters = dict(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
                    # Its WAL folded into the file: the -wal removed below holds nothing then,
                    # and a restore cut short leaves this database whole.
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            unreadable = first_line(e)
        else:
            if running:
                raise UnusableDatabase(f"notifd is running on {target} ({', '.join(d.node for d in running)}): "
                                       "stop it first (systemctl stop notifd)")

    partial = target.with_name(f".{target.name}.restoring-{os.getpid()}")
    try:
        write_database_file(partial)
        if target.exists():
            replaced = target.stat()
            os.chmod(partial, stat.S_IMODE(replaced.st_mode))
            if (replaced.st_uid, replaced.st_gid) != (os.geteuid(), os.getegid()):
                os.chown(partial, replaced.st_uid, replaced.st_gid)
        with contextlib.closing(sqlite3.connect(backup_uri, uri=True)) as src, \
                contextlib.closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)
            with dst:
                _forget_processes(dst)
                for table, seq in counters.items():
                    if not dst.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, table)).rowcount:
                        dst.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, seq))
            ids_after = dict(dst.execute("SELECT name, seq FROM sqlite_sequence").fetchall()).get("items", 0)
            dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        for leftover in (Path(f"{target}-wal"), Path(f"{target}-shm"), Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)
        os.replace(partial, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except (OSError, sqlite3.Error) as e:
        reason = getattr(e, "strerror", None) or first_line(e)
        raise UnusableDatabase(f"cannot restore {backup} to {target}: {reason}") from e
    finally:
        partial.unlink(missing_ok=True)
    return Restored(items, schema[0] if schema else None, ids_after, unreadable)


def _forget_processes(conn: sqlite3.Connection) -> None:
    """Empty the heartbeats and the "who is connected" rows of a backup or a restored copy:
    they describe the daemons of that moment, and restored they would show a daemon as
    running (`notifctl status`) or warn a starting one that its name is taken. `db copy`
    leaves them out for the same reason (store.COPIED)."""
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in ("nodes", "presence"):
        if table in present:
            conn.execute(f"DELETE FROM {table}")


def backup_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database, through SQLite's online backup API.

    The copy is written aside and renamed into place, so that TARGET is never half a
    backup; it holds no heartbeats (`_forget_processes`). Raises UnusableDatabase, one
    line, when it cannot be made.
    """
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        # Owner-only from the start: the copy holds token hashes.
        os.close(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)
            with dst:
                _forget_processes(dst)
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as e:
        reason = getattr(e, "strerror", None) or first_line(e)
        raise UnusableDatabase(f"cannot back up {source} to {target}: {reason}") from e
    finally:
        partial.unlink(missing_ok=True)
