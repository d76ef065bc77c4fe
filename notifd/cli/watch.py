# `notifctl watch`: the tutorial's client loop in a terminal.
from __future__ import annotations

import sys

import click

from .common import HELP

@click.command(context_settings=HELP)
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
    from ..watch import checks_no_certificate, run_watch

    for endpoint in endpoints:
        if checks_no_certificate(endpoint):
            raise click.ClickException(
                f"--connect {endpoint}: this endpoint would accept any certificate (Twisted's ssl: client "
                "checks it only with hostname=); use tls:HOST:PORT"
            )
    sys.exit(run_watch(endpoints, name, token, types, click.echo))


