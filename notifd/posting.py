# Posting items: the one function every post goes through, on every engine and every path
# (`notifctl add`, `--id`, `--batch`, and whatever comes later), and the SQLite path of
# `notifctl add` that runs it without SQLAlchemy.
#
# Rule 1: items become visible in id order. Readers follow items with "id above the last one
#         seen" (the hub, the durable notifiers' outbox marks, a named client's cursor), so an
#         item committed after a higher id would be skipped for good. SQLite has one writer
#         at a time; on PostgreSQL a sequence hands out ids at insert and two transactions
#         may commit out of order, so `store_posts` takes a transaction-scoped advisory lock
#         before its first id and holds it to the commit: posters take turns.
# Rule 2: a post that is acknowledged is on disk. Posting transactions commit with
#         `synchronous=FULL` on SQLite (the WAL is synced before the commit returns) and
#         `synchronous_commit=on` on PostgreSQL, once per transaction: a batch pays once.
# Rule 3: nothing here imports SQLAlchemy, Twisted or Alembic: importing SQLAlchemy costs
#         ~150 ms, half of a `notifctl add`. `store_posts` runs driver-level SQL through the
#         `execute` of an open write transaction: sqlite3's, or SQLAlchemy's (store.py), whose
#         errors and guards then apply as to every other statement.
#         store.py still owns the schema: tests/unit/test_posting.py compares what both
#         engines hold after the same posts, so a schema change this module does not follow
#         fails the suite. For the same reason the database's own error, UnusableDatabase,
#         and where the database lives are kept here.
from __future__ import annotations

import functools
import os
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from .items import Item, refused_character

# The Alembic revision this notifd expects (store.py and db.py use this one): kept here, not
# read from migrations/, so that the schema is checked without importing Alembic;
# tests/unit/test_migrations.py checks it is the head.
SCHEMA_HEAD = "0008"
SQLITE_BUSY_TIMEOUT_MS = 5000  # default of sqlite_busy_timeout: how long a writer waits for another's lock
KEY_MAX = 200  # characters in an idempotency key (items.key)
ID_MAX = 2**31 - 1  # the largest id both engines store: the schema's Integer columns are 4 bytes on PostgreSQL
HEARTBEAT_SECONDS = 5.0  # how often a daemon records that it is alive (service.py, notifctl status)
ITEMS_LOCK = 0x6E6F7470  # PostgreSQL advisory lock key: posters take turns (Rule 1)


@dataclass(frozen=True, slots=True)
class Post:
    """An item to store: its type, its (already validated) text, and an optional idempotency key.

    `drawn`: the text is a fresh value the type drew for an empty post (`random`); a retry with
    the same key draws another, so its key finds the first item whatever text that holds.
    """

    type: str
    text: str
    key: str | None = None
    drawn: bool = False


@dataclass(frozen=True, slots=True)
class Posted:
    """A stored post: the item, and whether this post created it (False: its key found an earlier one)."""

    item: Item
    created: bool


def key_problem(key: str) -> str | None:
    """What is wrong with an idempotency key (`--id`, the HTTP `id`), or None: every posting
    path refuses the same keys, in the same words after its own name for the key."""
    if not key.strip():
        return "must not be empty"
    if len(key) > KEY_MAX:
        return f"is {len(key)} characters, over the limit of {KEY_MAX}"
    refused = refused_character(key)  # it is echoed in errors: no control or invisible characters
    if refused is None:
        # Stricter than a text: no script needs a format character (zero-width space, joiners,
        # marks) in an identifier, and two keys that show the same must not be two keys.
        hidden = next((ch for ch in key if unicodedata.category(ch) == "Cf"), None)
        if hidden is not None:
            refused = f"contains an invisible formatting character (U+{ord(hidden):04X})"
    return refused


class KeyConflict(Exception):
    """An idempotency key already names an item of another type or text."""

    def __init__(self, item_id: int) -> None:
        super().__init__(f"key already used by item {item_id} with another type or text")
        self.item_id = item_id


def store_posts(
    execute: Callable[[str, tuple], Any],
    dialect: str,
    posts: Sequence[Post],
    now: datetime,
    *,
    report_conflicts: bool = False,
) -> list[Any]:
    """Store `posts` in the caller's open write transaction, in order; the caller commits.

    `execute(sql, params)` runs one statement in that transaction, in the driver's own
    parameter style, and returns a cursor (sqlite3's `Connection.execute`, SQLAlchemy's
    `Connection.exec_driver_sql`); `dialect` is "sqlite" or "postgresql". A key already
    stored finds its item, unless it has another type or text (KeyConflict, and the
    caller rolls back: nothing is stored). A key given twice in one call stores one item.
    With `report_conflicts` (a group of HTTP posts, each its own request), a conflict
    refuses that post only: its place in the list holds the KeyConflict, not raised.

    Returns a Posted per post (or a KeyConflict, see above), in the order of `posts`.
    The statements are few whatever the number of posts: one SELECT for the keys and one
    INSERT per chunk of `CHUNK` posts, so that SQL and the driver's per-statement work are
    paid per group, not per post (a `--batch` or a group commit of HTTP posts).
    """
    sql = _SQL[dialect]
    if dialect == "postgresql":
        execute(sql.lock, (ITEMS_LOCK,))
        execute(sql.durable, ())
        created_at: Any = now
    else:
        created_at = _sqlite_timestamp(now)
    # 1. The keys already stored, looked up together (under the write lock: no one adds one meanwhile).
    stored_keys: dict[str, tuple] = {}
    keys = list(dict.fromkeys(post.key for post in posts if post.key is not None))
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        for row in execute(sql.by_keys(len(chunk)), tuple(chunk)).fetchall():
            stored_keys[row[4]] = tuple(row[:4])
    # 2. Each post in order: an item its key names already, a conflict, or a new item.
    results: list[Any] = [None] * len(posts)
    new: list[int] = []  # indexes of the posts that make new items, in order
    first_with: dict[str, int] = {}  # key -> index of the new post of this call that carries it
    repeats: list[int] = []  # indexes of posts whose key a new post of this call carries
    for index, post in enumerate(posts):
        key = post.key
        if key is not None:
            row = stored_keys.get(key)
            if row is not None:
                item_id, type_name, text, when = row
                if type_name != post.type or (text != post.text and not post.drawn):
                    results[index] = KeyConflict(item_id)
                    continue
                if isinstance(when, str):
                    when = datetime.fromisoformat(when)
                results[index] = Posted(Item(item_id, type_name, text, when), created=False)
                continue
            if key in first_with:
                repeats.append(index)  # decided once the first one has its id
                continue
            first_with[key] = index
        new.append(index)
    # 3. The new items, in order: ids are drawn in the order of the VALUES rows (SQLite takes
    #    them one after the other, PostgreSQL calls the sequence row by row, each under the
    #    write lock); RETURNING does not promise its rows in that order, so they are sorted.
    for start in range(0, len(new), CHUNK):
        chunk = new[start:start + CHUNK]
        params: list[Any] = []
        for index in chunk:
            post = posts[index]
            params += (post.type, post.text, created_at, post.key)
        if sql.returning:
            ids = sorted(row[0] for row in execute(sql.insert_rows(len(chunk)), tuple(params)).fetchall())
        else:  # an SQLite older than 3.35 has no RETURNING: a row at a time
            ids = [execute(sql.insert_rows(1), tuple(params[4 * i:4 * i + 4])).lastrowid for i in range(len(chunk))]
        for index, item_id in zip(chunk, ids, strict=True):
            post = posts[index]
            results[index] = Posted(Item(item_id, post.type, post.text, now), created=True)
    for index in repeats:
        post = posts[index]
        first = results[first_with[post.key]].item
        if first.type != post.type or (first.text != post.text and not post.drawn):
            results[index] = KeyConflict(first.id)
        else:
            results[index] = Posted(first, created=False)
    if not report_conflicts:
        # The first conflict in the order of `posts`; the caller's rollback undoes the rest.
        for result in results:
            if isinstance(result, KeyConflict):
                raise result
    return results


CHUNK = 200  # posts per INSERT (4 parameters each: under SQLite's oldest limit of 999 parameters)


@dataclass(frozen=True)
class _Statements:
    placeholder: str
    returning: bool
    lock: str = ""
    durable: str = ""

    def insert_rows(self, count: int) -> str:
        """INSERT of `count` items, with RETURNING id when the engine has it."""
        return _insert_rows(self.placeholder, count, self.returning)

    def by_keys(self, count: int) -> str:
        """The stored items named by `count` keys: id, type, text, created_at, key."""
        return _by_keys(self.placeholder, count)


@functools.lru_cache(maxsize=64)
def _insert_rows(p: str, count: int, returning: bool) -> str:
    row = f"({p}, {p}, {p}, {p})"
    return (f"INSERT INTO items (type, text, created_at, key) VALUES {', '.join([row] * count)}"
            + (" RETURNING id" if returning else ""))


@functools.lru_cache(maxsize=64)
def _by_keys(p: str, count: int) -> str:
    return f"SELECT id, type, text, created_at, key FROM items WHERE key IN ({', '.join([p] * count)})"


_SQL = {
    # RETURNING came with SQLite 3.35 (2021); an older library inserts a row at a time.
    "sqlite": _Statements("?", returning=sqlite3.sqlite_version_info >= (3, 35)),
    "postgresql": _Statements(
        "%s",
        returning=True,
        lock="SELECT pg_advisory_xact_lock(%s)",
        # Whatever the server or the role defaults to: this commit is waited for on disk.
        durable="SET LOCAL synchronous_commit TO on",
    ),
}


def _sqlite_timestamp(when: datetime) -> str:
    # SQLAlchemy's storage format for DateTime on SQLite.
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


# --- `notifctl add` on a SQLite file, without SQLAlchemy ----------------------------------------


class UnusableDatabase(Exception):
    """The database cannot be used: newer than this notifd, cannot be created or copied, on a
    read-only disk; the message says why."""


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


def post_to_sqlite_file(
    path: Path, posts: Sequence[Post], now: datetime, busy_timeout: float = SQLITE_BUSY_TIMEOUT_MS / 1000
) -> list[Posted] | None:
    """Store `posts` in the SQLite file at `path` in one durable transaction.

    Returns None, having stored nothing, when there is no such file or its schema is not
    SCHEMA_HEAD: the caller then goes through store.py, which says why or upgrades it.
    """
    if not path.is_file():
        return None  # sqlite3 would create it; store.py says there is no database
    try:
        return _post_to_file(path, posts, now, busy_timeout)
    except sqlite3.OperationalError as e:
        if on_read_only_file_system(path):
            raise read_only_database(path) from e
        raise


def _post_to_file(path: Path, posts: Sequence[Post], now: datetime, busy_timeout: float) -> list[Posted] | None:
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        # The settings of db.make_engine (journal_mode=WAL is kept by the file), but FULL:
        # the WAL is synced before COMMIT returns (Rule 2). It must be set outside a transaction.
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            version = None  # no schema yet
        if version != (SCHEMA_HEAD,):
            conn.execute("ROLLBACK")
            return None
        stored = store_posts(conn.execute, "sqlite", posts, now)
        conn.execute("COMMIT")
        return stored
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


# --- what the running daemons serve -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Running:
    """A daemon's heartbeat as notifctl reads it: its name, and the item types it serves (None: not said)."""

    node: str
    types: frozenset[str] | None


def running_daemons(rows: Sequence[tuple[str, str | None, Any, Any]], now: datetime) -> list[Running]:
    """The daemons alive at `now`, from `nodes` rows (node, types, heartbeat_at, stopped_at)."""
    running = []
    for node, types, heartbeat_at, stopped_at in rows:
        if isinstance(heartbeat_at, str):  # sqlite3 gives SQLAlchemy's text format
            heartbeat_at = datetime.fromisoformat(heartbeat_at)
        if stopped_at is None and (now - heartbeat_at).total_seconds() < 3 * HEARTBEAT_SECONDS:
            running.append(Running(node, None if types is None else frozenset(filter(None, types.split(",")))))
    return running


def unserved(types: Sequence[str], running: Sequence[Running]) -> str | None:
    """A warning when a posted type is served by none of the running daemons, else None.

    Nothing is said when no daemon runs (the item waits for one) or when one does not say
    what it serves (an older notifd).
    """
    if not running or any(daemon.types is None for daemon in running):
        return None
    missing = [name for name in dict.fromkeys(types) if not any(name in daemon.types for daemon in running)]
    if not missing:
        return None
    served = "; ".join(f"{daemon.node} serves {', '.join(sorted(daemon.types)) or 'nothing'}" for daemon in running)
    return f"{', '.join(missing)}: served by no running notifd ({served})"


NODES_QUERY = "SELECT node, types, heartbeat_at, stopped_at FROM nodes"


def sqlite_nodes(path: Path) -> list[tuple]:
    """The `nodes` rows of a SQLite file at the schema's head, without SQLAlchemy."""
    conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        return conn.execute(NODES_QUERY).fetchall()
    finally:
        conn.close()
