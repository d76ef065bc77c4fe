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

from . import protocol
from .client import Failover, NotifdError


def run_watch(endpoints: Iterable[str], name: str | None, token: str | None, types: Iterable[str], echo: Callable) -> int:
    """Watch until the user interrupts (exit code 0) or the server refuses the hello or a type (1);
    returns the exit code."""
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
            e = getattr(e, "originalException", e)  # Twisted's UnlistableError (a bad trustRoots=) says nothing itself
            echo(f"notifctl: {e}", err=True)
            outcome.append(1)

    try:
        task.react(main)
    except SystemExit:
        pass
    # No outcome: the reactor stopped before the watch ended, which only SIGINT (Ctrl-C) or
    # SIGTERM does; that is how a watcher is meant to be stopped, so it is no failure.
    return outcome[0] if outcome else 0


DEFAULT_CONNECT = "tcp:127.0.0.1:8789"

# The server endpoints a watcher can reach, with their positional arguments in the order
# Twisted's string parsers take them (tcp:PORT:INTERFACE:BACKLOG, ...).
_SERVER_ARGUMENTS = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog"),
    "unix": ("address", "mode", "backlog", "lockfile"),
}
# A daemon listening on every address is reached on the loopback one.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def connect_endpoint(listen: str) -> str | None:
    """The client endpoint that reaches a daemon listening on `listen` (a server endpoint
    string), or None when there is no telling (systemd:, a port of 0, ...)."""
    from twisted.internet.endpoints import _parse as parse_endpoint_string
    from twisted.internet.endpoints import quoteStringArgument as quote

    try:
        args, options = parse_endpoint_string(listen)
    except Exception:
        return None
    kind = str(args[0]).lower() if args else ""
    names = _SERVER_ARGUMENTS.get(kind)
    if names is None:
        return None
    values = {**dict(zip(names, args[1:])), **options}
    if kind == "unix":
        return f"unix:path={quote(values['address'])}" if values.get("address") else None
    port = str(values.get("port", ""))
    if not port.isdigit() or int(port) == 0:
        return None
    host = values.get("interface", "::" if kind == "tcp6" else "")
    host = _LOOPBACK.get(host, host)
    # ssl: listens with TLS; tls: is the client that checks the certificate and host name.
    return f"{'tls' if kind == 'ssl' else 'tcp'}:{quote(host)}:{port}"


def checks_no_certificate(endpoint: str) -> bool:
    """Whether a client endpoint is TLS that accepts any certificate: Twisted's `ssl:`
    checks the server's certificate only when given hostname= (`tls:` always does)."""
    from twisted.internet.endpoints import _parse as parse_endpoint_string

    args, options = parse_endpoint_string(endpoint)
    return args[0] == "ssl" and "hostname" not in options


def watch(reactor, endpoints: list[str], name: str | None, token: str | None, types: tuple[str, ...], echo: Callable,
          **failover_options):
    """Follow through any of `endpoints`; the Deferred fails when no endpoint answers at first,
    or a server refuses the hello (reconnecting would not change its mind)."""
    ended = defer.Deferred()

    def on_connect(client):
        # The server may close a session saying why. A revocation (the client removed, its
        # token rotated, anonymous clients refused) ends the watch with that one line:
        # reconnecting would only be refused in other words. Any other reason (a limit) is
        # said, and Failover reconnects, as it does after a plain loss, which is no error
        # (unconsumed, it would be printed as unhandled at Ctrl-C or a daemon restart).
        def closed(failure):
            if not failure.check(NotifdError):
                return None
            error = ConnectionError(f"the server closed the connection: {failure.value}")
            if str(failure.value) in REVOKED:
                clock.callLater(0, lambda: ended.called or ended.errback(error))
            else:
                echo(f"notifctl: {error}", err=True)
            return None

        client.closed.addErrback(closed)
        d = client.hello(name, token) if name else defer.succeed(None)
        d.addCallback(lambda _: enter(client, types, echo, reactor))

        def refused(failure):
            if not failure.check(NotifdError):
                return failure
            # Hand the connection over and end the watch on the next turn. Stopping the
            # service inside its prepareConnection, or failing it, leaves this connection open
            # in a state where ClientService has no transition for its loss (an "Unhandled
            # Error" after the one line); once handed over, stopping closes it in order.
            clock.callLater(0, lambda: ended.called or ended.errback(failure))
            return None

        return d.addErrback(refused)

    clock = failover_options.get("clock") or reactor
    failover = Failover(reactor, endpoints, on_connect, **failover_options)
    failover.start()
    first = failover.when_connected(fail_after_failures=len(endpoints))

    def unreachable(failure):
        # This runs inside the service's state machine, which stopping would re-enter.
        error = _unreachable(failure, endpoints)
        clock.callLater(0, lambda: ended.called or ended.errback(error))

    first.addErrback(unreachable)

    def finished(result):
        return failover.stop().addCallback(lambda _: result)

    return ended.addBoth(finished)


def _unreachable(failure, endpoints: list[str]):
    if failure.check(NotifdError):
        return failure
    return ConnectionError(f"cannot connect to {' or '.join(map(str, endpoints))}: {_why(failure)}")


def _why(failure) -> str:
    """Why a connection failed, in words; for TLS, what is wrong with the certificate."""
    from OpenSSL.SSL import Error as OpenSSLError
    from service_identity import VerificationError

    if failure.check(VerificationError):
        return "the server's TLS certificate is not for this host name"
    if failure.check(OpenSSLError):
        reasons = [reason for _, _, reason in failure.value.args[0]] if failure.value.args else []
        if "certificate verify failed" in reasons:
            return ("the server's TLS certificate is not trusted (certificate verify failed; for a private CA, "
                    "add :trustRoots=DIR to the endpoint)")
        return f"TLS failed ({'; '.join(reasons) or failure.getErrorMessage()})"
    return failure.getErrorMessage()


ERR_PAUSE = 1.0  # seconds before re-entering notification mode after an ERR answer
# The server's reasons for closing a session that end a watch: its revocations, as the
# protocol words them ("ERR client removed\r\n" -> "client removed").
REVOKED = tuple(reply.data.decode().removeprefix("ERR ").rstrip() for reply in (
    protocol.Err.CLIENT_REMOVED, protocol.Err.TOKEN_CHANGED, protocol.Err.ANONYMOUS_REFUSED))


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
