# Every table and every statement. Queries are plain functions `f(conn, ...)` of a
# SQLAlchemy Connection and return `items.py` dataclasses or plain values, never a Row,
# Result or ORM object: the daemon runs them on its database thread (db.py), notifctl
# calls them directly inside `with engine.begin() as conn:`.
#
# Read state does not grow with clients x items: a named client has one cursor per type,
# the id of the last item of that type it was sent (like IMAP UIDs or consumer offsets).
# "Unread" means "id above the cursor and recent" (see items.Window).
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

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
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from .items import Item, Pick, Window

# The Alembic revision this code expects. tests/unit/test_migrations.py checks it is the
# head of migrations/; kept here so that notifctl can check the schema without importing
# Alembic on every call.
SCHEMA_HEAD = "0001"

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
)

clients = Table(
    "clients",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=True),
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


def utcnow() -> datetime:
    """Naive UTC, as every timestamp column holds."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class KeyConflict(Exception):
    """An idempotency key already names an item of another type or text."""

    def __init__(self, item_id: int) -> None:
        super().__init__(f"key already used by item {item_id} with another type or text")
        self.item_id = item_id


class ClientExists(Exception):
    """`add_client` for a name that is taken."""


def _item(row) -> Item:
    return Item(id=row.id, type=row.type, text=row.text, created_at=row.created_at)


# --- items -----------------------------------------------------------------------------


def add_item(
    conn: Connection, type_name: str, text: str, *, key: str | None = None, now: datetime | None = None
) -> tuple[int, bool]:
    """Store an item; returns (id, created). With `key`, a second post finds the first one."""
    if key is not None:
        row = conn.execute(select(items).where(items.c.key == key)).first()
        if row is not None:
            if row.type != type_name or row.text != text:
                raise KeyConflict(row.id)
            return row.id, False
    item_id = conn.execute(
        insert(items).values(type=type_name, text=text, created_at=now or utcnow(), key=key)
    ).inserted_primary_key[0]
    return item_id, True


def add_items(conn: Connection, rows: list[tuple[str, str]], *, now: datetime | None = None) -> list[int]:
    """Store (type, text) rows, in order; returns their ids. `notifctl add --batch`."""
    created_at = now or utcnow()
    return [
        conn.execute(insert(items).values(type=type_name, text=text, created_at=created_at)).inserted_primary_key[0]
        for type_name, text in rows
    ]


ITEMS_BATCH = 10_000


def items_after(conn: Connection, after: int, limit: int = ITEMS_BATCH) -> list[Item]:
    """Items with an id above `after`, oldest first: what the hub has not seen yet."""
    rows = conn.execute(select(items).where(items.c.id > after).order_by(items.c.id).limit(limit))
    return [_item(row) for row in rows]


def list_items(conn: Connection, type_name: str | None = None, limit: int = 20) -> list[Item]:
    """The newest items, newest first."""
    query = select(items).order_by(items.c.id.desc()).limit(limit)
    if type_name is not None:
        query = query.where(items.c.type == type_name)
    return [_item(row) for row in conn.execute(query)]


def max_item_id(conn: Connection) -> int:
    return conn.execute(select(func.coalesce(func.max(items.c.id), 0))).scalar_one()


def latest_items(conn: Connection) -> dict[str, Item]:
    """The newest item of each type."""
    newest = select(func.max(items.c.id)).group_by(items.c.type).scalar_subquery()
    rows = conn.execute(select(items).where(items.c.id.in_(newest)))
    return {row.type: _item(row) for row in rows}


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


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def add_client(conn: Connection, name: str, *, now: datetime | None = None) -> str:
    """Create a named client; returns its token, which is stored only hashed."""
    if conn.execute(select(clients.c.id).where(clients.c.name == name)).first() is not None:
        raise ClientExists(name)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    conn.execute(insert(clients).values(name=name, token_hash=_hash_token(token), created_at=now or utcnow()))
    return token


def remove_client(conn: Connection, name: str) -> bool:
    client_id = conn.execute(select(clients.c.id).where(clients.c.name == name)).scalar()
    if client_id is None:
        return False
    # Children first: SQLite enforces ON DELETE CASCADE only with foreign_keys on.
    conn.execute(delete(cursors).where(cursors.c.client_id == client_id))
    conn.execute(delete(presence).where(presence.c.client_id == client_id))
    conn.execute(delete(clients).where(clients.c.id == client_id))
    return True


def list_clients(conn: Connection) -> list[Client]:
    rows = conn.execute(select(clients).order_by(clients.c.name))
    return [Client(row.id, row.name, row.created_at, row.last_seen) for row in rows]


def identify(conn: Connection, name: str, token: str, *, now: datetime | None = None) -> tuple[int, dict[str, int]] | None:
    """Check a hello; returns (client id, cursors by type), or None for a wrong name or token."""
    row = conn.execute(select(clients.c.id, clients.c.token_hash).where(clients.c.name == name)).first()
    # Hash even for an unknown name, so that timing does not tell which names exist.
    offered = _hash_token(token)
    if row is None or not hmac.compare_digest(offered, row.token_hash):
        return None
    conn.execute(update(clients).where(clients.c.id == row.id).values(last_seen=now or utcnow()))
    return row.id, client_cursors(conn, row.id)


def client_cursors(conn: Connection, client_id: int) -> dict[str, int]:
    rows = conn.execute(select(cursors.c.type, cursors.c.last_read_id).where(cursors.c.client_id == client_id))
    return {row.type: row.last_read_id for row in rows}


def mark_read(conn: Connection, client_id: int, type_name: str, item_id: int) -> None:
    """Move a client's cursor forward to `item_id` (never back: two connections may race)."""
    moved = conn.execute(
        update(cursors)
        .where(cursors.c.client_id == client_id, cursors.c.type == type_name)
        .values(last_read_id=case((cursors.c.last_read_id < item_id, item_id), else_=cursors.c.last_read_id))
    ).rowcount
    if not moved:
        conn.execute(insert(cursors).values(client_id=client_id, type=type_name, last_read_id=item_id))


def unread_counts(
    conn: Connection, client_id: int, windows: Mapping[str, Window], now: datetime
) -> dict[str, int]:
    """A client's count of recent unread items for each type in `windows`."""
    read = client_cursors(conn, client_id)
    return {name: count_unread(conn, name, read.get(name, 0), window, now) for name, window in windows.items()}


# --- presence ----------------------------------------------------------------------------


def client_connected(conn: Connection, client_id: int, node: str, *, now: datetime | None = None) -> int:
    return conn.execute(
        insert(presence).values(client_id=client_id, node=node, since=now or utcnow())
    ).inserted_primary_key[0]


def client_disconnected(conn: Connection, presence_id: int, *, now: datetime | None = None) -> None:
    client_id = conn.execute(select(presence.c.client_id).where(presence.c.id == presence_id)).scalar()
    conn.execute(delete(presence).where(presence.c.id == presence_id))
    if client_id is not None:
        conn.execute(update(clients).where(clients.c.id == client_id).values(last_seen=now or utcnow()))


def clear_presence(conn: Connection, node: str) -> None:
    conn.execute(delete(presence).where(presence.c.node == node))


def connected_clients(conn: Connection) -> dict[int, int]:
    """Client id -> number of connections now, over every node."""
    rows = conn.execute(select(presence.c.client_id, func.count()).group_by(presence.c.client_id))
    return {client_id: count for client_id, count in rows}
