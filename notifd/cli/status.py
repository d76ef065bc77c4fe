# `notifctl status`: which daemons run on this database.
from __future__ import annotations

import json

import click

from .common import HELP, json_time, store_of


@click.command(context_settings=HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Is notifd up: each daemon's version, uptime and counts; exits 3 when none is running."""
    from .. import store
    from ..posting import HEARTBEAT_SECONDS

    db = store_of(ctx)
    now = store.utcnow()
    nodes, counts = db.call(lambda conn: (store.list_nodes(conn), store.item_counts(conn)))
    rows = []
    for node in nodes:
        up = node.stopped_at is None and (now - node.heartbeat_at).total_seconds() < 3 * HEARTBEAT_SECONDS
        rows.append({
            "node": node.node, "up": up, "version": node.version, "pid": node.pid, "listen": node.listen,
            "started_at": json_time(node.started_at), "uptime_seconds": int((now - node.started_at).total_seconds()) if up else None,
            "last_seen": json_time(node.heartbeat_at), "connections": node.connections, "notif_mode": node.subscribers,
            "types": None if node.types is None else [t for t in node.types.split(",") if t],
        })
    running = [row for row in rows if row["up"]]
    if as_json:
        click.echo(json.dumps({"running": bool(running), "nodes": rows, "items": counts}, indent=2))
    else:
        for row in rows:
            if row["up"]:
                click.echo(f"{row['node']}: up {_duration(row['uptime_seconds'])}, notifd {row['version']}, pid {row['pid']}, "
                           f"{row['listen']}, {row['connections']} connections ({row['notif_mode']} in notification mode)")
            else:
                click.echo(f"{row['node']}: not running (last seen {row['last_seen']})")
        if not rows:
            click.echo("notifd has never run on this database")
        click.echo("items: " + (", ".join(f"{name}={n}" for name, n in counts.items()) or "none"))
    if not running:
        ctx.exit(3)


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02}:{minutes:02}:{seconds:02}"


