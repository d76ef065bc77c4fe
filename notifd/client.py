"""A Twisted client for notifd, with the Deferred API of the notification tutorial.

Every request returns a Deferred that fires with its reply::

    client = yield connect(reactor, "tcp:127.0.0.1:8789")
    number = yield client.random()          # an int
    ad = yield client.classified()          # a str; "" when nothing is unread
    yield client.hello("kiosk", token)      # name the client: its read state persists
    yield client.notif(on_notification)     # fires once in notification mode
    ...
    yield client.stop_notif()               # back to normal mode

In notification mode the server calls ``on_notification(type_name)`` for each
``notif: <type>`` line. When the callback returns (or the Deferred it returns fires),
the client answers ``OK`` for you, unless the callback called ``stop_notif()``: the
tutorial's loop does exactly that, then downloads the new item and re-enters
notification mode.

Requests made while another is in flight are queued and sent in order, one at a time.
A reply ``ERR <reason>`` fails the request's Deferred with ``NotifdError(reason)``.

Several nodes: ``Failover`` keeps one connection up to any of several
endpoints, moving to the next one (with back-off) when a connection fails or is lost, and
runs ``on_connect(client)`` on each new connection, where a client says ``hello`` and
re-enters notification mode. A named client's read state is in the shared database, so it
continues where it left off on whichever node it reaches::

    def on_connect(client):
        d = client.hello("kiosk", token)
        d.addCallback(lambda _: client.notif(on_notification))
        return d

    failover = Failover(reactor, ["tcp:node-a:8789", "tcp:node-b:8789"], on_connect)
    failover.start()
    client = yield failover.when_connected()
"""
from __future__ import annotations

import enum
import random
from collections import deque
from typing import Any, Callable, Iterable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

NOTIF_PREFIX = "notif: "


class NotifdError(Exception):
    """The server answered ``ERR <reason>``; ``str(error)`` is the reason."""


class _Mode(enum.Enum):
    NORMAL = "normal"
    NOTIF = "notif"


def one_word(value: str, what: str, secret: bool = False) -> str:
    """`value` if it can be sent as one word of a line, else ValueError (naming the value
    unless it is a secret): anything else (a space, a line break) would send a second
    command, and every reply after it would answer the wrong request."""
    if not isinstance(value, str) or not value or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{what} must be one word of printable characters" + ("" if secret else f", not {value!r}"))
    return value


class _Request:
    __slots__ = ("line", "parse", "deferred")

    def __init__(self, line: str, parse: Callable[[str], Any]) -> None:
        self.line = line
        self.parse = parse
        self.deferred: defer.Deferred = defer.Deferred()


class NotifClient(LineOnlyReceiver):
    """The client protocol; see the module docstring for the API."""

    delimiter = b"\n"  # the server ends lines with \r\n; the \r is stripped below
    MAX_LENGTH = 1 << 20
    log = Logger()

    def __init__(self) -> None:
        self._queue: deque[_Request] = deque()
        self._in_flight: _Request | None = None
        self._mode = _Mode.NORMAL
        self._on_notification: Callable[[str], Any] | None = None
        self._stopping = False  # stop_notif queued or sent: notifications are now dropped
        self._stops = 0  # stop_notif calls so far: a notification is acknowledged only if none came since
        self._closed_reason = None
        self._server_error: NotifdError | None = None  # an ERR line outside any request
        self.closed: defer.Deferred = defer.Deferred()
        """Fires with None when the connection closes cleanly, or fails with the reason:
        `NotifdError` when the server said why (``ERR client removed``, say)."""

    def connectionMade(self) -> None:
        # Requests and OKs are small writes: no Nagle, or one could wait for the server's
        # delayed ACK of the previous one.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)

    # --- the API ----------------------------------------------------------------------------

    def random(self) -> defer.Deferred:
        """``random?``: fires with an int."""
        return self._request("random?", int)

    def classified(self) -> defer.Deferred:
        """``classified?``: fires with the oldest unread recent ad, or "" when there is none."""
        return self.query("classified")

    def query(self, type_name: str) -> defer.Deferred:
        """``<type>?`` for any item type: fires with the line the server answered.

        Raises ValueError at once for a type name that is not one word."""
        return self._request(f"{one_word(type_name, 'item type')}?", str)

    def hello(self, name: str, token: str) -> defer.Deferred:
        """``hello <name> <token>``: fires with None once the server accepted.

        Raises ValueError at once for a name or token that is not one word."""
        return self._request(f"hello {one_word(name, 'client name')} {one_word(token, 'token', secret=True)}",
                             self._expect("OK"))

    def notif(self, on_notification: Callable[[str], Any], types: Iterable[str] = ()) -> defer.Deferred:
        """Enter notification mode; fires with None on ``will send notifs``.

        ``on_notification(type_name)`` is then called for each notification. ``types``
        restricts them to those item types (all types when empty).
        """
        line = " ".join(["notif", *(one_word(t, "item type") for t in types)])

        def entered(reply: str) -> None:
            self._expect("will send notifs")(reply)
            self._mode = _Mode.NOTIF
            self._on_notification = on_notification
            self._stopping = False

        return self._request(line, entered)

    def stop_notif(self) -> defer.Deferred:
        """``stop_notif``: fires with None once back in normal mode."""
        self._stopping = True
        self._stops += 1

        def stopped(reply: str) -> None:
            self._expect("OK")(reply)
            self._mode = _Mode.NORMAL
            self._on_notification = None
            self._stopping = False

        return self._request("stop_notif", stopped)

    def close(self) -> None:
        self.transport.loseConnection()

    # --- machinery ----------------------------------------------------------------------------

    @staticmethod
    def _expect(wanted: str) -> Callable[[str], None]:
        def check(reply: str) -> None:
            if reply != wanted:
                raise NotifdError(f"unexpected reply {reply!r}")

        return check

    def _request(self, line: str, parse: Callable[[str], Any]) -> defer.Deferred:
        request = _Request(line, parse)
        if self._closed_reason is not None:
            request.deferred.errback(self._closed_reason)
            return request.deferred
        self._queue.append(request)
        self._send_next()
        return request.deferred

    def _send_next(self) -> None:
        if self._in_flight is None and self._queue:
            self._in_flight = self._queue.popleft()
            self.transport.write(self._in_flight.line.encode("utf-8") + b"\r\n")

    def lineReceived(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        if self._mode is _Mode.NOTIF and line.startswith(NOTIF_PREFIX):
            self._notified(line[len(NOTIF_PREFIX):])
            return
        request, self._in_flight = self._in_flight, None
        if request is None:
            if line.startswith("ERR "):
                # Said as the server closes the connection (idle, revoked, limits): the
                # reason the connection ends, for `closed` and the requests still waiting.
                self._server_error = NotifdError(line[4:])
            self.log.warn("unexpected line from the server: {line!r}", line=line)
            return
        if line.startswith("ERR "):
            request.deferred.errback(NotifdError(line[4:]))
        else:
            try:
                result = request.parse(line)
            except Exception as e:
                request.deferred.errback(e)
            else:
                request.deferred.callback(result)
        self._send_next()

    def _notified(self, type_name: str) -> None:
        if self._stopping or self._on_notification is None:
            return  # sent before the server read our stop_notif: the item stays unread
        stops = self._stops
        d = defer.maybeDeferred(self._on_notification, type_name)
        d.addErrback(lambda failure: self.log.failure("notification callback failed", failure))
        d.addCallback(lambda _: self._acknowledge(stops))

    def _acknowledge(self, stops: int) -> None:
        # Not if the callback (or anyone since) called stop_notif: the server needs no OK then.
        if self._mode is _Mode.NOTIF and self._stops == stops and self._closed_reason is None:
            self.transport.write(b"OK\r\n")

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self._server_error is not None:
            reason = Failure(self._server_error)
        self._closed_reason = reason
        if reason.check(ConnectionDone):
            self.closed.callback(None)
        else:
            self.closed.errback(reason)
        pending = ([self._in_flight] if self._in_flight else []) + list(self._queue)
        self._in_flight = None
        self._queue.clear()
        for request in pending:
            request.deferred.errback(reason)


def connect(reactor: Any, endpoint: str) -> defer.Deferred:
    """Connect to a notifd; fires with a `NotifClient`. ``endpoint`` is a Twisted client string.

    Over TLS it fires once the handshake succeeded: a certificate that is not trusted fails
    the Deferred (with OpenSSL's ``SSL.Error``, or service_identity's ``VerificationError``
    when the certificate is not for that host name).
    """
    return Secured(clientFromString(reactor, endpoint)).connect(Factory.forProtocol(NotifClient))


@implementer(IStreamClientEndpoint)
class Secured:
    """An endpoint whose connections are handed over only once TLS, if any, is established.

    A TLS failure (a certificate the client does not trust) then fails the connection
    attempt, as a refused connection does, instead of closing a connection already handed
    over: ClientService has no transition for a connection lost while its
    ``prepareConnection`` runs, so `Failover` needs this.
    """

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint

    def connect(self, factory) -> defer.Deferred:
        held: list[_UntilSecure] = []

        def cancel(_):
            if held and held[0].transport is not None:
                held[0].transport.abortConnection()
            else:
                connecting.cancel()

        ready = defer.Deferred(cancel)

        class Holding(Factory):
            def buildProtocol(self, addr):
                protocol = factory.buildProtocol(addr)
                if protocol is None:
                    return None
                held.append(_UntilSecure(protocol, ready))
                return held[0]

        connecting = self.endpoint.connect(Holding())
        connecting.addErrback(lambda failure: None if ready.called else ready.errback(failure))
        return ready


@implementer(IHandshakeListener)
class _UntilSecure(Protocol):
    """Connects `protocol` to the transport once a TLS handshake completed (at once without TLS)."""

    def __init__(self, protocol, ready: defer.Deferred) -> None:
        self.protocol = protocol
        self.ready = ready
        self.handed_over = False

    def connectionMade(self) -> None:
        if not isinstance(self.transport, TLSMemoryBIOProtocol):
            self.handshakeCompleted()

    def handshakeCompleted(self) -> None:
        if self.ready.called:  # cancelled meanwhile
            self.transport.abortConnection()
            return
        self.handed_over = True
        self.protocol.makeConnection(self.transport)
        self.ready.callback(self.protocol)

    def dataReceived(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self.handed_over:
            self.protocol.connectionLost(reason)
        elif not self.ready.called:
            self.ready.errback(reason)


@implementer(IStreamClientEndpoint)
class RoundRobin:
    """An endpoint that tries its endpoints in turn: each connection attempt goes to the next one."""

    def __init__(self, endpoints: Iterable[Any]) -> None:
        self.endpoints = list(endpoints)
        if not self.endpoints:
            raise ValueError("no endpoint given")
        self._next = 0

    def connect(self, factory) -> defer.Deferred:
        endpoint = self.endpoints[self._next % len(self.endpoints)]
        self._next += 1
        return endpoint.connect(factory)


class Failover:
    """One connection to any of several notifd nodes, kept up (Twisted's ClientService).

    ``endpoints``: Twisted client endpoint strings or endpoint objects, tried in turn.
    ``on_connect(client)``: run on each new connection before it is handed out (say
    ``hello``, enter notification mode); if it fails, the connection is dropped and the
    next endpoint is tried. Attempts after a failure wait ``initial_delay`` seconds, then
    longer (times 1.5 each, plus ``jitter()`` seconds, by default random in [0, 1) so that
    clients do not all return at once), up to ``max_delay``; after a lost connection the
    next node is tried after ``initial_delay``.
    """

    def __init__(
        self,
        reactor: Any,
        endpoints: Iterable[Any],
        on_connect: Callable[[NotifClient], Any] | None = None,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        clock: Any = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        resolved = [clientFromString(reactor, e) if isinstance(e, str) else e for e in endpoints]
        self.service = ClientService(
            RoundRobin(Secured(endpoint) for endpoint in resolved),
            Factory.forProtocol(NotifClient),
            retryPolicy=backoffPolicy(initialDelay=initial_delay, maxDelay=max_delay, jitter=jitter),
            clock=clock if clock is not None else reactor,
            prepareConnection=on_connect,
        )

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> defer.Deferred:
        """Close the connection and stop reconnecting."""
        return self.service.stopService()

    def when_connected(self, fail_after_failures: int | None = None) -> defer.Deferred:
        """Fires with the connected `NotifClient` (after ``on_connect`` finished)."""
        return self.service.whenConnected(failAfterFailures=fail_after_failures)
