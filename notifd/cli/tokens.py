# `notifctl token ...`: publisher tokens, with which programs post over HTTP.
from __future__ import annotations

import json

import click

from .common import HELP, checked_name, checked_types, iso, json_time, store_of


@click.group(context_settings=HELP)
def token() -> None:
    """Manage publisher tokens: who may post over HTTP, and which item types."""


@token.command("add", context_settings=HELP)
@click.argument("name")
@click.option("--publish", "types", metavar="TYPE[,TYPE]", required=True, help="The item types this token may post.")
@click.pass_context
def token_add(ctx: click.Context, name: str, types: str) -> None:
    """Create a publisher token; prints it last. The token is shown only once."""
    from .. import store

    checked_name("token", name)
    db = store_of(ctx)
    allowed = checked_types(db, types, "--publish")
    try:
        secret = db.call(store.add_publisher, name, allowed)
    except store.PublisherExists:
        raise click.ClickException(f"token {name!r} already exists") from None
    click.echo(f"created token {name} for {','.join(sorted(set(allowed)))}; it is shown once, keep it secret:")
    click.echo(secret)


@token.command("list", context_settings=HELP)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of {name, types, created_at, last_used}.")
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """List publisher tokens (never the tokens themselves: only their hashes are stored)."""
    from .. import store

    found = store_of(ctx).call(store.list_publishers)
    if as_json:
        rows = [{"name": p.name, "types": sorted(p.types), "created_at": json_time(p.created_at), "last_used": json_time(p.last_used)}
                for p in found]
        click.echo(json.dumps(rows, indent=2))
        return
    for p in found:
        click.echo(f"{p.name}\t{','.join(sorted(p.types))}\tcreated {iso(p.created_at)}\tlast used {iso(p.last_used)}")


@token.command("rotate", context_settings=HELP)
@click.argument("name")
@click.pass_context
def token_rotate(ctx: click.Context, name: str) -> None:
    """Give a publisher a new token, printed last; the old one stops working at once."""
    from .. import store

    secret = store_of(ctx).call(store.rotate_publisher, name)
    if secret is None:
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"new token for {name}; the old one no longer works:")
    click.echo(secret)


@token.command("remove", context_settings=HELP)
@click.argument("name")
@click.pass_context
def token_remove(ctx: click.Context, name: str) -> None:
    """Delete a publisher token; posts with it are refused at once."""
    from .. import store

    if not store_of(ctx).call(store.remove_publisher, name):
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"removed token {name}")
