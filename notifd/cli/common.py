# What every command of both programs shares: the --config, --db and --plugins-dir options,
# the database and item types opened lazily, and how items and times are printed.
#
# Rule: nothing here imports SQLAlchemy, Twisted or Alembic at module level: `notifctl add`
# pays only for what it uses.
from __future__ import annotations

from typing import Any

import click

from .. import config as configmod
from ..posting import ID_MAX

HELP = {"help_option_names": ["-h", "--help"]}


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Eager --config: read the file first, so that it can supply the other options' defaults."""
    settings = configmod.read_file(value) if value else {}
    ctx.meta["notifd.config_path"] = value
    ctx.meta["notifd.settings"] = settings
    if not isinstance(ctx.command, click.Group):
        # A command's own options take their defaults from the file through click's
        # default_map. Not a group's: there a key such as `db` would name the `db`
        # subcommand group, whose defaults click looks up in the same map. notifctl's
        # root merges the file itself (configmod.build).
        ctx.default_map = {**(ctx.default_map or {}), **configmod.file_defaults(settings)}


def checked_option(key: str, value: Any) -> Any:
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


config_option = click.option(
    "--config",
    # Not readable=True: click's refusal names --config even when the file was the default;
    # read_file's says which file and why, in one line.
    type=click.Path(dir_okay=False, readable=False),
    envvar="NOTIFD_CONFIG",
    default=_default_config,
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help=f"TOML configuration file [env NOTIFD_CONFIG] [default: {configmod.SYSTEM_CONFIG} if it exists].",
)
db_option = click.option(
    "--db", envvar="NOTIFD_DB", metavar="PATH_OR_URL", help="SQLite file or SQLAlchemy URL [env NOTIFD_DB]."
)
# notifd and notifctl load the same plugins, so `notifctl add` validates with the plugin's code.
plugins_dir_option = click.option(
    "--plugins-dir",
    "plugins_dir",
    multiple=True,
    type=click.Path(file_okay=False),
    envvar="NOTIFD_PLUGINS_DIR",
    metavar="DIR",
    help="Load every *.py file of DIR as a plugin; repeatable [env NOTIFD_PLUGINS_DIR, colon-separated].",
)


# A larger id names nothing (posting.ID_MAX), so click refuses it, naming the argument,
# before the database is asked.
ITEM_ID = click.IntRange(1, ID_MAX)
# A count ends up in LIMIT, which both databases take as a 64-bit integer.
COUNT = click.IntRange(1, 2**63 - 1)


class Store:
    """The database and item types, opened lazily: each command pays only for what it uses."""

    def __init__(self, config: configmod.Config) -> None:
        self.config = config
        self._engine = None
        self._plugin_manager = None
        self._types = None

    @property
    def url(self):
        from ..db import database_url

        return database_url(self.config.db)

    @property
    def engine(self):
        if self._engine is None:
            from ..db import open_engine

            # Only `db upgrade` creates a database or upgrades its schema (and notifd, at its start).
            self._engine = open_engine(self.url, create=False, busy_timeout=self.config.sqlite_busy_timeout,
                                       migrate=False)
        return self._engine

    @property
    def plugin_manager(self):
        if self._plugin_manager is None:
            from ..plugins import get_plugin_manager

            self._plugin_manager = get_plugin_manager(dirs=self.config.plugins_dirs)
            self.config.check_plugins(self._plugin_manager.origins)
            for warning in self._plugin_manager.warnings:
                click.echo(f"notifctl: warning: {warning}", err=True)
        return self._plugin_manager

    @property
    def types(self):
        if self._types is None:
            from ..plugins import item_types

            self._types = item_types(self.plugin_manager, self.config.plugins)
            self.config.check_types(self._types)
        return self._types

    def call(self, f, *args, **kwargs):
        """Run a store function in one transaction."""
        from ..db import Database, read_only_error

        try:
            return Database(self.engine).call(f, *args, **kwargs)
        except Exception as e:  # a file system turned read-only under the open database
            raise read_only_error(self.url, e) or e

    @staticmethod
    def call_on(url, f):
        """Run `f(conn)` on another database, read-only in spirit (a backup being checked)."""
        from sqlalchemy import create_engine

        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return f(conn)
        finally:
            engine.dispose()


def store_of(ctx: click.Context) -> Store:
    return Store(ctx.find_root().obj)


def iso(when) -> str:
    """A time as text output shows it: ISO 8601 UTC, or "-" for none."""
    return json_time(when) or "-"


def json_time(when) -> str | None:
    """A time as --json output shows it: ISO 8601 UTC, or null for none."""
    return when.isoformat(timespec="seconds") + "Z" if when is not None else None


def item_json(item) -> dict[str, Any]:
    return {"id": item.id, "type": item.type, "text": item.text, "created_at": json_time(item.created_at)}


NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # a named client's or a publisher's name


def checked_name(what: str, name: str) -> str:
    import re

    if not re.fullmatch(NAME, name):
        raise click.ClickException(f"{what} name must match {NAME}")
    return name


def checked_types(db: Store, value: str, option: str) -> list[str]:
    """`TYPE[,TYPE]` of an option, each a type the plugins declare, or one line saying which is not."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise click.ClickException(f"{option} needs at least one item type")
    unknown = [name for name in names if name not in db.types]
    if unknown:
        raise click.ClickException(
            f"{option}: unknown item type {unknown[0]!r} (known: {', '.join(db.types)})"
        )
    return names


def wake_daemons(engine=None, sqlite_file=None) -> None:
    """Tell the running daemons of this database to look now (after a commit): through the
    engine, or straight to the SQLite file's sockets (`notifctl add`'s path without
    SQLAlchemy). A writer that may not reach them is warned: it posted, but they see it
    only at their next safety poll."""
    from ..wakeup import WakeupDenied, send_datagrams, send_wakeup

    try:
        if sqlite_file is not None:
            send_datagrams(sqlite_file)
        else:
            send_wakeup(engine)
    except WakeupDenied as e:
        click.echo(f"notifctl: warning: cannot wake the running daemons ({e}): they will see this within "
                   "their poll_interval; see docs/security.md, \"Who may post\"", err=True)
