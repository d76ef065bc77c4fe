# The two programs, `notifd` and `notifctl`: argv in, stdout and exit codes out. Commands
# stay thin: they parse, call the store or the service, and print. This is the only
# module that prints.
#
# Rules: an error is one line on stderr and a non-zero exit (`main` below turns every
# known failure into that); notifctl imports only what its command needs, so that
# `notifctl add` starts fast (no Twisted, no Alembic unless the schema must change).
from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import __version__
from . import config as configmod

_HELP = {"help_option_names": ["-h", "--help"]}


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Eager --config: read the file first, so that it can supply the other options' defaults."""
    settings = configmod.read_file(value) if value else {}
    ctx.meta["notifd.config_path"] = value
    ctx.meta["notifd.settings"] = settings
    ctx.default_map = {**(ctx.default_map or {}), **configmod.file_defaults(settings)}


def _option(key: str, value: Any) -> Any:
    """A command-line value checked by the config file's own parser for `key`."""
    if value is None:
        return None
    try:
        return configmod.KEYS[key][1](f"--{key}", value)
    except configmod.ConfigError as e:
        raise click.BadParameter(str(e).removeprefix(f"--{key}: ")) from None


def _default_config() -> str | None:
    # The system-wide file, when there is one: notifd under systemd and an admin's
    # notifctl then agree on the database without being told.
    return str(configmod.SYSTEM_CONFIG) if configmod.SYSTEM_CONFIG.exists() else None


_config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="NOTIFD_CONFIG",
    default=_default_config,
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help=f"TOML configuration file [env NOTIFD_CONFIG] [default: {configmod.SYSTEM_CONFIG} if it exists].",
)
_db_option = click.option(
    "--db", envvar="NOTIFD_DB", metavar="PATH_OR_URL", help="SQLite file or SQLAlchemy URL [env NOTIFD_DB]."
)
# notifd and notifctl load the same plugins, so `notifctl add` validates with the plugin's code.
_plugins_dir_option = click.option(
    "--plugins-dir",
    "plugins_dir",
    multiple=True,
    type=click.Path(file_okay=False),
    envvar="NOTIFD_PLUGINS_DIR",
    metavar="DIR",
    help="Load every *.py file of DIR as a plugin; repeatable [env NOTIFD_PLUGINS_DIR, colon-separated].",
)


# --- notifd --------------------------------------------------------------------------------


@click.command(context_settings=_HELP)
@_config_option
@_db_option
@_plugins_dir_option
@click.option(
    "--listen",
    multiple=True,
    envvar="NOTIFD_LISTEN",
    metavar="ENDPOINT",
    help="Twisted endpoint to serve on; repeatable [env NOTIFD_LISTEN, space-separated] "
    f"[default: {configmod.DEFAULT_LISTEN[0]}].",
)
@click.option("--metrics", envvar="NOTIFD_METRICS", metavar="ENDPOINT", help="Serve /metrics and /healthz here [env NOTIFD_METRICS].")
@click.option(
    "--node", envvar="NOTIFD_NODE", callback=lambda ctx, param, value: _option("node", value),
    help="This daemon's name in notifctl status, distinct per daemon on one database [env NOTIFD_NODE] [default: the host name].",
)
@click.option(
    "--workers", envvar="NOTIFD_WORKERS", type=click.IntRange(min=1),
    help="Serve the same ports from N processes (SO_REUSEPORT) [env NOTIFD_WORKERS] [default: 1].",
)
@click.option("--log-format", type=click.Choice(configmod.LOG_FORMATS), envvar="NOTIFD_LOG_FORMAT", help="[env NOTIFD_LOG_FORMAT] [default: text]")
@click.option("--log-level", type=click.Choice(configmod.LOG_LEVELS), envvar="NOTIFD_LOG_LEVEL", help="[env NOTIFD_LOG_LEVEL] [default: info]")
@click.option("--check-config", is_flag=True, help="Check the configuration, print it (secrets masked) and exit.")
@click.version_option(__version__, prog_name="notifd")
@click.pass_context
def notifd(ctx: click.Context, check_config: bool, **options: Any) -> None:
    """Serve the notifd line protocol."""
    from . import service

    config = configmod.build(ctx.meta["notifd.settings"], **configmod.fields_of(options))
    if check_config:
        click.echo(service.check(config), nl=False)
        return

    def reread() -> configmod.Config:
        # SIGHUP: the file again, under the flags and environment variables given at start.
        from click.core import ParameterSource

        path = ctx.meta["notifd.config_path"]
        settings = configmod.read_file(path) if path else {}
        kept = {
            name: value
            for name, value in options.items()
            if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        }
        return configmod.build(settings, **configmod.fields_of(kept))

    sys.exit(service.run(config, reread))


# --- notifctl ------------------------------------------------------------------------------


@click.group(context_settings=_HELP)
@_config_option
@_db_option
@_plugins_dir_option
@click.version_option(__version__, prog_name="notifctl")
@click.pass_context
def notifctl(ctx: click.Context, db: str | None, plugins_dir: tuple[str, ...]) -> None:
    """Administer notifd: post items, manage named clients, look at the database."""
    ctx.obj = configmod.build(ctx.meta["notifd.settings"], db=db, plugins_dirs=plugins_dir)


class _Store:
    """The database and item types, opened lazily: each command pays only for what it uses."""

    def __init__(self, config: configmod.Config) -> None:
        self.config = config
        self._engine = None
        self._plugin_manager = None
        self._types = None

    @property
    def url(self):
        from .db import database_url

        return database_url(self.config.db)

    @property
    def engine(self):
        if self._engine is None:
            from .db import open_engine

            self._engine = open_engine(self.url)
        return self._engine

    @property
    def plugin_manager(self):
        if self._plugin_manager is None:
            from .plugins import get_plugin_manager

            self._plugin_manager = get_plugin_manager(dirs=self.config.plugins_dirs)
            self.config.check_plugins(self._plugin_manager.origins)
        return self._plugin_manager

    @property
    def types(self):
        if self._types is None:
            from .plugins import item_types

            self._types = item_types(self.plugin_manager, self.config.plugins)
            self.config.check_types(self._types)
        return self._types

    def call(self, f, *args, **kwargs):
        """Run a store function in one transaction."""
        from .db import Database

        return Database(self.engine).call(f, *args, **kwargs)

    @staticmethod
    def call_on(url: str, f):
        """Run `f(conn)` on another database, read-only in spirit (a backup being checked)."""
        from sqlalchemy import create_engine

        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return f(conn)
        finally:
            engine.dispose()


def _store(ctx: click.Context) -> _Store:
    return _Store(ctx.find_root().obj)


def _read_stdin_text(limit: int) -> str | None:
    """The text on stdin without its final newline; None when it is over `limit` bytes."""
    # Read no more than enough to see that it is too long: a huge stdin costs nothing.
    data = sys.stdin.buffer.read(limit + 3)
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    if len(data) > limit:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException("text is not valid UTF-8") from None


@notifctl.command(context_settings=_HELP)
@click.argument("type_name", metavar="TYPE", required=False)
@click.argument("text", required=False)
@click.option("--id", "key", metavar="KEY", help="Idempotency key: posting the same key again stores nothing new.")
@click.option(
    "--batch", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
    help="Post every line of FILE (- for stdin) in one transaction: 'TYPE TEXT' per line, or TEXT alone after TYPE.",
)
@click.pass_context
def add(ctx: click.Context, type_name: str | None, text: str | None, key: str | None, batch: str | None) -> None:
    """Post an item; prints its id. TEXT defaults to stdin (a fresh value for `random`).

    With --batch, every line is checked before anything is stored, and the ids are
    printed one per line.
    """
    # Imports stay inside: `notifctl add` pays only for what it uses (issue 6).
    db = _store(ctx)
    max_line = db.config.max_line_length
    if batch is not None:
        if text is not None or key is not None:
            raise click.UsageError("--batch takes no TEXT and no --id", ctx)
        rows = _read_batch(batch, type_name, db.types, max_line)
    else:
        if type_name is None:
            raise click.UsageError("Missing argument 'TYPE'.", ctx)
        item_type = _item_type(db.types, type_name)
        if text is None and not sys.stdin.isatty():
            text = _read_stdin_text(max_line)
            if text is None:
                raise click.ClickException(f"invalid {type_name}: text is over the line limit of {max_line} bytes")
        if not text and item_type.fresh is not None:
            text = item_type.fresh()
        if key is not None and not key.strip():
            raise click.ClickException("--id must not be empty")
        if key is not None:
            from .store import KEY_MAX  # --id goes through store.py anyway

            if len(key) > KEY_MAX:
                raise click.ClickException(f"--id is {len(key)} characters, over the limit of {KEY_MAX}")
        rows = [(type_name, _checked(item_type, text, max_line))]
    ids, created = _post(db, rows, key)
    click.echo("\n".join(map(str, ids)))
    if created:
        path = _sqlite_file(db)
        if path is not None:  # without SQLAlchemy, as the post itself
            from .wakeup import send_datagrams

            send_datagrams(path)
        else:
            from .wakeup import send_wakeup

            send_wakeup(db.engine)


def _item_type(types, type_name: str, where: str = ""):
    item_type = types.get(type_name)
    if item_type is None:
        raise click.ClickException(f"{where}unknown item type {type_name!r} (known: {', '.join(types)})")
    return item_type


def _checked(item_type, text: str | None, max_line: int, where: str = "") -> str:
    """The text as the type stores it, or one line naming the problem."""
    from .items import InvalidItem, check_line

    try:
        text = check_line(text or "", max_line)
        return check_line(item_type.validate(text), max_line)
    except InvalidItem as e:
        raise click.ClickException(f"{where}invalid {item_type.name}: {e}") from None
    except Exception as e:
        raise click.ClickException(
            f"{where}the {item_type.name} plugin failed to validate the text: {type(e).__name__}: {e}"
        ) from None


def _read_batch(source: str, type_name: str | None, types, max_line: int) -> list[tuple[str, str]]:
    """Every line of a batch, checked: (type, text) rows, or one error naming the first bad line."""
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            raise click.ClickException(f"cannot read {source}: {e.strerror}") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final line ending
    if not lines:
        raise click.ClickException("the batch is empty")
    fixed = _item_type(types, type_name) if type_name is not None else None
    rows = []
    for number, raw in enumerate(lines, 1):
        where = f"line {number}: "
        try:
            line = raw.removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            raise click.ClickException(f"{where}text is not valid UTF-8") from None
        if fixed is not None:
            item_type, text = fixed, line
        else:
            name, _, text = line.partition(" ")
            if not name:
                raise click.ClickException(f"{where}expected 'TYPE TEXT'")
            item_type = _item_type(types, name, where)
        if not text and item_type.fresh is not None:
            text = item_type.fresh()
        rows.append((item_type.name, _checked(item_type, text, max_line, where)))
    return rows


def _sqlite_file(db: _Store):
    from .posting import sqlite_file

    return sqlite_file(db.config.db)


def _post(db: _Store, rows: list[tuple[str, str]], key: str | None) -> tuple[list[int], bool]:
    """Store the rows in one transaction; returns (ids, whether anything new was stored)."""
    if key is None and (path := _sqlite_file(db)) is not None:
        from datetime import datetime, timezone

        from .posting import insert_items

        try:
            ids = insert_items(path, rows, datetime.now(timezone.utc).replace(tzinfo=None))
        except sqlite3_error() as e:
            raise click.ClickException(f"database error: {e}") from None
        if ids is not None:
            return ids, True
    from . import store  # SQLAlchemy: another engine, a database to create or upgrade, --id

    if key is not None:
        try:
            item_id, created = db.call(store.add_item, rows[0][0], rows[0][1], key=key)
        except store.KeyConflict as e:
            raise click.ClickException(f"--id {key}: {e}") from None
        return [item_id], created
    return db.call(store.add_items, rows), True


def sqlite3_error() -> type:
    import sqlite3

    return sqlite3.Error


@notifctl.command("list", context_settings=_HELP)
@click.option("--type", "type_name", metavar="TYPE", help="Only items of this type.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of {id, type, text, created_at}.")
@click.pass_context
def list_(ctx: click.Context, type_name: str | None, limit: int, as_json: bool) -> None:
    """List the newest items."""
    from . import store

    found = _store(ctx).call(store.list_items, type_name, limit)
    if as_json:
        click.echo(json.dumps([_item_json(item) for item in found], ensure_ascii=False, indent=2))
        return
    for item in found:
        click.echo(f"{item.id}\t{_iso(item.created_at)}\t{item.type}\t{item.text}")


def _iso(when) -> str:
    return when.isoformat(timespec="seconds") + "Z" if when is not None else "-"


def _item_json(item) -> dict[str, Any]:
    return {"id": item.id, "type": item.type, "text": item.text, "created_at": _iso(item.created_at)}


# --- named clients ------------------------------------------------------------------------------

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


@notifctl.group(context_settings=_HELP)
def client() -> None:
    """Manage named clients (their read state persists across connections)."""


@client.command("add", context_settings=_HELP)
@click.argument("name")
@click.pass_context
def client_add(ctx: click.Context, name: str) -> None:
    """Create a named client; prints its token last. The token is shown only once."""
    import re

    from . import store

    if not re.fullmatch(_NAME, name):
        raise click.ClickException(f"client name must match {_NAME}")
    try:
        token = _store(ctx).call(store.add_client, name)
    except store.ClientExists:
        raise click.ClickException(f"client {name!r} already exists") from None
    click.echo(f"created client {name}; its token is shown once, keep it secret:")
    click.echo(token)


@client.command("rotate", context_settings=_HELP)
@click.argument("name")
@click.pass_context
def client_rotate(ctx: click.Context, name: str) -> None:
    """Give a named client a new token, printed last; the old token stops working."""
    from . import store

    token = _store(ctx).call(store.rotate_token, name)
    if token is None:
        raise click.ClickException(f"no client named {name!r}")
    click.echo(f"new token for client {name}; the old one no longer works (connections already open stay):")
    click.echo(token)


@client.command("list", context_settings=_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def client_list(ctx: click.Context, as_json: bool) -> None:
    """List named clients."""
    from . import store

    found = _store(ctx).call(store.list_clients)
    if as_json:
        rows = [{"name": c.name, "created_at": _iso(c.created_at), "last_seen": _iso(c.last_seen)} for c in found]
        click.echo(json.dumps(rows, indent=2))
        return
    for c in found:
        click.echo(f"{c.name}\tcreated {_iso(c.created_at)}\tlast seen {_iso(c.last_seen)}")


@client.command("remove", context_settings=_HELP)
@click.argument("name")
@click.pass_context
def client_remove(ctx: click.Context, name: str) -> None:
    """Delete a named client and its read state."""
    from . import store

    if not _store(ctx).call(store.remove_client, name):
        raise click.ClickException(f"no client named {name!r}")
    click.echo(f"removed client {name}")


@notifctl.command(context_settings=_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def clients(ctx: click.Context, as_json: bool) -> None:
    """Each named client's unread count per type, last seen, and whether it is connected now."""
    from . import store

    db = _store(ctx)
    windows = {name: db.config.window(item_type) for name, item_type in db.types.items()}

    def gather(conn):
        now = store.utcnow()
        connected = store.connected_clients(conn)
        return [
            (c, store.unread_counts(conn, c.id, windows, now), connected.get(c.id, 0))
            for c in store.list_clients(conn)
        ]

    rows = db.call(gather)
    if as_json:
        out = [
            {"name": c.name, "unread": unread, "last_seen": _iso(c.last_seen), "connections": n}
            for c, unread, n in rows
        ]
        click.echo(json.dumps(out, indent=2))
        return
    for c, unread, n in rows:
        counts = " ".join(f"{name}={count}" for name, count in unread.items())
        state = f"connected ({n})" if n else "not connected"
        click.echo(f"{c.name}\t{counts}\tlast seen {_iso(c.last_seen)}\t{state}")


# --- plugins and the outbox (issue 3) ----------------------------------------------------------------


@notifctl.command(context_settings=_HELP)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of {name, origin, item_types, notifiers}.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List the loaded plugins, where each came from, and the item types and notifiers it adds."""
    from twisted.internet import reactor  # handed to register_notifiers, never run here

    from dataclasses import replace

    from .plugins import describe

    db = _store(ctx)
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


@notifctl.group(invoke_without_command=True, context_settings=_HELP)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the deliveries.")
@click.pass_context
def outbox(ctx: click.Context, as_json: bool) -> None:
    """Show the deliveries to durable notifiers still pending, and the dead ones."""
    if ctx.invoked_subcommand is not None:
        return
    from . import store

    now = store.utcnow()
    rows = [_delivery_json(d, now) for d in _store(ctx).call(store.list_outbox)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['id']}\t{row['state']}\t{row['notifier']}\titem {row['item_id']} ({row['type']})"
            f"\tattempts {row['attempts']}\tnext {row['next_attempt_at']}\t{row['last_error'] or '-'}"
        )


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
        "next_attempt_at": _iso(delivery.next_attempt_at),
        "last_error": delivery.last_error,
        "created_at": _iso(delivery.created_at),
    }


@outbox.command("retry", context_settings=_HELP)
@click.argument("delivery_id", metavar="ID", type=int)
@click.pass_context
def outbox_retry(ctx: click.Context, delivery_id: int) -> None:
    """Re-queue delivery ID (dead, or waiting for its back-off) to be tried now."""
    from . import store
    from .wakeup import send_wakeup

    db = _store(ctx)
    if not db.call(store.retry_delivery, delivery_id):
        raise click.ClickException(f"no outbox entry {delivery_id}")
    click.echo(f"re-queued delivery {delivery_id}")
    send_wakeup(db.engine)


# --- the database ---------------------------------------------------------------------------------


@notifctl.group("db", context_settings=_HELP)
def db_group() -> None:
    """Database maintenance."""


@db_group.command("upgrade", context_settings=_HELP)
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Bring the schema up to date (notifd also does it when it starts)."""
    from .db import make_engine, schema_version, transaction, upgrade

    url = _store(ctx).url
    from .db import sqlite_path

    path = sqlite_path(url)
    if path is not None and not path.exists():
        from .db import open_engine

        open_engine(url).dispose()
        click.echo("created the database at the current schema")
        return
    engine = make_engine(url)
    try:
        with transaction(engine) as conn:
            before = schema_version(conn)
        applied = upgrade(engine, before)
    finally:
        engine.dispose()
    click.echo(f"applied {', '.join(applied)}" if applied else "the schema is up to date")


@db_group.command("backup", context_settings=_HELP)
@click.argument("target", type=click.Path(dir_okay=False))
@click.pass_context
def db_backup(ctx: click.Context, target: str) -> None:
    """Copy the SQLite database to TARGET, consistently, even while notifd runs."""
    import os
    from pathlib import Path

    from .db import backup_sqlite, sqlite_path

    db = _store(ctx)
    source = sqlite_path(db.url)
    if source is None:
        raise click.ClickException("db backup works on SQLite; for PostgreSQL use pg_dump")
    if not source.exists():
        raise click.ClickException(f"no database at {source}")
    target_path = Path(target)
    if target_path.exists():
        raise click.ClickException(f"{target} exists; remove it or choose another name")
    partial = target_path.with_name(f".{target_path.name}.partial-{os.getpid()}")
    try:
        backup_sqlite(source, partial)
        os.replace(partial, target_path)  # a reader of TARGET never sees half a backup
    finally:
        partial.unlink(missing_ok=True)
    counts = db.call_on(f"sqlite:///{target_path.resolve()}", _counts_and_version)
    click.echo(f"backed up {source} to {target}: schema {counts[1]}, {sum(counts[0].values())} items")


def _counts_and_version(conn):
    from . import store
    from .db import schema_version

    return store.item_counts(conn), schema_version(conn)


@db_group.command("copy", context_settings=_HELP)
@click.option("--to", "target", required=True, metavar="PATH_OR_URL",
              help="The new database: a SQLite file or a URL such as postgresql://user@host/notifd.")
@click.pass_context
def db_copy(ctx: click.Context, target: str) -> None:
    """Copy items, named clients, read state and the outbox into another, empty, database.

    The move from SQLite to PostgreSQL (docs/scaling.md): stop notifd, copy, start notifd on
    the new database. The copy is one transaction: it is whole, or nothing is written.
    """
    from . import store
    from .db import database_url, open_engine, transaction

    db = _store(ctx)
    to_url = database_url(target)
    if to_url == db.url:
        raise click.ClickException("--to names the database being copied")
    source = db.engine
    destination = open_engine(to_url)
    try:
        with transaction(source) as source_conn, transaction(destination, write=True) as conn:
            held = {name: n for name, n in store.stored_rows(conn).items() if n}
            if held:
                raise click.ClickException(
                    f"{to_url.render_as_string(hide_password=True)} already holds data "
                    f"({', '.join(f'{n} {name}' for name, n in held.items())}); copy into an empty database"
                )
            copied = store.copy_from(conn, source_conn)
    finally:
        destination.dispose()
    click.echo(f"copied {', '.join(f'{n} {name}' for name, n in copied.items())} "
               f"to {to_url.render_as_string(hide_password=True)}")


@db_group.command("check", context_settings=_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_check(ctx: click.Context, as_json: bool) -> None:
    """Check the database's integrity and schema version; exits 1 on any problem."""
    from . import store
    from .db import make_engine, schema_version, sqlite_path, transaction

    db = _store(ctx)
    path = sqlite_path(db.url)
    if path is not None and not path.exists():
        raise click.ClickException(f"no database at {path}")
    engine = make_engine(db.url)
    problems: list[str] = []
    try:
        with transaction(engine) as conn:  # a read: the daemon's writes go on meanwhile
            version = schema_version(conn)
            integrity = "ok"
            if engine.dialect.name == "sqlite":
                rows = [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check")]
                integrity = "ok" if rows == ["ok"] else "; ".join(rows[:5])
            counts = store.item_counts(conn) if version is not None else {}
    finally:
        engine.dispose()
    if integrity != "ok":
        problems.append(f"integrity: {integrity}")
    if version != store.SCHEMA_HEAD:
        problems.append(f"schema is at {version or 'nothing'}, this notifd expects {store.SCHEMA_HEAD} (notifctl db upgrade)")
    report = {"database": db.url.render_as_string(hide_password=True), "schema": version,
              "expected_schema": store.SCHEMA_HEAD, "integrity": integrity, "items": counts, "problems": problems}
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"database {report['database']}: schema {version} (expected {store.SCHEMA_HEAD}), integrity {integrity}")
        click.echo("items: " + (", ".join(f"{name}={n}" for name, n in counts.items()) or "none"))
    if problems:
        raise click.ClickException("; ".join(problems))


@notifctl.command(context_settings=_HELP)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.pass_context
def prune(ctx: click.Context, dry_run: bool) -> None:
    """Remove items older than their retention window, in small batches."""
    from . import retention, store

    db = _store(ctx)
    rules = retention.rules(db.config)
    now = store.utcnow()
    if dry_run:
        counts = retention.expired(db.engine, rules, now)
    else:
        counts = retention.prune_now(db.engine, rules, now, db.config.prune_batch)
    verb = "would prune" if dry_run else "pruned"
    click.echo(f"{verb} " + (", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing"))


@notifctl.command(context_settings=_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Is notifd up: each daemon's version, uptime and counts; exits 3 when none is running."""
    from . import store
    from .service import HEARTBEAT_SECONDS

    db = _store(ctx)
    now = store.utcnow()
    nodes, counts = db.call(lambda conn: (store.list_nodes(conn), store.item_counts(conn)))
    rows = []
    for node in nodes:
        up = node.stopped_at is None and (now - node.heartbeat_at).total_seconds() < 3 * HEARTBEAT_SECONDS
        rows.append({
            "node": node.node, "up": up, "version": node.version, "pid": node.pid, "listen": node.listen,
            "started_at": _iso(node.started_at), "uptime_seconds": int((now - node.started_at).total_seconds()) if up else None,
            "last_seen": _iso(node.heartbeat_at), "connections": node.connections, "notif_mode": node.subscribers,
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


# --- watching -------------------------------------------------------------------------------------


@notifctl.command(context_settings=_HELP)
@click.option(
    "--connect", "endpoints", multiple=True, default=["tcp:127.0.0.1:8789"], show_default=True,
    envvar="NOTIFD_CONNECT",
    help="Twisted client endpoint of a daemon; repeatable: the next one is tried when a connection "
    "fails or is lost [env NOTIFD_CONNECT, space-separated].",
)
@click.option("--name", help="Say hello as this named client.")
@click.option("--token", envvar="NOTIFD_TOKEN", help="The named client's token [env NOTIFD_TOKEN].")
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only these item types; repeatable.")
def watch(endpoints: tuple[str, ...], name: str | None, token: str | None, types: tuple[str, ...]) -> None:
    """Print new items as they come: the tutorial's client loop, failing over between daemons."""
    if name and not token:
        raise click.ClickException("--name needs --token (or NOTIFD_TOKEN)")
    from .watch import run_watch

    sys.exit(run_watch(endpoints, name, token, types, click.echo))


# --- entry points: every known failure becomes one line on stderr ---------------------------------


def _loaded_error(module: str, name: str) -> type:
    # Only a module that was imported can have raised its errors: importing SQLAlchemy
    # just to name its exception would cost `notifctl add` 150 ms (issue 6).
    found = sys.modules.get(module)
    return getattr(found, name) if found is not None else _NeverRaised


class _NeverRaised(Exception):
    pass


def _run(command: click.Command, prog: str) -> None:
    try:
        code = command.main(prog_name=prog, standalone_mode=False)
        if isinstance(code, int):  # ctx.exit(n) in a command
            sys.exit(code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        click.echo(f"{prog}: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except Exception as e:
        message = _known_failure(e)
        if message is None:
            raise
        click.echo(f"{prog}: {message}", err=True)
        sys.exit(1)


def _known_failure(error: Exception) -> str | None:
    """The one line for a failure we expect, or None for a bug."""
    known = (configmod.ConfigError, _loaded_error("notifd.db", "UnusableDatabase"), _loaded_error("notifd.plugins", "PluginError"))
    if isinstance(error, known):
        return str(error)
    if isinstance(error, _loaded_error("sqlalchemy.exc", "SQLAlchemyError")):
        return f"database error: {_first_line(error)}"
    if isinstance(error, OSError):
        return str(error)
    return None


def _first_line(error: Exception) -> str:
    original = getattr(error, "orig", None) or error
    return str(original).splitlines()[0] if str(original) else type(original).__name__


def notifd_main() -> None:
    _run(notifd, "notifd")


def notifctl_main() -> None:
    _run(notifctl, "notifctl")
