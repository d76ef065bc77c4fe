# `notifctl client ...` and `notifctl clients`: named clients and their read state.
from __future__ import annotations

import json

import click

from .common import HELP, checked_name, checked_types, iso, json_time, store_of, wake_daemons


@click.group(context_settings=HELP)
def client() -> None:
    """Manage named clients (their read state persists across connections)."""


@client.command("add", context_settings=HELP)
@click.argument("name")
@click.option("--types", metavar="TYPE[,TYPE]", help="Only these item types may be queried and notified [default: all].")
@click.pass_context
def client_add(ctx: click.Context, name: str, types: str | None) -> None:
    """Create a named client; prints its token last. The token is shown only once."""
    from .. import store

    checked_name("client", name)
    db = store_of(ctx)
    allowed = None if types is None else checked_types(db, types, "--types")
    try:
        token = db.call(store.add_client, name, types=allowed)
    except store.ClientExists:
        raise click.ClickException(f"client {name!r} already exists") from None
    click.echo(f"created client {name}; its token is shown once, keep it secret:")
    click.echo(token)


@client.command("rotate", context_settings=HELP)
@click.argument("name")
@click.pass_context
def client_rotate(ctx: click.Context, name: str) -> None:
    """Give a named client a new token, printed last; the old token stops working, its connections close."""
    from .. import store

    db = store_of(ctx)
    token = db.call(store.rotate_token, name)
    if token is None:
        raise click.ClickException(f"no client named {name!r}")
    wake_daemons(db.engine)  # the daemons close its connections opened with the old token
    click.echo(f"new token for client {name}; the old one no longer works and its connections are closed:")
    click.echo(token)


@client.command("list", context_settings=HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def client_list(ctx: click.Context, as_json: bool) -> None:
    """List named clients."""
    from .. import store

    found = store_of(ctx).call(store.list_clients)
    if as_json:
        rows = [
            {"name": c.name, "types": None if c.types is None else sorted(c.types), "created_at": json_time(c.created_at),
             "last_seen": json_time(c.last_seen)}
            for c in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for c in found:
        types = "all types" if c.types is None else ",".join(sorted(c.types))
        click.echo(f"{c.name}\t{types}\tcreated {iso(c.created_at)}\tlast seen {iso(c.last_seen)}")


@client.command("remove", context_settings=HELP)
@click.argument("name")
@click.pass_context
def client_remove(ctx: click.Context, name: str) -> None:
    """Delete a named client and its read state; its open connections close."""
    from .. import store

    db = store_of(ctx)
    if not db.call(store.remove_client, name):
        raise click.ClickException(f"no client named {name!r}")
    wake_daemons(db.engine)  # the daemons close its open connections
    click.echo(f"removed client {name}")


@click.command(context_settings=HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def clients(ctx: click.Context, as_json: bool) -> None:
    """Each named client's unread count per type it may read, last seen, and whether it is connected now."""
    from .. import store

    db = store_of(ctx)
    windows = {name: db.config.window(item_type) for name, item_type in db.types.items()}

    def gather(conn):
        now = store.utcnow()
        connected = store.connected_clients(conn)
        # Only the types a client may read: it is never notified of the others.
        return [
            (c, store.unread_counts(conn, c.id, readable(c), now), connected.get(c.id, 0))
            for c in store.list_clients(conn)
        ]

    def readable(c):
        return windows if c.types is None else {name: w for name, w in windows.items() if name in c.types}

    rows = db.call(gather)
    if as_json:
        out = [
            {"name": c.name, "unread": unread, "last_seen": json_time(c.last_seen), "connections": n}
            for c, unread, n in rows
        ]
        click.echo(json.dumps(out, indent=2))
        return
    for c, unread, n in rows:
        counts = " ".join(f"{name}={count}" for name, count in unread.items()) or "-"
        state = f"connected ({n})" if n else "not connected"
        click.echo(f"{c.name}\t{counts}\tlast seen {iso(c.last_seen)}\t{state}")

