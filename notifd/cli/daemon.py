# `notifd`: the daemon's command line. Everything it does is in service.py.
from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__
from .. import config as configmod
from .common import HELP, checked_option, config_option, db_option, plugins_dir_option


@click.command(context_settings=HELP)
@config_option
@db_option
@plugins_dir_option
@click.option(
    "--listen",
    multiple=True,
    envvar="NOTIFD_LISTEN",
    metavar="ENDPOINT",
    help="Twisted endpoint to serve on; repeatable [env NOTIFD_LISTEN, space-separated] "
    f"[default: {configmod.DEFAULT_LISTEN[0]}].",
)
@click.option(
    "--http",
    multiple=True,
    envvar="NOTIFD_HTTP",
    metavar="ENDPOINT",
    help="Twisted endpoint to serve the HTTP API and the live page on; repeatable [env NOTIFD_HTTP, space-separated] "
    f"[default: {configmod.DEFAULT_HTTP[0]}; http.listen = [] in the file turns HTTP off].",
)
@click.option("--metrics", envvar="NOTIFD_METRICS", metavar="ENDPOINT", help="Serve /metrics and /healthz here [env NOTIFD_METRICS].")
@click.option(
    "--node", envvar="NOTIFD_NODE", callback=lambda ctx, param, value: checked_option("node", value),
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
    from .. import service

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

