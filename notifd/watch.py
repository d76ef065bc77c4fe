# `notifctl watch`: the tutorial's client loop, on the client library. Enter notification
# mode; on each notification leave it, download the new item, print it, re-enter. The
# server announces on entry every type that still has unread items, so the loop also
# drains what was recent when it connected, one item per round.
from __future__ import annotations

from typing import Callable, Iterable

from twisted.internet import defer, task

from .client import NotifdError, connect


def run_watch(endpoint: str, name: str | None, token: str | None, types: Iterable[str], echo: Callable) -> int:
    """Watch until the connection closes or the user interrupts; returns the exit code."""
    outcome: list[int] = []

    @defer.inlineCallbacks
    def main(reactor):
        try:
            yield watch(reactor, endpoint, name, token, tuple(types), echo)
            outcome.append(0)
        except NotifdError as e:
            echo(f"notifctl: the server refused: {e}", err=True)
            outcome.append(1)
        except Exception as e:
            echo(f"notifctl: {e}", err=True)
            outcome.append(1)

    try:
        task.react(main)
    except SystemExit:
        pass
    return outcome[0] if outcome else 1


@defer.inlineCallbacks
def watch(reactor, endpoint: str, name: str | None, token: str | None, types: tuple[str, ...], echo: Callable):
    client = yield connect(reactor, endpoint)
    if name:
        yield client.hello(name, token)
    yield follow(client, types, echo)


def follow(client, types: tuple[str, ...], echo: Callable):
    """Run the loop on a connected client; the Deferred fires when the connection closes."""

    def on_notification(type_name: str) -> None:
        # Not returned: the round runs on its own; stop_notif() tells the client not to OK.
        round_ = client.stop_notif()
        round_.addCallback(lambda _: client.query(type_name))
        round_.addCallback(lambda line: echo(f"{type_name}: {line}") if line else None)
        round_.addCallback(lambda _: client.notif(on_notification, types))
        round_.addErrback(lambda failure: client.transport.abortConnection())

    d = client.notif(on_notification, types)
    d.addCallback(lambda _: client.closed)
    return d
