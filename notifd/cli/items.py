# `notifctl add` and `notifctl list`: posting items and looking at them.
from __future__ import annotations

import json
import sys

import click

from .common import COUNT, HELP, ITEM_ID, Store, iso, item_json, store_of, wake_daemons

# Items in one --batch: storing 100,000 takes about 1.5 s here, during which other posters
# (HTTP included) wait for the write lock; a 4.5-million-line batch held it 40 s.
BATCH_MAX = 100_000


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


@click.command(context_settings=HELP)
@click.argument("type_name", metavar="TYPE", required=False)
@click.argument("text", required=False)
@click.option("--id", "key", metavar="KEY", help="Idempotency key: posting the same key again stores nothing new.")
@click.option(
    "--batch", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
    help="Post every line of FILE (- for stdin) in one transaction: 'TYPE TEXT' per line, or TEXT alone after TYPE; "
         f"at most {BATCH_MAX:,} lines.",
)
@click.pass_context
def add(ctx: click.Context, type_name: str | None, text: str | None, key: str | None, batch: str | None) -> None:
    """Post an item; prints its id once it is on disk. TEXT defaults to stdin (a fresh value for `random`).

    With --batch, every line is checked before anything is stored, and the ids are
    printed one per line.
    """
    from ..posting import Post, key_problem  # no SQLAlchemy: `notifctl add` stays fast

    db = store_of(ctx)
    max_line = db.config.max_line_length
    if batch is not None:
        if text is not None or key is not None:
            raise click.UsageError("--batch takes no TEXT and no --id", ctx)
        posts = _read_batch(batch, type_name, db.types, max_line)
    else:
        if type_name is None:
            raise click.UsageError("Missing argument 'TYPE'.", ctx)
        item_type = _item_type(db.types, type_name)
        if text is None and not sys.stdin.isatty():
            text = _read_stdin_text(max_line)
            if text is None:
                raise click.ClickException(f"invalid {type_name}: text is over the line limit of {max_line} bytes")
        drawn = not text and item_type.fresh is not None
        if drawn:
            text = _fresh(item_type)
        if key is not None and (wrong := key_problem(key)):
            raise click.ClickException(f"--id {wrong}")
        posts = [Post(type_name, _checked(item_type, text, max_line), key, drawn)]
    stored = _post(db, posts)
    try:
        click.echo("\n".join(str(posted.item.id) for posted in stored))
    except KeyboardInterrupt:
        # Ctrl-C while the ids are printed (a full pipe, `| less`): the items are stored, and
        # "aborted" with a failing exit would have them posted again.
        ids = [posted.item.id for posted in stored]
        shown = f"id {ids[0]}" if len(ids) == 1 else f"first id {ids[0]}, last {ids[-1]}"
        click.echo(f"\nnotifctl: interrupted while printing the ids; all {len(ids)} stored ({shown}): "
                   "do not post them again", err=True)
        return
    warning = _unserved(db, [post.type for post in posts])
    if warning:
        click.echo(f"notifctl: warning: {warning}", err=True)


def _unserved(db: Store, types: list[str]) -> str | None:
    """Says so when no running daemon serves a posted type (a plugin loaded by notifctl only)."""
    from datetime import datetime, timezone

    from .. import posting

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    path = posting.sqlite_file(db.config.db)
    if path is not None:  # without SQLAlchemy, as the post itself
        rows = posting.sqlite_nodes(path)
    else:
        from .. import store

        rows = [(n.node, n.types, n.heartbeat_at, n.stopped_at) for n in db.call(store.list_nodes)]
    return posting.unserved(types, posting.running_daemons(rows, now))


def _item_type(types, type_name: str, where: str = ""):
    item_type = types.get(type_name)
    if item_type is None:
        raise click.ClickException(f"{where}unknown item type {type_name!r} (known: {', '.join(types)})")
    return item_type


def _fresh(item_type, where: str = "") -> str:
    """The type's fresh value to post, or one line naming the plugin that failed to draw it."""
    try:
        return item_type.fresh()
    except Exception as e:
        raise click.ClickException(
            f"{where}the {item_type.name} plugin failed to draw a fresh value: {type(e).__name__}: {e}"
        ) from None


def _checked(item_type, text: str | None, max_line: int, where: str = "") -> str:
    """The text as the type stores it, or one line naming the problem (the same words as over HTTP)."""
    from ..items import InvalidItem, check_post

    try:
        return check_post(item_type, text, max_line)
    except InvalidItem as e:
        raise click.ClickException(f"{where}{e}") from None


def _read_batch(source: str, type_name: str | None, types, max_line: int) -> list:
    """Every line of a batch, checked: Posts, or one error naming the first bad line."""
    from ..posting import Post

    too_many = f"the batch is over {BATCH_MAX} lines: split it (one batch is one transaction, " \
               "which holds the database's write lock while it is stored)"
    most = BATCH_MAX * (max_line + 2)  # bytes of the largest batch: read no more than that
    if source == "-":
        data = sys.stdin.buffer.read(most + 1)
    else:
        try:
            with open(source, "rb") as f:
                data = f.read(most + 1)
        except OSError as e:
            raise click.ClickException(f"cannot read {source}: {e.strerror}") from None
    if len(data) > most:
        raise click.ClickException(too_many)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final line ending
    if not lines:
        raise click.ClickException("the batch is empty")
    if len(lines) > BATCH_MAX:
        raise click.ClickException(too_many)
    fixed = _item_type(types, type_name) if type_name is not None else None
    posts = []
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
            text = _fresh(item_type, where)
        posts.append(Post(item_type.name, _checked(item_type, text, max_line, where)))
    return posts


def _post(db: Store, posts: list) -> list:
    """Store the posts in one durable transaction, then wake the daemons; returns the Posted."""
    from datetime import datetime, timezone

    from .. import posting

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    path = posting.sqlite_file(db.config.db)
    stored = None
    if path is not None:  # SQLite at the schema's head: without SQLAlchemy
        try:
            stored = posting.post_to_sqlite_file(path, posts, now, db.config.sqlite_busy_timeout)
        except posting.KeyConflict as e:
            raise click.ClickException(f"--id {posts[0].key}: {e}") from None
        except sqlite3_error() as e:
            raise click.ClickException(f"database error: {e}") from None
    if stored is None:  # another engine, or a database to upgrade (or missing: Store says so)
        from .. import store

        try:
            stored = db.call(store.post_items, posts, now=now)
        except posting.KeyConflict as e:
            raise click.ClickException(f"--id {posts[0].key}: {e}") from None
    if any(posted.created for posted in stored):
        if path is not None:  # without SQLAlchemy, as the post itself
            wake_daemons(sqlite_file=path)
        else:
            wake_daemons(db.engine)
    return stored


def sqlite3_error() -> type:
    import sqlite3

    return sqlite3.Error


@click.command(context_settings=HELP)
@click.argument("item_ids", metavar="ID...", nargs=-1, required=True, type=ITEM_ID)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the removed items.")
@click.pass_context
def rm(ctx: click.Context, item_ids: tuple[int, ...], as_json: bool) -> None:
    """Delete items, and their pending deliveries to durable notifiers.

    All or nothing: an unknown ID removes none. Clients' read state is left as it is, and
    running daemons forget the items at once.
    """
    from .. import store

    db = store_of(ctx)
    try:
        removed = db.call(store.remove_items, item_ids)
    except store.NoSuchItems as e:
        raise click.ClickException(f"{e}; nothing removed") from None
    wake_daemons(db.engine)
    if as_json:
        click.echo(json.dumps([item_json(item) for item in removed], ensure_ascii=False, indent=2))
        return
    for item in removed:
        click.echo(f"removed {item.id}\t{item.type}\t{item.text}")


@click.command("list", context_settings=HELP)
@click.option("--type", "type_name", metavar="TYPE", help="Only items of this type.")
@click.option("--limit", default=20, show_default=True, type=COUNT, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of {id, type, text, created_at}.")
@click.pass_context
def list_(ctx: click.Context, type_name: str | None, limit: int, as_json: bool) -> None:
    """List the newest items."""
    from .. import store
    from ..items import escape

    db = store_of(ctx)
    found = db.call(store.list_items, type_name, limit)
    if type_name is not None and not found:
        # A typo would list nothing, as if there were no items (a type whose plugin is not
        # loaded here, but whose items are stored, is listed).
        _item_type(db.types, type_name)
    if as_json:
        click.echo(json.dumps([item_json(item) for item in found], ensure_ascii=False, indent=2))
        return
    for item in found:  # one line per item, whatever another tool wrote in the row
        click.echo(f"{item.id}\t{iso(item.created_at)}\t{item.type}\t{escape(item.text)}")


