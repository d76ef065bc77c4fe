# `notifctl watch`: the tutorial's client loop in a terminal.
from __future__ import annotations

import os
import sys

import click

from .common import HELP


@click.command(context_settings=HELP)
@click.option(
    "--connect", "endpoints", multiple=True, envvar="NOTIFD_CONNECT",
    help="Twisted client endpoint of a daemon; repeatable: the next one is tried when a connection "
    "fails or is lost [env NOTIFD_CONNECT, space-separated] [default: where notifd's first listen entry "
    "listens, from NOTIFD_LISTEN or else the configuration, else tcp:127.0.0.1:8789].",
)
@click.option("--name", help="Say hello as this named client.")
@click.option(
    "--token", envvar="NOTIFD_TOKEN",
    help="The named client's token [env NOTIFD_TOKEN]. On the command line every local user can read it "
    "(ps): prefer --token-file or the environment.",
)
@click.option(
    "--token-file", metavar="FILE",
    help="Read the token from the first line of FILE (keep it mode 0600); wins over NOTIFD_TOKEN.",
)
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only these item types; repeatable.")
@click.pass_context
def watch(ctx: click.Context, endpoints: tuple[str, ...], name: str | None, token: str | None,
          token_file: str | None, types: tuple[str, ...]) -> None:
    """Print new items as they come: the tutorial's client loop, failing over between daemons."""
    if token_file is not None:
        if token is not None and ctx.get_parameter_source("token") is click.core.ParameterSource.COMMANDLINE:
            raise click.ClickException("give --token or --token-file, not both")
        token = _read_token(token_file)
    if name and not token:
        raise click.ClickException("--name needs --token-file, NOTIFD_TOKEN or --token")
    from ..client import one_word
    from ..watch import DEFAULT_CONNECT, checks_no_certificate, connect_endpoint, run_watch

    # Refused here, in one line, rather than by the client library once connected.
    try:
        if name:
            one_word(name, "--name")
            one_word(token, "the token", secret=True)
        for type_name in types:
            one_word(type_name, "--type")
    except ValueError as e:
        raise click.ClickException(str(e)) from None

    if not endpoints:
        # The daemon's own address, as notifd reads it: NOTIFD_LISTEN over the config file's
        # `listen` (a server endpoint; where it listens is turned into one to connect to).
        listen = os.environ.get("NOTIFD_LISTEN", "").split() or ctx.find_root().obj.listen
        reached = connect_endpoint(listen[0]) if listen else None
        if reached is None and listen and not listen[0].lower().startswith("systemd:"):
            # Not the default instead: another daemon may listen there, and it would be followed silently.
            raise click.ClickException(
                f"cannot tell where to connect from the listen entry {listen[0]!r}: give --connect"
            )
        endpoints = (reached or DEFAULT_CONNECT,)
    for endpoint in endpoints:
        _check_endpoint(endpoint)
        if checks_no_certificate(endpoint):
            raise click.ClickException(
                f"--connect {endpoint}: this endpoint would accept any certificate (Twisted's ssl: client "
                "checks it only with hostname=); use tls:HOST:PORT"
            )
    sys.exit(run_watch(endpoints, name, token, types, click.echo))


def _check_endpoint(endpoint: str) -> None:
    """One line, before connecting, for what Twisted cannot read as a client endpoint (its own
    words are a constructor's TypeError: "missing 2 required positional arguments")."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import clientFromString

    try:
        clientFromString(reactor, endpoint)
    except Exception as e:
        if not isinstance(e, (TypeError, ValueError)):  # a trustRoots= it cannot list, say
            raise click.ClickException(f"--connect {endpoint}: {getattr(e, 'originalException', e)}") from None
        raise click.ClickException(
            f"--connect {endpoint}: not a client endpoint; write tcp:HOST:PORT, tls:HOST:PORT or unix:PATH "
            r"(an IPv6 address with its colons escaped: tcp:\:\:1:8789)"
        ) from None


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte order mark is no part of the token
            token = f.readline().strip()
    except OSError as e:
        raise click.ClickException(f"--token-file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"--token-file {path}: not a text file") from None
    if not token:
        raise click.ClickException(f"--token-file {path}: the first line is empty")
    return token


