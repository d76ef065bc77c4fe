# `notifctl db ...` and `notifctl prune`: database maintenance.
from __future__ import annotations

import json

import click

from .common import HELP, store_of


@click.group("db", context_settings=HELP)
def db_group() -> None:
    """Database maintenance."""


@db_group.command("upgrade", context_settings=HELP)
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Bring the schema up to date (notifd also does it when it starts)."""
    from ..db import make_engine, schema_version, transaction, upgrade

    url = store_of(ctx).url
    from ..db import sqlite_path

    path = sqlite_path(url)
    if path is not None and not path.exists():
        from ..db import open_engine

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


@db_group.command("backup", context_settings=HELP)
@click.argument("target", type=click.Path(dir_okay=False))
@click.pass_context
def db_backup(ctx: click.Context, target: str) -> None:
    """Copy the SQLite database to TARGET, consistently, even while notifd runs."""
    from pathlib import Path

    from ..db import backup_sqlite, sqlite_path

    db = store_of(ctx)
    source = sqlite_path(db.url)
    if source is None:
        raise click.ClickException("db backup works on SQLite; for PostgreSQL use pg_dump")
    if not source.exists():
        from ..db import missing

        raise click.ClickException(missing(source))
    target_path = Path(target)
    if target_path.exists():
        raise click.ClickException(f"{target} exists; remove it or choose another name")
    backup_sqlite(source, target_path)
    from sqlalchemy.engine import URL

    # Built, not formatted: a file name may hold '?' or '#', which a URL string would parse.
    counts = db.call_on(URL.create("sqlite", database=str(target_path.resolve())), _counts_and_version)
    click.echo(f"backed up {source} to {target}: schema {counts[1]}, {sum(counts[0].values())} items")


@db_group.command("restore", context_settings=HELP)
@click.argument("backup", type=click.Path(dir_okay=False))
@click.pass_context
def db_restore(ctx: click.Context, backup: str) -> None:
    """Put BACKUP in place of the SQLite database, with notifd stopped.

    New ids continue after the last ones the replaced database handed out, so that no new
    item takes the id of one lost with the restore. The file keeps the replaced one's owner
    and mode.
    """
    from pathlib import Path

    from .. import store
    from ..db import restore_sqlite, sqlite_path

    target = sqlite_path(store_of(ctx).url)
    if target is None:
        raise click.ClickException("db restore works on SQLite; for PostgreSQL use pg_restore")
    backup_path = Path(backup)
    if not backup_path.is_file():
        raise click.ClickException(f"no backup at {backup}")
    restored = restore_sqlite(backup_path, target, store.utcnow())
    if restored.unreadable is not None:
        click.echo(f"notifctl: warning: the database replaced could not be read ({restored.unreadable}): new ids "
                   f"continue after the backup's, so ids handed out since the backup may be given again", err=True)
    click.echo(f"restored {target} from {backup}: schema {restored.schema}, {restored.items} items; "
               f"new item ids start after {restored.ids_after}")


def _counts_and_version(conn):
    from .. import store
    from ..db import schema_version

    return store.item_counts(conn), schema_version(conn)


@db_group.command("copy", context_settings=HELP)
@click.option("--to", "target", required=True, metavar="PATH_OR_URL",
              help="The new database: a SQLite file or a URL such as postgresql://user@host/notifd.")
@click.pass_context
def db_copy(ctx: click.Context, target: str) -> None:
    """Copy items, named clients, read state and the outbox into another, empty, database.

    The move from SQLite to PostgreSQL (docs/scaling.md): stop notifd, copy, start notifd on
    the new database. The copy is one transaction: it is whole, or nothing is written.
    """
    from .. import store
    from ..db import database_url, open_engine, transaction

    db = store_of(ctx)
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


@db_group.command("check", context_settings=HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_check(ctx: click.Context, as_json: bool) -> None:
    """Check the database's integrity and schema version; exits 1 on any problem."""
    from .. import store
    from ..db import is_known_revision, make_engine, schema_version, sqlite_path, transaction

    db = store_of(ctx)
    path = sqlite_path(db.url)
    if path is not None and not path.exists():
        from ..db import missing

        raise click.ClickException(missing(path))
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
    if version is not None and version != store.SCHEMA_HEAD and not is_known_revision(version):
        # `db upgrade` refuses a newer schema: only a newer notifd reads it.
        problems.append(f"schema is at {version}, newer than this notifd, which expects {store.SCHEMA_HEAD} (upgrade notifd)")
    elif version != store.SCHEMA_HEAD:
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


@click.command(context_settings=HELP)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.pass_context
def prune(ctx: click.Context, dry_run: bool) -> None:
    """Remove items older than their retention window, in small batches."""
    from .. import retention, store

    db = store_of(ctx)
    rules = retention.rules(db.config)
    now = store.utcnow()
    if dry_run:
        counts = retention.expired(db.engine, rules, now)
    else:
        counts = retention.prune_now(db.engine, rules, now, db.config.prune_batch)
    verb = "would prune" if dry_run else "pruned"
    click.echo(f"{verb} " + (", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing"))


