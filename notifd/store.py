# Every table and every statement. Queries are plain functions `f(conn, ...)` of a
# SQLAlchemy Connection and return `items.py` dataclasses or plain values, never a Row,
# Result or ORM object: the daemon runs them on its database thread (db.py), notifctl
# calls them through `Database.call`. A query that writes is marked `@writes`.
#
# Read state does not grow with clients x items: a named client has one cursor per type,
# the id of the last item of that type it was sent (like IMAP UIDs or consumer offsets).
# "Unread" means "id above the cursor and recent" (see items.Window).
#
# Every statement runs on SQLite and on PostgreSQL. SQLite has one writer at a
# time (db.py begins writes IMMEDIATE); on PostgreSQL several nodes write at once under
# READ COMMITTED, so a read-then-write that two nodes could race is an upsert
# (`_insert(...).on_conflict_*`), a row lock (`with_for_update`, which the SQLite compiler
# leaves out: it needs none), or, for posting items, an advisory lock (posting.py).
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Mapping, Sequence

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    not_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .items import Item, Pick, Window
from .posting import ITEMS_LOCK, SCHEMA_HEAD, KeyConflict, Post, Posted, store_posts
from .wakeup import CHANNEL as WAKEUP_CHANNEL

metadata = MetaData()

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("type", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    # `notifctl add --id KEY`: a retried post finds its first copy instead of adding one.
    Column("key", String(200), nullable=True, unique=True),
    Index("ix_items_type_id", "type", "id"),
    sqlite_autoincrement=True,  # readers follow ids: one must never come back after a delete
)

clients = Table(
    "clients",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=True),
    # The item types this client may query and be notified of, comma-separated; NULL: all.
    Column("types", Text, nullable=True),
    Index("ix_clients_token_hash", "token_hash"),  # a bearer token over HTTP names no client
    sqlite_autoincrement=True,  # marks still on their way for a removed client must not land on a new one
)

# Who may post over HTTP: a token (stored hashed, like clients') scoped to item types.
publishers = Table(
    "publishers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("types", Text, nullable=False),  # comma-separated item types it may post
    Column("created_at", DateTime, nullable=False),
    Column("last_used", DateTime, nullable=True),
    sqlite_autoincrement=True,  # ids only grow, as clients'
)

cursors = Table(
    "cursors",
    metadata,
    Column("client_id", Integer, ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True),
    Column("type", String(32), primary_key=True),
    Column("last_read_id", Integer, nullable=False),
)

# Who is connected now, per daemon node, for `notifctl clients`. A node clears its own
# rows when it starts, so a crash leaves no ghost for longer than a restart.
presence = Table(
    "presence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    Column("node", String(200), nullable=False),
    Column("since", DateTime, nullable=False),
    Index("ix_presence_client", "client_id"),
)

# The outbox of durable notifiers: one row per item and notifier still to be
# delivered, or dead. A delivered row is deleted. `outbox_marks` holds each durable
# notifier's cursor over `items`: the last item put in its outbox. Enqueueing reads the
# items above the mark and moves it in one transaction, so an item committed while the
# daemon was down is enqueued when it starts, and exactly once with several daemons.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("notifier", String(64), nullable=False),
    Column("state", String(8), nullable=False),  # "pending" or "dead"
    Column("attempts", Integer, nullable=False),
    # When the next attempt is due; while a daemon delivers it, the end of its lease.
    Column("next_attempt_at", DateTime, nullable=True),
    Column("claimed_by", String(200), nullable=True),  # the node delivering it now
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Index("ix_outbox_due", "notifier", "state", "next_attempt_at"),
    Index("ux_outbox_item_notifier", "item_id", "notifier", unique=True),
    sqlite_autoincrement=True,  # a delivery's id names it for good (`notifctl outbox retry ID`)
)

outbox_marks = Table(
    "outbox_marks",
    metadata,
    Column("notifier", String(64), primary_key=True),
    Column("last_item_id", Integer, nullable=False),
)


# What running daemons must forget, in commit order: an item removed (`notifctl rm`; its
# text may sit in a hub's memory), a client removed or its token rotated (its open
# connections are closed). Daemons follow this table as they follow `items`, by id, and
# rows are written under the posting lock so that ids become visible in order. Old rows
# are pruned: a daemon that starts reads the current state, not the history.
changes = Table(
    "changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # one of CHANGE_KINDS
    Column("subject", Integer, nullable=False),  # the item's or the client's id
    Column("created_at", DateTime, nullable=False),
    sqlite_autoincrement=True,  # ids only grow, even once old rows are pruned
)

ITEM_REMOVED = "item removed"
CLIENT_REMOVED = "client removed"
TOKEN_ROTATED = "token rotated"
CHANGE_KINDS = (ITEM_REMOVED, CLIENT_REMOVED, TOKEN_ROTATED)


# Each running daemon's heartbeat, for `notifctl status`.
nodes = Table(
    "nodes",
    metadata,
    Column("node", String(200), primary_key=True),
    Column("version", String(32), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("listen", Text, nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
    Column("stopped_at", DateTime, nullable=True),
    Column("connections", Integer, nullable=False),
    Column("subscribers", Integer, nullable=False),
    Column("types", Text, nullable=True),  # the item types it serves, comma-separated
)


def writes(query):
    """Marks a query that writes: it runs in a transaction that takes the write lock first.

    Queries without the mark run in read-only transactions, which SQLite in WAL mode
    serves even while another process holds the write lock.
    """
    query.writes = True
    return query


def utcnow() -> datetime:
    """Naive UTC, as every timestamp column holds."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class ClientExists(Exception):
    """`add_client` for a name that is taken."""


class NoSuchItems(Exception):
    """`remove_items` for ids that are not stored; nothing was removed."""

    def __init__(self, item_ids: list[int]) -> None:
        super().__init__(f"no item {', '.join(map(str, item_ids))}")
        self.item_ids = item_ids


def _item(row) -> Item:
    return Item(id=row.id, type=row.type, text=row.text, created_at=row.created_at)


def _insert(conn: Connection, table: Table):
    """The dialect's INSERT, which has `on_conflict_do_update` / `_do_nothing` on both engines."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


# --- items -----------------------------------------------------------------------------


def durable(query):
    """Marks a write whose commit must be on disk before it returns: it stores posted items.

    On SQLite that transaction runs with `synchronous=FULL` (db.py), every other one with
    NORMAL; on PostgreSQL `posting.store_posts` asks for `synchronous_commit=on` itself.
    """
    query.durable = True
    return writes(query)


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    kind: str
    subject: int


def _take_turn(conn: Connection) -> None:
    """Wait for the posting lock (PostgreSQL): what follows becomes visible in id order (posting.py)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(ITEMS_LOCK)))


def _record_change(conn: Connection, kind: str, subject: int, now: datetime | None = None) -> None:
    # Called with the posting lock held (see _take_turn).
    conn.execute(insert(changes).values(kind=kind, subject=subject, created_at=now or utcnow()))


@durable
def post_items(conn: Connection, posts: Sequence[Post], *, now: datetime | None = None) -> list[Posted]:
    """Store posts in this transaction, through the one posting function (see posting.py)."""
    return store_posts(conn.exec_driver_sql, conn.dialect.name, posts, now or utcnow())


ITEMS_BATCH = 10_000


# The statements run once per group of HTTP posts (and the hub's catch-up after each), built
# once: building one and computing its cache key cost more than running it.
_ITEMS_AFTER = (select(items).where(items.c.id > bindparam("after", type_=Integer)).order_by(items.c.id)
                .limit(bindparam("limit", type_=Integer)))
_CHANGES_AFTER = (select(changes.c.id, changes.c.kind, changes.c.subject)
                  .where(changes.c.id > bindparam("after", type_=Integer)).order_by(changes.c.id))


def items_after(conn: Connection, after: int, limit: int = ITEMS_BATCH) -> list[Item]:
    """Items with an id above `after`, oldest first: what the hub has not seen yet."""
    rows = conn.execute(_ITEMS_AFTER, {"after": after, "limit": limit})
    return [_item(row) for row in rows]


def follows(query):
    """Marks the query that follows new items and changes (the hub's catch-up).

    It runs on a database thread of its own: queries that wait for the catch-up (hub.py)
    must never be in the way of it, nor it behind them.
    """
    query.follows = True
    return query


@follows
def news_after(conn: Connection, item_after: int, change_after: int) -> tuple[list[Item], list[Change]]:
    """The items and the changes a daemon has not seen yet, in one transaction, oldest first."""
    found = conn.execute(_CHANGES_AFTER, {"after": change_after})
    return items_after(conn, item_after), [Change(row.id, row.kind, row.subject) for row in found]


def max_change_id(conn: Connection) -> int:
    return conn.execute(select(func.coalesce(func.max(changes.c.id), 0))).scalar_one()


@writes
def remove_items(conn: Connection, item_ids: Sequence[int], *, now: datetime | None = None) -> list[Item]:
    """Delete items and their deliveries to durable notifiers; returns what was deleted.

    All or nothing: raises NoSuchItems, deleting nothing, when any id is not stored. Read
    cursors are item ids and stay as they are.
    """
    _take_turn(conn)
    wanted = sorted(set(item_ids))
    found = [_item(row) for row in conn.execute(select(items).where(items.c.id.in_(wanted)).order_by(items.c.id))]
    missing = sorted(set(wanted) - {item.id for item in found})
    if missing:
        raise NoSuchItems(missing)
    conn.execute(delete(outbox).where(outbox.c.item_id.in_(wanted)))
    conn.execute(delete(items).where(items.c.id.in_(wanted)))
    for item in found:
        _record_change(conn, ITEM_REMOVED, item.id, now)
    return found


@writes
def prune_changes(conn: Connection, cutoff: datetime) -> int:
    """Forget changes recorded before `cutoff`: every running daemon has long read them."""
    return conn.execute(delete(changes).where(changes.c.created_at < cutoff)).rowcount


def list_items(conn: Connection, type_name: str | None = None, limit: int = 20) -> list[Item]:
    """The newest items, newest first."""
    query = select(items).order_by(items.c.id.desc()).limit(limit)
    if type_name is not None:
        query = query.where(items.c.type == type_name)
    return [_item(row) for row in conn.execute(query)]


def max_item_id(conn: Connection) -> int:
    return conn.execute(select(func.coalesce(func.max(items.c.id), 0))).scalar_one()


def newest_items(conn: Connection, type_name: str, limit: int, up_to: int | None = None) -> list[Item]:
    """The newest `limit` items of a type (with ids up to `up_to`, if given), oldest first."""
    query = select(items).where(items.c.type == type_name)
    if up_to is not None:
        query = query.where(items.c.id <= up_to)
    rows = conn.execute(query.order_by(items.c.id.desc()).limit(limit))
    return [_item(row) for row in rows][::-1]


def _recent(type_name: str, window: Window, now: datetime):
    """The WHERE clause of the recent items of one type."""
    clauses = [items.c.type == type_name]
    if window.max_age is not None:
        clauses.append(items.c.created_at >= now - window.max_age)
    if window.max_count is not None:
        # The id of the max_count-th newest item: everything from it up is recent.
        floor = (
            select(items.c.id)
            .where(items.c.type == type_name)
            .order_by(items.c.id.desc())
            .limit(1)
            .offset(window.max_count - 1)
            .scalar_subquery()
        )
        clauses.append(items.c.id >= func.coalesce(floor, 0))
    return clauses


def next_unread(
    conn: Connection, type_name: str, after: int, pick: Pick, window: Window, now: datetime
) -> Item | None:
    """The recent item of `type_name` above cursor `after` that a query returns, or None."""
    order = items.c.id.asc() if pick is Pick.OLDEST else items.c.id.desc()
    query = (
        select(items)
        .where(items.c.id > after, *_recent(type_name, window, now))
        .order_by(order)
        .limit(1)
    )
    row = conn.execute(query).first()
    return None if row is None else _item(row)


def recent_after(
    conn: Connection, afters: Mapping[str, int], windows: Mapping[str, Window], now: datetime, limit: int
) -> list[Item]:
    """The recent items of each type above its id in `afters` (at most `limit` per type), in id order."""
    found: list[Item] = []
    for type_name, after in afters.items():
        rows = conn.execute(
            select(items).where(items.c.id > after, *_recent(type_name, windows[type_name], now))
            .order_by(items.c.id).limit(limit)
        )
        found += [_item(row) for row in rows]
    return sorted(found, key=lambda item: item.id)


def count_unread(conn: Connection, type_name: str, after: int, window: Window, now: datetime) -> int:
    query = select(func.count()).select_from(items).where(items.c.id > after, *_recent(type_name, window, now))
    return conn.execute(query).scalar_one()


# --- named clients -----------------------------------------------------------------------
# Tokens are 256 random bits, so a plain SHA-256 is enough to store them: there is nothing
# to brute-force, unlike a password. Comparison is constant-time.

TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Client:
    id: int
    name: str
    created_at: datetime
    last_seen: datetime | None
    types: frozenset[str] | None = None  # the item types it may read; None: all


def _types_out(value: str | None) -> frozenset[str] | None:
    return None if value is None else frozenset(filter(None, value.split(",")))


def _types_in(types: Sequence[str] | None) -> str | None:
    return None if types is None else ",".join(sorted(set(types)))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@writes
def add_client(
    conn: Connection, name: str, *, types: Sequence[str] | None = None, now: datetime | None = None
) -> str:
    """Create a named client, allowed `types` (None: every type); returns its token, stored only hashed."""
    return _add_with_token(conn, clients, ClientExists, name, types, now)


def _add_with_token(conn: Connection, table: Table, exists: type, name: str, types, now: datetime | None) -> str:
    """A new row of `name` with a fresh token (stored hashed); raises `exists` if the name is taken."""
    if conn.execute(select(table.c.id).where(table.c.name == name)).first() is not None:
        raise exists(name)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        conn.execute(insert(table).values(
            name=name, token_hash=hash_token(token), created_at=now or utcnow(), types=_types_in(types),
        ))
    except IntegrityError:
        raise exists(name) from None  # created by another admin since the check (PostgreSQL)
    return token


@writes
def rotate_token(conn: Connection, name: str) -> str | None:
    """Give a named client a new token (the old one stops working); None if there is no such client."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    _take_turn(conn)
    client_id = conn.execute(select(clients.c.id).where(clients.c.name == name)).scalar()
    if client_id is None:
        return None
    conn.execute(update(clients).where(clients.c.id == client_id).values(token_hash=hash_token(token)))
    _record_change(conn, TOKEN_ROTATED, client_id)  # its connections under the old token are closed
    return token


@writes
def remove_client(conn: Connection, name: str) -> bool:
    _take_turn(conn)
    client_id = conn.execute(select(clients.c.id).where(clients.c.name == name)).scalar()
    if client_id is None:
        return False
    _record_change(conn, CLIENT_REMOVED, client_id)  # its open connections are closed
    # Children first: SQLite enforces ON DELETE CASCADE only with foreign_keys on.
    conn.execute(delete(cursors).where(cursors.c.client_id == client_id))
    conn.execute(delete(presence).where(presence.c.client_id == client_id))
    conn.execute(delete(clients).where(clients.c.id == client_id))
    return True


def list_clients(conn: Connection) -> list[Client]:
    rows = conn.execute(select(clients).order_by(clients.c.name))
    return [Client(row.id, row.name, row.created_at, row.last_seen, _types_out(row.types)) for row in rows]


@writes
def identify(conn: Connection, name: str, token: str, *, now: datetime | None = None) -> Identity | None:
    """Check a hello; returns who it is, or None for a wrong name or token."""
    as_of_change = max_change_id(conn)  # first: see _identity
    row = conn.execute(
        select(clients.c.id, clients.c.token_hash, clients.c.types).where(clients.c.name == name)
    ).first()
    # Hash even for an unknown name, so that timing does not tell which names exist.
    offered = hash_token(token)
    if row is None or not hmac.compare_digest(offered, row.token_hash):
        return None
    return _identity(conn, row, as_of_change, now)


@writes
def identify_bearer(conn: Connection, token: str, *, now: datetime | None = None) -> Identity | None:
    """The named client whose token this is (HTTP's `Authorization: Bearer`), or None."""
    as_of_change = max_change_id(conn)  # first: see _identity
    row = conn.execute(
        select(clients.c.id, clients.c.token_hash, clients.c.types).where(clients.c.token_hash == hash_token(token))
    ).first()
    return None if row is None else _identity(conn, row, as_of_change, now)


def _identity(conn: Connection, row, as_of_change: int, now: datetime | None) -> Identity:
    # `as_of_change` was read before the token was checked. On PostgreSQL each statement
    # has its own snapshot: read after, it could include a rotation or removal committed
    # since the check, and the daemons, closing only sessions older than a revocation,
    # would leave this one open under a token that no longer exists.
    conn.execute(update(clients).where(clients.c.id == row.id).values(last_seen=now or utcnow()))
    return Identity(row.id, client_cursors(conn, row.id), as_of_change, _types_out(row.types))


@dataclass(frozen=True, slots=True)
class Identity:
    """A named client as a successful `hello` found it."""

    client_id: int
    cursors: dict[str, int]  # type -> the id of the last item it was sent
    as_of_change: int  # the newest change then: only later revocations concern this connection
    types: frozenset[str] | None = None  # the item types it may read; None: all


def client_cursors(conn: Connection, client_id: int) -> dict[str, int]:
    rows = conn.execute(select(cursors.c.type, cursors.c.last_read_id).where(cursors.c.client_id == client_id))
    return {row.type: row.last_read_id for row in rows}


@writes
def mark_read(conn: Connection, marks: Sequence[tuple[int, str, int]]) -> None:
    """Move clients' cursors forward: each mark is (client id, type, item id); never back.

    The mark of a client removed meanwhile is skipped, so it cannot fail the others'.
    """
    statement = _MARK_READ.get(conn.dialect.name)
    if statement is None:
        statement = _MARK_READ[conn.dialect.name] = _mark_read_statement(conn)
    conn.execute(statement, [
        {"client_id": client_id, "type": type_name, "last_read_id": item_id}
        for client_id, type_name, item_id in marks
    ])


# Built once per dialect: building this statement cost more than running it, once per batch of marks.
_MARK_READ: dict[str, object] = {}


def _mark_read_statement(conn: Connection):
    # One statement per mark, no read first: connections of one client on two nodes may
    # write the same row at once, and the furthest mark wins.
    client_id = bindparam("client_id", type_=Integer)
    mark = select(client_id, bindparam("type", type_=String), bindparam("last_read_id", type_=Integer))
    new = _insert(conn, cursors).from_select(
        ["client_id", "type", "last_read_id"], mark.where(exists().where(clients.c.id == client_id))
    )
    return new.on_conflict_do_update(
        index_elements=[cursors.c.client_id, cursors.c.type],
        set_={"last_read_id": case(
            (cursors.c.last_read_id < new.excluded.last_read_id, new.excluded.last_read_id),
            else_=cursors.c.last_read_id,
        )},
    )


def unread_counts(
    conn: Connection, client_id: int, windows: Mapping[str, Window], now: datetime
) -> dict[str, int]:
    """A client's count of recent unread items for each type in `windows`."""
    read = client_cursors(conn, client_id)
    return {name: count_unread(conn, name, read.get(name, 0), window, now) for name, window in windows.items()}


# --- publishers: who may post over HTTP -----------------------------------------------------------


class PublisherExists(Exception):
    """`add_publisher` for a name that is taken."""


@dataclass(frozen=True, slots=True)
class Publisher:
    id: int
    name: str
    types: frozenset[str]  # the item types it may post
    created_at: datetime
    last_used: datetime | None


@writes
def add_publisher(conn: Connection, name: str, types: Sequence[str], *, now: datetime | None = None) -> str:
    """Create a publisher token for `types`; returns the token, which is stored only hashed."""
    return _add_with_token(conn, publishers, PublisherExists, name, types, now)


@writes
def rotate_publisher(conn: Connection, name: str) -> str | None:
    """A new token for a publisher (the old one stops working at once); None if there is no such publisher."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    changed = conn.execute(
        update(publishers).where(publishers.c.name == name).values(token_hash=hash_token(token))
    ).rowcount
    return token if changed else None


@writes
def remove_publisher(conn: Connection, name: str) -> bool:
    return bool(conn.execute(delete(publishers).where(publishers.c.name == name)).rowcount)


def list_publishers(conn: Connection) -> list[Publisher]:
    rows = conn.execute(select(publishers).order_by(publishers.c.name))
    return [Publisher(row.id, row.name, _types_out(row.types), row.created_at, row.last_used) for row in rows]


@dataclass(frozen=True, slots=True)
class Publication:
    """One HTTP post on its way to the database: the bearer token offered and the post."""

    token: str
    post: Post


@dataclass(frozen=True, slots=True)
class Published:
    """What became of a Publication: "created", "found" (its key named an earlier item of the
    same text), "unauthorized" (no such token), "forbidden" (not for this type), "conflict"."""

    outcome: str
    item: Item | None = None
    conflict_with: int | None = None


_PUBLISHER_BY_HASH = select(publishers).where(publishers.c.token_hash == bindparam("token_hash", type_=String))


def publisher_by_token(conn: Connection, token: str) -> Publisher | None:
    """The publisher whose token this is, or None (a read: `publish` checks again as it stores)."""
    row = conn.execute(_PUBLISHER_BY_HASH, {"token_hash": hash_token(token)}).first()
    return None if row is None else Publisher(row.id, row.name, _types_out(row.types), row.created_at, row.last_used)


_PUBLISHERS_USED = (update(publishers).where(publishers.c.id.in_(bindparam("ids", expanding=True)))
                    .values(last_used=bindparam("now", type_=DateTime)))


@durable
def publish(conn: Connection, publications: Sequence[Publication], *, now: datetime | None = None) -> list[Published]:
    """Store a group of HTTP posts in one durable transaction; each is checked against its token.

    Tokens are checked here, in the transaction that stores the post: a token removed or
    rotated before this commit posts nothing. Each post goes through the one posting
    function; a key conflict refuses that post only. On PostgreSQL the wake-up (NOTIFY) is
    part of the transaction, so that it is delivered exactly when the items are visible.
    """
    now = now or utcnow()
    # Each token offered in the group is hashed and looked up once (50 publishers are often 1 token).
    tokens: dict[str, Publisher | None] = {}
    for token in {publication.token for publication in publications}:
        tokens[token] = publisher_by_token(conn, token)
    outcomes: list[Published | None] = [None] * len(publications)
    accepted: list[int] = []  # indexes of the publications that may post
    used: set[int] = set()
    for index, publication in enumerate(publications):
        publisher = tokens[publication.token]
        if publisher is None:
            outcomes[index] = Published("unauthorized")
        elif publication.post.type not in publisher.types:
            outcomes[index] = Published("forbidden")
        else:
            used.add(publisher.id)
            accepted.append(index)
    # One call of the posting function for the whole group: its statements are per group, and
    # a key conflict refuses that post only.
    posted = store_posts(conn.exec_driver_sql, conn.dialect.name, [publications[i].post for i in accepted], now,
                         report_conflicts=True) if accepted else []
    for index, result in zip(accepted, posted, strict=True):
        if isinstance(result, KeyConflict):
            outcomes[index] = Published("conflict", conflict_with=result.item_id)
        else:
            outcomes[index] = Published("created" if result.created else "found", result.item)
    if used:
        conn.execute(_PUBLISHERS_USED, {"ids": sorted(used), "now": now})
    if conn.dialect.name == "postgresql" and any(o.outcome == "created" for o in outcomes):
        conn.exec_driver_sql(f"NOTIFY {WAKEUP_CHANNEL}")
    return outcomes


# --- presence ----------------------------------------------------------------------------


@writes
def client_connected(conn: Connection, client_id: int, node: str, *, now: datetime | None = None) -> int:
    return conn.execute(
        insert(presence).values(client_id=client_id, node=node, since=now or utcnow())
    ).inserted_primary_key[0]


@writes
def client_disconnected(conn: Connection, presence_id: int, *, now: datetime | None = None) -> None:
    client_id = conn.execute(select(presence.c.client_id).where(presence.c.id == presence_id)).scalar()
    conn.execute(delete(presence).where(presence.c.id == presence_id))
    if client_id is not None:
        conn.execute(update(clients).where(clients.c.id == client_id).values(last_seen=now or utcnow()))


@writes
def clear_presence(conn: Connection, node: str) -> None:
    conn.execute(delete(presence).where(presence.c.node == node))


def connected_clients(conn: Connection) -> dict[int, int]:
    """Client id -> number of connections now, over every node."""
    rows = conn.execute(select(presence.c.client_id, func.count()).group_by(presence.c.client_id))
    return {client_id: count for client_id, count in rows}


# --- running daemons -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    node: str
    version: str
    pid: int
    listen: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    connections: int
    subscribers: int
    types: str | None = None


@writes
def node_alive(
    conn: Connection, node: str, *, version: str, pid: int, listen: str, started_at: datetime,
    connections: int, subscribers: int, types: Sequence[str] | None = None, now: datetime | None = None,
) -> None:
    """Record that a daemon runs (at start, then every heartbeat): the row is created if missing.

    `types`: the item types it serves (None: not known), so that notifctl can tell a post
    that no running daemon serves.
    """
    values = dict(
        version=version, pid=pid, listen=listen, started_at=started_at, heartbeat_at=now or utcnow(),
        stopped_at=None, connections=connections, subscribers=subscribers,
        types=None if types is None else ",".join(types),
    )
    conn.execute(_insert(conn, nodes).values(node=node, **values).on_conflict_do_update(
        index_elements=[nodes.c.node], set_=values,
    ))


@writes
def node_stopped(conn: Connection, node: str, *, now: datetime | None = None) -> None:
    now = now or utcnow()
    conn.execute(update(nodes).where(nodes.c.node == node).values(stopped_at=now, heartbeat_at=now, connections=0, subscribers=0))


def list_nodes(conn: Connection) -> list[Node]:
    return [Node(**row._asdict()) for row in conn.execute(select(nodes).order_by(nodes.c.node))]


def item_counts(conn: Connection) -> dict[str, int]:
    """How many items of each type are stored."""
    rows = conn.execute(select(items.c.type, func.count()).group_by(items.c.type).order_by(items.c.type))
    return {type_name: count for type_name, count in rows}


# --- retention -----------------------------------------------------------------------------------
# Items are pruned in small batches, each its own transaction, so that the daemon's database
# thread serves clients between them. Read cursors are item ids: deleting old items leaves
# every cursor meaning what it meant ("everything up to here was sent").


def _expired(type_name: str | None, others: tuple[str, ...], cutoff: datetime):
    """Items of `type_name` (or, when None, of every type not in `others`) created before `cutoff`."""
    clause = items.c.created_at < cutoff
    if type_name is not None:
        return (items.c.type == type_name) & clause
    return items.c.type.not_in(others) & clause if others else clause


def count_expired(conn: Connection, type_name: str | None, others: tuple[str, ...], cutoff: datetime) -> dict[str, int]:
    rows = conn.execute(
        select(items.c.type, func.count()).where(_expired(type_name, others, cutoff)).group_by(items.c.type)
    )
    return {name: count for name, count in rows}


@writes
def prune_batch(conn: Connection, type_name: str | None, others: tuple[str, ...], cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` expired items, oldest first; returns how many went."""
    # SKIP LOCKED (PostgreSQL): nodes pruning at the same time take different batches.
    doomed = (
        select(items.c.id).where(_expired(type_name, others, cutoff)).order_by(items.c.id).limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = [row.id for row in conn.execute(doomed)]
    if ids:
        conn.execute(delete(items).where(items.c.id.in_(ids)))
    return len(ids)


# --- the outbox of durable notifiers ---------------------------------------------------------

PENDING = "pending"
DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: an item still to hand to a durable notifier, or a dead letter."""

    id: int
    item: Item
    notifier: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    claimed_by: str | None
    last_error: str | None
    created_at: datetime


def _delivery(row) -> Delivery:
    return Delivery(
        id=row.id,
        item=Item(id=row.item_id, type=row.type, text=row.text, created_at=row.item_created_at),
        notifier=row.notifier,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        claimed_by=row.claimed_by,
        last_error=row.last_error,
        created_at=row.created_at,
    )


def _deliveries():
    return select(
        outbox, items.c.type, items.c.text, items.c.created_at.label("item_created_at")
    ).join(items, items.c.id == outbox.c.item_id)


@writes
def add_marks(conn: Connection, notifiers: list[str]) -> None:
    """Give each notifier that has none a mark at the newest item (it gets what comes next)."""
    if notifiers:
        newest = max_item_id(conn)
        conn.execute(
            _insert(conn, outbox_marks).on_conflict_do_nothing(index_elements=[outbox_marks.c.notifier]),
            [dict(notifier=name, last_item_id=newest) for name in notifiers],
        )


@writes
def enqueue_new_items(conn: Connection, notifiers: list[str], *, now: datetime, limit: int = ITEMS_BATCH) -> bool:
    """Put the items above each notifier's mark in its outbox; returns True if some are left.

    A notifier seen for the first time starts at the newest item: it gets what comes next,
    not the history.
    """
    more = False
    if not notifiers:
        return more
    known = set(conn.execute(select(outbox_marks.c.notifier)).scalars())
    add_marks(conn, [name for name in notifiers if name not in known])
    # The marks are locked until commit (PostgreSQL), in one order: two nodes enqueueing at
    # once take turns, and the second finds the mark moved by the first.
    marks = dict(conn.execute(
        select(outbox_marks.c.notifier, outbox_marks.c.last_item_id)
        .where(outbox_marks.c.notifier.in_(notifiers))
        .order_by(outbox_marks.c.notifier)
        .with_for_update()
    ).all())
    for name in notifiers:
        if name not in known:
            continue  # starts at the newest item
        ids = conn.execute(
            select(items.c.id).where(items.c.id > marks[name]).order_by(items.c.id).limit(limit)
        ).scalars().all()
        if not ids:
            continue
        conn.execute(
            insert(outbox),
            [dict(item_id=i, notifier=name, state=PENDING, attempts=0, next_attempt_at=now, created_at=now)
             for i in ids],
        )
        conn.execute(update(outbox_marks).where(outbox_marks.c.notifier == name).values(last_item_id=ids[-1]))
        more = more or len(ids) == limit
    return more


@writes
def claim_deliveries(
    conn: Connection, limits: Mapping[str, int], *, node: str, now: datetime, lease_until: Mapping[str, datetime]
) -> list[Delivery]:
    """Take the due deliveries, at most `limits[notifier]` each, oldest due first.

    A claimed row counts one more attempt and is leased to `node` until `lease_until`: if
    the daemon dies while delivering, another daemon (or this one after a restart, see
    `release_claims`) delivers it again.
    """
    claimed: list[Delivery] = []
    for name, limit in limits.items():
        if limit <= 0:
            continue
        # SKIP LOCKED (PostgreSQL): rows another node is claiming right now are left to it;
        # once it commits, their lease keeps them out of this query.
        rows = conn.execute(
            _deliveries()
            .where(outbox.c.notifier == name, outbox.c.state == PENDING, outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
            .with_for_update(of=outbox, skip_locked=True)
        ).all()
        if not rows:
            continue
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([row.id for row in rows]))
            .values(attempts=outbox.c.attempts + 1, next_attempt_at=lease_until[name], claimed_by=node)
        )
        claimed.extend(
            replace(_delivery(row), attempts=row.attempts + 1, next_attempt_at=lease_until[name], claimed_by=node)
            for row in rows
        )
    return claimed


@writes
def delivered(conn: Connection, delivery_id: int) -> None:
    conn.execute(delete(outbox).where(outbox.c.id == delivery_id))


@writes
def delivery_failed(conn: Connection, delivery_id: int, error: str, retry_at: datetime | None) -> None:
    """Record a failed attempt: retried at `retry_at`, or dead when it is None."""
    conn.execute(
        update(outbox)
        .where(outbox.c.id == delivery_id)
        .values(
            state=PENDING if retry_at is not None else DEAD,
            next_attempt_at=retry_at,
            claimed_by=None,
            last_error=error[:1000],
        )
    )


@writes
def release_claims(conn: Connection, node: str, *, now: datetime) -> int:
    """Make the deliveries leased to `node` due now (it restarted: they were interrupted)."""
    return conn.execute(
        update(outbox)
        .where(outbox.c.claimed_by == node, outbox.c.state == PENDING)
        .values(next_attempt_at=now, claimed_by=None)
    ).rowcount


def list_outbox(conn: Connection, limit: int | None = None) -> list[Delivery]:
    """Every pending and dead delivery, oldest first."""
    query = _deliveries().order_by(outbox.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [_delivery(row) for row in conn.execute(query)]


def not_queued(conn: Connection) -> list[tuple[str, Item]]:
    """(notifier, item) for each item above a durable notifier's mark, oldest first: committed,
    but not in its outbox yet. A daemon with that notifier queues them at its next round, or
    when it starts."""
    rows = conn.execute(
        select(outbox_marks.c.notifier, items)
        .join(items, items.c.id > outbox_marks.c.last_item_id)
        .order_by(outbox_marks.c.notifier, items.c.id)
    )
    return [(row.notifier, _item(row)) for row in rows]


def count_outbox(conn: Connection) -> dict[tuple[str, str], int]:
    """How many deliveries the outbox holds, by (notifier, state)."""
    rows = conn.execute(
        select(outbox.c.notifier, outbox.c.state, func.count()).group_by(outbox.c.notifier, outbox.c.state)
    )
    return {(notifier, state): count for notifier, state, count in rows}


@writes
def retry_delivery(conn: Connection, delivery_id: int, *, now: datetime | None = None) -> tuple[str, str | None]:
    """Re-queue a delivery (dead or waiting for its back-off) to be tried now, from a fresh count.

    Returns ("requeued", None), ("unknown", None) (no such delivery: delivered, or never
    was), or ("in flight", node) when a node is delivering it now (claimed, its lease
    running): re-queued then, it would go out twice at once, and the attempt in flight may
    yet succeed.
    """
    now = now or utcnow()
    in_flight = and_(outbox.c.state == PENDING, outbox.c.claimed_by.is_not(None), outbox.c.next_attempt_at > now)
    if conn.execute(
        update(outbox).where(outbox.c.id == delivery_id, not_(in_flight))
        .values(state=PENDING, attempts=0, next_attempt_at=now, claimed_by=None)
    ).rowcount:
        return "requeued", None
    node = conn.execute(select(outbox.c.claimed_by).where(outbox.c.id == delivery_id)).scalar()
    return ("unknown", None) if node is None else ("in flight", node)


# --- moving to another database (`notifctl db copy`) --------------------------------------

# What a copy carries, parents first. `presence` and `nodes` describe the daemons running on
# the old database: they stay behind.
COPIED = (items, clients, publishers, cursors, outbox_marks, outbox)
COPY_BATCH = 1000


def stored_rows(conn: Connection) -> dict[str, int]:
    """How many rows each copied table holds."""
    return {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one() for table in COPIED}


@writes
def copy_from(conn: Connection, source: Connection) -> dict[str, int]:
    """Copy every row of the COPIED tables from `source` into this (empty) database, ids kept.

    Returns the rows copied per table. The id counters then continue after the last id the
    source handed out, not after the last one copied: an item deleted before the copy (by
    retention, `notifctl rm`) left its id behind outbox marks, read cursors and consumers
    that remember ids, and a new item that took it again would be skipped by them all.
    """
    counters = _id_counters(source)
    copied = {}
    for table in COPIED:
        copied[table.name] = 0
        rows = source.execute(select(table).order_by(*table.primary_key.columns))
        for chunk in rows.partitions(COPY_BATCH):
            conn.execute(insert(table), [row._asdict() for row in chunk])
            copied[table.name] += len(chunk)
    # Marks and cursors name item ids too: none may be at or past the next one.
    followed = max([counters.get("items", 0),
                    conn.execute(select(func.coalesce(func.max(outbox_marks.c.last_item_id), 0))).scalar_one(),
                    conn.execute(select(func.coalesce(func.max(cursors.c.last_read_id), 0))).scalar_one()])
    counters["items"] = followed
    for table in COPIED:
        for column in table.primary_key.columns:
            if column.autoincrement is not True:
                continue
            last = max(counters.get(table.name, 0),
                       conn.execute(select(func.coalesce(func.max(column), 0))).scalar_one())
            if conn.dialect.name == "postgresql":
                # setval(seq, n, false): the next value is n.
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                                     f"{int(last) + 1}, false)")
            elif last:
                conn.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = ?", (table.name,))
                conn.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table.name, int(last)))
    return copied


def _id_counters(conn: Connection) -> dict[str, int]:
    """The last id each table's counter handed out (SQLite's sqlite_sequence, PostgreSQL's sequences)."""
    if conn.dialect.name == "sqlite":
        return {name: seq for name, seq in conn.exec_driver_sql("SELECT name, seq FROM sqlite_sequence")}
    counters = {}
    for table in COPIED:
        for column in table.primary_key.columns:
            if column.autoincrement is True:
                sequence = conn.exec_driver_sql(
                    f"SELECT pg_get_serial_sequence('{table.name}', '{column.name}')").scalar_one()
                last, called = conn.exec_driver_sql(f"SELECT last_value, is_called FROM {sequence}").one()
                counters[table.name] = last if called else last - 1
    return counters
