# `notifctl watch`: the tutorial's client loop, on the client library. Enter notification
# mode; on each notification leave it, download the new item, print it, re-enter. The
# server announces on entry every type that still has unread items, so the loop also
# drains what was recent when it connected, one item per round.
#
# With several `--connect` endpoints, or when the one node restarts, the loop
# fails over: the connection goes to the next endpoint, with back-off, and the loop starts
# again there (a named client continues from its stored read state). The first connection
# must succeed within one round of the endpoints, so a typo fails at once.
from __future__ import annotations

from typing import Callable, Iterable

from twisted.internet import defer, task

from .client import Failover, NotifdError


def run_watch(endpoints: Iterable[str], name: str | None, token: str | None, types: Iterable[str], echo: Callable) -> int:
    """Watch until the user interrupts or the server refuses the hello; returns the exit code."""
    outcome: list[int] = []

    @defer.inlineCallbacks
    def main(reactor):
        try:
            yield watch(reactor, list(endpoints), name, token, tuple(types), echo)
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


def watch(reactor, endpoints: list[str], name: str | None, token: str | None, types: tuple[str, ...], echo: Callable,
          **failover_options):
    """Follow through any of `endpoints`; the Deferred fails when no endpoint answers at first,
    or a server refuses the hello (reconnecting would not change its mind)."""
    ended = defer.Deferred()

    def on_connect(client):
        # The server may close a session saying why (the client was removed, anonymous
        # clients refused): say it. However a connection ends, Failover reconnects, so a
        # plain loss is not an error (unconsumed, it would be printed as unhandled at Ctrl-C
        # or when the daemon restarts); a refused hello then ends the watch.
        client.closed.addErrback(
            lambda failure: echo(f"notifctl: the server closed the connection: {failure.value}", err=True)
            if failure.check(NotifdError) else None
        )
        d = client.hello(name, token) if name else defer.succeed(None)
        d.addCallback(lambda _: enter(client, types, echo, reactor))

        def refused(failure):
            if failure.check(NotifdError) and not ended.called:
                ended.errback(failure)
            return failure

        return d.addErrback(refused)

    failover = Failover(reactor, endpoints, on_connect, **failover_options)
    failover.start()
    first = failover.when_connected(fail_after_failures=len(endpoints))
    first.addErrback(lambda failure: ended.called or ended.errback(_unreachable(failure, endpoints)))

    def finished(result):
        return failover.stop().addCallback(lambda _: result)

    return ended.addBoth(finished)


def _unreachable(failure, endpoints: list[str]):
    if failure.check(NotifdError):
        return failure
    return ConnectionError(f"cannot connect to {' or '.join(map(str, endpoints))}: {failure.getErrorMessage()}")


ERR_PAUSE = 1.0  # seconds before re-entering notification mode after an ERR answer


def enter(client, types: tuple[str, ...], echo: Callable, clock=None):
    """Start the loop on a connected client; fires once in notification mode."""
    if clock is None:
        from twisted.internet import reactor as clock

    def on_notification(type_name: str) -> None:
        # Not returned: the round runs on its own; stop_notif() tells the client not to OK.
        round_ = client.stop_notif()
        round_.addCallback(lambda _: client.query(type_name))
        round_.addCallbacks(lambda line: echo(f"{type_name}: {line}") if line else None, refused, errbackArgs=(type_name,))
        round_.addCallback(lambda _: client.notif(on_notification, types))
        round_.addErrback(lambda failure: client.transport.abortConnection())

    def refused(failure, type_name: str):
        # An ERR answer is the server's word on this request, not a broken connection: say
        # it and go on in the same session (reconnecting would start over, anonymous
        # clients from every recent item). The pause keeps a lasting error (the database
        # down) from spinning.
        failure.trap(NotifdError)
        echo(f"notifctl: {type_name}? answered ERR {failure.value}", err=True)
        return task.deferLater(clock, ERR_PAUSE, lambda: None)

    return client.notif(on_notification, types)


def follow(client, types: tuple[str, ...], echo: Callable, clock=None):
    """Run the loop on a connected client; the Deferred fires when the connection closes."""
    return enter(client, types, echo, clock).addCallback(lambda _: client.closed)
