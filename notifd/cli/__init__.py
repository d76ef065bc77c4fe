"""The two programs, `notifd` and `notifctl`: argv in, stdout and exit codes out.

Commands stay thin: they parse, call the store or the service, and print. One module per
command group (`items`, `clients`, `database`, ...); this one assembles `notifctl` and turns
every known failure into one line on stderr and a non-zero exit. notifctl imports only
what its command needs, so that `notifctl add` starts fast (no Twisted, no Alembic, and on
SQLite no SQLAlchemy).
"""
from __future__ import annotations

import sys

import click

from .. import __version__
from .. import config as configmod
from ..errors import first_line
from . import clients, database, items, plugins, status, tokens, watch
from .common import HELP, config_option, db_option, plugins_dir_option
from .daemon import notifd


@click.group(context_settings=HELP)
@config_option
@db_option
@plugins_dir_option
@click.version_option(__version__, prog_name="notifctl")
@click.pass_context
def notifctl(ctx: click.Context, db: str | None, plugins_dir: tuple[str, ...]) -> None:
    """Administer notifd: post items, manage named clients, look at the database."""
    # Flags and environment (None when not given) over the file's settings.
    ctx.obj = configmod.build(ctx.meta["notifd.settings"], db=db, plugins_dirs=plugins_dir)


for command in (
    items.add, items.list_, items.rm, clients.client, clients.clients, plugins.plugins, plugins.plugin, plugins.outbox,
    database.db_group, database.prune, status.status, tokens.token, watch.watch,
):
    notifctl.add_command(command)


# --- entry points: every known failure becomes one line on stderr ---------------------------------


def _loaded_error(module: str, name: str) -> type:
    # Only a module that was imported can have raised its errors: importing SQLAlchemy
    # just to name its exception would cost `notifctl add` 150 ms (its import is what `notifctl add` must not pay for).
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
        _name_the_environment(e)
        click.echo(f"{prog}: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except Exception as e:
        message = _known_failure(e)
        if message is None:
            raise
        click.echo(f"{prog}: {message}", err=True)
        sys.exit(1)


def _name_the_environment(error: click.ClickException) -> None:
    """A bad value that came from an environment variable is named as that variable: the
    flag click would name was not given."""
    ctx, param = getattr(error, "ctx", None), getattr(error, "param", None)
    if not isinstance(error, click.BadParameter) or ctx is None or param is None or not param.envvar:
        return
    if ctx.get_parameter_source(param.name) is click.core.ParameterSource.ENVIRONMENT:
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
        error.param_hint = f"{' or '.join(names)} (environment)"


def _known_failure(error: Exception) -> str | None:
    """The one line for a failure we expect, or None for a bug."""
    # UnusableDatabase says why in full, a read-only file system included (posting.py).
    known = (configmod.ConfigError, _loaded_error("notifd.posting", "UnusableDatabase"), _loaded_error("notifd.plugins", "PluginError"))
    if isinstance(error, known):
        return str(error)
    if isinstance(error, _loaded_error("sqlalchemy.exc", "SQLAlchemyError")):
        return f"database error: {first_line(error)}"
    if isinstance(error, OSError):
        return str(error)
    return None



def notifd_main() -> None:
    _run(notifd, "notifd")


def notifctl_main() -> None:
    _run(notifctl, "notifctl")

