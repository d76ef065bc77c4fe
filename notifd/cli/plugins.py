# `notifctl plugins`, `notifctl plugin new` and `notifctl outbox`: what the plugins add, a new
# plugin package, and deliveries to durable notifiers. As with `clients` / `client add`, the
# plural lists and the singular group acts.
from __future__ import annotations

import json
from typing import Any

import click

from .common import HELP, ITEM_ID, json_time, store_of, wake_daemons


@click.command(context_settings=HELP)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of {name, origin, item_types, notifiers}.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List the loaded plugins, where each came from, and the item types and notifiers it adds."""
    from dataclasses import replace

    from twisted.internet import reactor  # handed to register_notifiers, never run here

    from ..plugins import describe

    db = store_of(ctx)
    found = describe(db.plugin_manager, db.config.plugins, reactor)
    db.config.check_notifiers(n.name for info in found for n in info.notifiers)
    found = [replace(info, notifiers=[db.config.notifier(n) for n in info.notifiers]) for info in found]
    if as_json:
        rows = [
            {
                "name": info.name,
                "origin": info.origin,
                "item_types": info.item_types,
                "notifiers": [{"name": n.name, "durable": n.durable} for n in info.notifiers],
            }
            for info in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for info in found:
        adds = [f"type {name}" for name in info.item_types]
        adds += [f"notifier {n.name}{' (durable)' if n.durable else ''}" for n in info.notifiers]
        click.echo(f"{info.name}\t{info.origin}\t{', '.join(adds) or '-'}")


@click.group(context_settings=HELP)
def plugin() -> None:
    """Write a new plugin (`notifctl plugins` lists the loaded ones)."""


@plugin.command("new", context_settings=HELP)
@click.argument("name")
@click.option(
    "--type", "kind", flag_value="type", default=True, help="An item type NAME, validated and rendered [default]."
)
@click.option(
    "--notifier", "kind", flag_value="notifier", help="A durable notifier NAME, configured in [plugins.NAME]."
)
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False), default=".", show_default=True,
    help="Where to create the package's directory, notifd-NAME.",
)
def plugin_new(name: str, kind: str, directory: str) -> None:
    """Create a plugin package: pyproject.toml with its entry point, the module, a test, a README.

    It installs with pip and its tests pass as generated (they run a real notifd with the
    fixtures of notifd.testing).
    """
    import shlex
    import sys
    from pathlib import Path

    from ..scaffold import ScaffoldError, write

    try:
        target = write(Path(directory), name, kind)
    except ScaffoldError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"created {target}: {', '.join(sorted(p.name for p in target.iterdir()))}")
    # Into the environment this notifd runs in: a fresh venv would take `notifd` from PyPI,
    # where the name is another project's.
    python = shlex.quote(sys.executable)
    click.echo(f"next: cd {shlex.quote(str(target))} && {python} -m pip install -e '.[test]' && {python} -m pytest")


@click.group(invoke_without_command=True, context_settings=HELP)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the deliveries.")
@click.pass_context
def outbox(ctx: click.Context, as_json: bool) -> None:
    """Show the deliveries to durable notifiers still pending, the dead ones, and the items not queued yet.

    An item committed while no daemon runs is in no outbox yet: it is shown as `new`, and
    queued when notifd starts.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .. import posting, store

    now = store.utcnow()
    deliveries, new, nodes = store_of(ctx).call(
        lambda conn: (store.list_outbox(conn), store.not_queued(conn), store.list_nodes(conn))
    )
    rows = [_delivery_json(d, now) for d in deliveries] + [_new_json(notifier, item) for notifier, item in new]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    running = posting.running_daemons([(n.node, n.types, n.heartbeat_at, n.stopped_at) for n in nodes], now)
    when = "being queued" if running else "queued when notifd starts"
    for row in rows:
        if row["state"] == "new":
            click.echo(f"-\tnew\t{row['notifier']}\titem {row['item_id']} ({row['type']})\tnot queued yet: {when}")
            continue
        click.echo(
            f"{row['id']}\t{row['state']}\t{row['notifier']}\titem {row['item_id']} ({row['type']})"
            f"\tattempts {row['attempts']}\tnext {row['next_attempt_at'] or '-'}\t{row['last_error'] or '-'}"
        )
    if not rows:
        click.echo("the outbox is empty: nothing waits for a durable notifier")


def _new_json(notifier: str, item) -> dict[str, Any]:
    return {
        "id": None, "state": "new", "notifier": notifier, "item_id": item.id, "type": item.type, "attempts": 0,
        "next_attempt_at": None, "last_error": None, "created_at": None,
    }


def _delivery_json(delivery, now) -> dict[str, Any]:
    state = delivery.state
    if delivery.claimed_by is not None and delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        state = "delivering"
    return {
        "id": delivery.id,
        "state": state,
        "notifier": delivery.notifier,
        "item_id": delivery.item.id,
        "type": delivery.item.type,
        "attempts": delivery.attempts,
        "next_attempt_at": json_time(delivery.next_attempt_at),
        "last_error": delivery.last_error,
        "created_at": json_time(delivery.created_at),
    }


@outbox.command("retry", context_settings=HELP)
@click.argument("delivery_id", metavar="ID", type=ITEM_ID)
@click.pass_context
def outbox_retry(ctx: click.Context, delivery_id: int) -> None:
    """Re-queue delivery ID (dead, or waiting for its back-off) to be tried now."""
    from .. import store

    db = store_of(ctx)
    outcome, node = db.call(store.retry_delivery, delivery_id)
    if outcome == "unknown":
        raise click.ClickException(f"no outbox entry {delivery_id}")
    if outcome == "in flight":
        raise click.ClickException(f"delivery {delivery_id} is being delivered now (by {node}): retry it if "
                                   "this attempt fails")
    click.echo(f"re-queued delivery {delivery_id}")
    wake_daemons(db.engine)


