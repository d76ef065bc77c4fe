# The Twisted adapter of the protocol: feeds each connection's bytes to its `Session` and
# carries out the actions it returns. The only module that sees transports, producers and
# disconnects; it decides nothing about the protocol itself (protocol.py does).
#
# Rules: every database call goes through `Database.run` (never on the reactor thread);
# an answer that arrives after the client left is dropped; plugin code (rendering, fresh
# values) cannot raise out of here.
#
# The write fast path: on a plain TCP transport whose buffer is empty, bytes go
# to the socket at once with one send(), and only what the kernel did not take is handed
# to the transport. `transport.write()` alone would only buffer them and send at the next
# reactor turn, at the price of two epoll_ctl calls per connection: a fan-out to 10,000
# clients would reach the first one only after the loop. Anything else (TLS or other
# wrapping transports, a transport with data still buffered, closing or closed, a send
# that fails) takes the normal path, so ordering, flow control and error handling stay
# Twisted's. See docs/architecture.md, "The write fast path".
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import plugins, store
from .items import Item, ItemType
from .limits import RefusalLog
from .metrics import Metrics
from .protocol import (
    Err,
    Fetch,
    Identify,
    MarkRead,
    Mode,
    Send,
    Session,
    Subscribe,
    Unsubscribe,
    sendable,
)
from .readmarks import ReadMarks


@dataclass
class Server:
    """What every connection shares."""

    log = Logger()  # not a field: no annotation

    db: object  # db.Database
    hub: object  # hub.Hub
    types: Mapping[str, ItemType]
    clock: object  # IReactorTime
    max_line: int
    node: str
    metrics: object = None  # metrics.Metrics
    anonymous: bool = True  # clients may use the protocol without `hello`
    hello_limiter: object = None  # limits.FailureLimiter; None: no limit
    connections: set = field(default_factory=set)  # every open Connection
    others: set = field(default_factory=set)  # every open HTTP connection (web/channel.py), counted in the limits
    max_connections: int | None = None  # in total; None: no limit
    max_per_address: int | None = None  # from one source address; None: no limit
    # When anonymous clients are refused: connections from one address that have not said
    # a successful hello yet, and how long from connect they have to say it. None: no limit.
    max_unidentified_per_address: int | None = None
    hello_timeout: float | None = None
    idle_timeout: float | None = None  # seconds a normal-mode connection may stay silent
    max_unsent: int | None = None  # bytes a client may leave unread before it is dropped
    keepalive: float | None = None  # seconds of silence before TCP keep-alive probes; None: the kernel's
    per_address: dict = field(default_factory=dict)  # source address -> open connections
    unidentified: dict = field(default_factory=dict)  # source address -> connections waiting for hello
    refusals: RefusalLog = None  # which refused connections to log
    type_names: frozenset[str] = frozenset()  # shared by every Session (one set, not one per client)
    type_plugins: Mapping[str, str] = field(default_factory=dict)  # item type -> its plugin (errors)
    read_marks: ReadMarks = None  # named clients' cursors on their way to the database
    unsendable_seen: set = field(default_factory=set)  # ids of items found unsendable (logged once)
    revocations: dict = field(default_factory=dict)  # client id -> (change id, ERR) of its latest revocation

    _now_tick: int = -1
    _now: datetime | None = None

    def __post_init__(self) -> None:
        self.type_names = frozenset(self.types)
        if self.read_marks is None:
            self.read_marks = ReadMarks(self.db, self.clock)
        if self.metrics is None:
            self.metrics = Metrics()
        if self.refusals is None:
            self.refusals = RefusalLog(self.clock)

    def admit(self, address: str, waits_for_hello: bool | None = None) -> bytes | None:
        """Count a new connection from `address`; or, over a limit, the line to refuse it with.

        When anonymous clients are refused, a line-protocol connection counts as waiting
        for its hello (`Connection` reads `anonymous` too, in the same turn); an HTTP one
        (`waits_for_hello=False`) does not: it says who it is in each request.
        """
        if waits_for_hello is None:
            waits_for_hello = not self.anonymous
        if self.max_connections is not None and len(self.connections) + len(self.others) >= self.max_connections:
            return self._refused(address, "max_connections", Err.TOO_MANY_CONNECTIONS)
        if self.max_per_address is not None and self.per_address.get(address, 0) >= self.max_per_address:
            return self._refused(address, "max_connections_per_address", Err.TOO_MANY_FROM_ADDRESS)
        if waits_for_hello:
            waiting = self.unidentified.get(address, 0)
            limit = self.max_unidentified_per_address
            if limit is not None and waiting >= limit:
                return self._refused(address, "max_unidentified_per_address", Err.TOO_MANY_WAITING_FOR_HELLO)
            self.unidentified[address] = waiting + 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        return None

    def _refused(self, address: str, limit: str, line) -> bytes:
        self.metrics.refused[limit].inc()
        # A flood makes one line per address and limit a minute, not one per connection;
        # the total limit is one key whatever the address (many addresses reach it at once).
        key = (limit, None if limit == "max_connections" else address)
        count = self.refusals.refused(key)
        if count:
            self._log_refused(key, count)
        return line.data

    def _log_refused(self, key: tuple[str, str | None], count: int) -> None:
        limit, address = key
        self.log.warn(
            "refused {refused}{source}{since}: limits.{limit} = {value} reached",
            refused="a connection" if count == 1 else f"{count} connections",
            source="" if address is None else f" from {address}",
            since="" if count == 1 else " since the last report",
            count=count, address=address, limit=limit, value=getattr(self, _LIMIT_FIELDS[limit]),
        )

    def left(self, address: str, counts: dict | None = None) -> None:
        """A connection from `address` closed (or, with `counts`, left that count)."""
        counts = self.per_address if counts is None else counts
        count = counts.get(address, 0) - 1
        if count > 0:
            counts[address] = count
        else:
            counts.pop(address, None)

    def sweep(self) -> None:
        """Run now and then: close idle connections, log the refusals held back."""
        self.close_idle()
        for key, count in self.refusals.due():
            self._log_refused(key, count)

    def close_idle(self) -> int:
        """Close the normal-mode connections silent for longer than idle_timeout; returns how many."""
        if self.idle_timeout is None:
            return 0
        now = self.clock.seconds()
        idle = [c for c in self.connections if c.idle_for(now) > self.idle_timeout]
        for connection in idle:
            connection.close_idle()
        return len(idle)

    # --- answering `<type>?`: shared by line-protocol sessions and HTTP reads ---------------------

    def unread_in_memory(self, item_type: ItemType, after: int, checked: bool = False) -> tuple[bool, Item | None]:
        """The hub's answer, if it is sure of it (see Hub.unread): most answers need no database."""
        return self.hub.unread(item_type.name, after, item_type.pick, self.now(), checked)

    def unread_in_store(self, item_type: ItemType, after: int):
        """The database's answer: a Deferred of the item, or None."""
        name = item_type.name
        return self.db.run(store.next_unread, name, after, item_type.pick, self.hub.windows[name], self.now())

    def render(self, item: Item, item_type: ItemType) -> str | None:
        """The line an item is sent as; None when it cannot be sent (then it is skipped, not
        answered with an error: every later query would find it again, and the items behind
        it would never reach anyone)."""
        try:
            line = item_type.render(item)
            if not isinstance(line, str):
                raise TypeError(f"rendered a {type(line).__name__}, not a str")
            if sendable(line):
                return line
            problem: str | Failure = (
                "its text is not one line (a newline or a control character)" if not sendable(item.text)
                else "its plugin rendered it as more than one line (a newline or a control character)"
            )
        except Exception:
            problem = Failure()
        self.unsendable(item, problem)
        return None

    def fresh(self, item_type: ItemType) -> str | None:
        """The line for nothing unread: a fresh value, or the empty line; None if the plugin failed."""
        if item_type.fresh is None:
            return ""
        try:
            line = item_type.fresh()
            if not isinstance(line, str) or not sendable(line):
                raise TypeError(f"drew {line!r}, not one line of text")
            return line
        except Exception:
            owner = self.type_plugins.get(item_type.name, "unknown")
            plugins.plugin_failed(owner, f"item type {item_type.name}", Failure(), traceback=True)
            return None

    def next_answer(self, item_type: ItemType, after: int):
        """What `<type>?` answers after cursor `after`, for callers without a Session (HTTP).

        A Deferred of (item, line, cursor): the item sent (None for a fresh value or
        nothing), its line (None when a fresh value could not be drawn; "" for nothing),
        and the cursor after it (past any item skipped on the way).
        """
        from twisted.internet import defer

        @defer.inlineCallbacks
        def answer(after: int):
            checked = False
            if self.hub.behind():
                try:
                    yield self.hub.caught_up()  # what was announced before this request, in memory
                    checked = True
                except Exception:
                    pass  # the check failed: the database answers, or says it cannot
            while True:
                known, item = self.unread_in_memory(item_type, after, checked)
                if not known:
                    item = yield self.unread_in_store(item_type, after)
                if item is None:
                    return None, self.fresh(item_type), after
                line = self.render(item, item_type)
                after = max(after, item.id)
                if line is not None:
                    return item, line, after

        return answer(after)

    def unsendable(self, item: Item, problem: str | Failure) -> None:
        """An item that cannot be sent is skipped; say so once per item, naming its plugin."""
        if item.id in self.unsendable_seen:
            return
        if len(self.unsendable_seen) >= UNSENDABLE_REMEMBERED:
            self.unsendable_seen.clear()  # bounded memory: at worst a line is logged again
        self.unsendable_seen.add(item.id)
        owner = self.type_plugins.get(item.type, "unknown")
        self.metrics.unsendable.labels(item.type).inc()
        if isinstance(problem, Failure):
            plugins.plugin_failed(owner, f"item type {item.type} (rendering item {item.id})", problem, traceback=True)
        self.log.warn(
            "item {id} ({type}, plugin {plugin}) cannot be sent and is skipped: {problem}",
            id=item.id, type=item.type, plugin=owner,
            problem=problem if isinstance(problem, str) else "its plugin failed to render it",
        )

    def revoke(self, change) -> None:
        """A client was removed or its token rotated (store.changes): close the connections it concerns."""
        reason = Err.CLIENT_REMOVED if change.kind == store.CLIENT_REMOVED else Err.TOKEN_CHANGED
        # A hello checked before the change whose answer is still on its way is caught
        # when that answer arrives (Connection._identified).
        self.revocations[change.subject] = (change.id, reason)
        closed = [c for c in self.connections if c.session.client_id == change.subject and c.as_of_change < change.id]
        for connection in closed:
            connection.close_with(reason)
        if closed:
            self.log.info("closed {n} connection(s) of client {id}: {kind}", n=len(closed), id=change.subject,
                          kind=change.kind)

    def refuse_anonymous(self) -> int:
        """Anonymous clients are no longer served (SIGHUP): close their connections; returns how many."""
        self.anonymous = False
        closed = 0
        for connection in list(self.connections):
            session = connection.session
            session.anonymous = False  # a hello being checked now must succeed to go on
            if session.client_id is None and session.mode is not Mode.WAITING and session.mode is not Mode.HELLO:
                connection.close_with(Err.ANONYMOUS_REFUSED)
                closed += 1
        return closed

    def now(self) -> datetime:
        # To the hundredth of a second: recent windows are hours or days, and a busy
        # daemon asks for the time on every query.
        seconds = self.clock.seconds()
        tick = int(seconds * 100)
        if tick != self._now_tick:
            self._now_tick = tick
            self._now = datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)
        return self._now


UNSENDABLE_REMEMBERED = 10_000  # ids of unsendable items remembered, so that each is logged once

# Each limit's setting, as `Server` names it.
_LIMIT_FIELDS = {
    "max_connections": "max_connections",
    "max_connections_per_address": "max_per_address",
    "max_unidentified_per_address": "max_unidentified_per_address",
}

# TCP keep-alive, once `Server.keepalive` seconds of silence have passed: a probe every
# KEEPALIVE_INTERVAL seconds, and the peer is declared dead after KEEPALIVE_PROBES
# unanswered ones (so a vanished peer goes after keepalive + 60 s, not the kernel's 2 h 11 min).
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 6


def tune_keepalive(sock, idle: float) -> None:
    """Make the kernel's keep-alive find a dead peer after `idle` seconds of silence plus a minute.

    TCP_USER_TIMEOUT bounds the same wait when data is outstanding (a `notif:` sent to a
    peer that vanished is retransmitted, and keep-alive does not probe meanwhile: ~15 min).
    The options are Linux's; other systems keep their defaults.
    """
    idle = max(1, int(idle))
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", (idle + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES) * 1000),
    ):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


# The transports whose socket the fast path may write to directly: plain TCP only. The
# fast path reads two attributes of Twisted's FileDescriptor buffer (dataBuffer and
# _tempDataLen); tests/unit/test_wire.py checks them against the installed Twisted.
_DIRECT_TRANSPORTS = (tcp.Server,)


def direct_socket(transport) -> object | None:
    """The socket of a transport the fast path may use, or None (TLS, wrappers, test transports)."""
    if type(transport) not in _DIRECT_TRANSPORTS or getattr(transport, "TLS", True):
        return None
    if not hasattr(transport, "_tempDataLen") or not hasattr(transport, "dataBuffer"):
        return None  # a Twisted whose buffer we do not know: stay on the normal path
    return transport.socket


def write(transport, sock, data: bytes) -> bool:
    """Write `data` to `transport`, directly to `sock` when nothing is buffered before it.

    Returns True when the kernel took all of it at once (nothing is left unsent).
    """
    if (
        sock is not None
        and not transport.dataBuffer
        and not transport._tempDataLen
        and transport.connected
        and not transport.disconnecting
        and not transport.TLS
    ):
        try:
            sent = sock.send(data)
        except OSError:
            # Full (EAGAIN) or broken (EPIPE, ECONNRESET): the transport retries, or
            # reports the loss through connectionLost, as it would have anyway.
            sent = 0
        if sent == len(data):
            return True
        data = data[sent:]
    transport.write(data)
    return False


def unsent(transport) -> int:
    """Bytes written to a transport and not yet taken by the kernel (0 when it cannot tell)."""
    return len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)


class Connection(Protocol):
    """One client connection: a Session and the transport it speaks through."""

    log = Logger()

    # Per-connection state is in slots: memory per idle client. Protocol itself
    # has no __slots__, so Twisted's own attributes (transport, connected) still live in
    # the instance __dict__.
    __slots__ = (
        "server", "session", "on_close", "last_heard", "_reading", "_write_blocked", "_presence", "_socket",
        "address", "as_of_change", "_unidentified", "_hello_timer",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.session = Session(server.type_names, server.max_line, server.anonymous)
        self.on_close = None  # called with this connection once it is closed (graceful stop)
        self.last_heard = server.clock.seconds()  # when the client last sent something (idle timeout)
        self.address = "local"  # the client's source address (per-address limits)
        self._reading = True  # whether the transport is reading from the client
        self._write_blocked = False  # the transport's buffer is full: the client is not reading
        self._presence = None  # Deferred of this connection's presence row, for a named client
        self._socket = None  # set at connect when the write fast path applies
        self.as_of_change = 0  # a named client: the newest change (store.changes) when its hello was checked
        # Counted in server.unidentified until a successful hello (Server.admit counted it).
        self._unidentified = not server.anonymous
        self._hello_timer = None  # closes the connection at limits.hello_timeout

    def connectionMade(self) -> None:
        # As a streaming producer we hear when the client stops reading (our write buffer
        # fills up), and then stop reading its requests, so no buffer grows without bound.
        self.transport.registerProducer(self, True)
        self._socket = direct_socket(self.transport)
        self.server.connections.add(self)
        # Idle connections in notification mode stay up for hours: TCP keep-alives let the
        # kernel find the peers that vanished without a word (docs/security.md). And no
        # Nagle: `will send notifs` then `notif: <type>` are two small writes, and Nagle
        # would hold the second until the client's delayed ACK of the first (up to 40 ms
        # on Linux, 200 ms elsewhere) on a real network.
        for option in ("setTcpKeepAlive", "setTcpNoDelay"):  # TCP (and TLS over it) only
            set_option = getattr(self.transport, option, None)
            if set_option is not None:
                set_option(True)
        sock = getattr(self.transport, "socket", None)  # TLS wrappers pass it on
        if self.server.keepalive is not None and getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            tune_keepalive(sock, self.server.keepalive)
        if self._unidentified and self.server.hello_timeout is not None:
            # From connect, whatever the client sends meanwhile: a byte at a time does not
            # hold the connection open.
            self._hello_timer = self.server.clock.callLater(self.server.hello_timeout, self._no_hello_in_time)

    def dataReceived(self, data: bytes) -> None:
        self.last_heard = self.server.clock.seconds()
        self._carry_out(self.session.receive(data))

    def connectionLost(self, reason=None) -> None:
        self._socket = None
        self.connected = 0  # Twisted sets it at connect but never clears it; _answer reads it
        if self in self.server.connections:
            self.server.connections.discard(self)
            self.server.left(self.address)
        self._identified_or_gone()
        self.server.hub.unsubscribe(self)
        if self._presence is not None:
            self._presence.addCallback(lambda presence_id: self.server.db.run(store.client_disconnected, presence_id))
            self._presence.addErrback(lambda failure: None)  # logged by the database
        if self.on_close is not None:
            self.on_close(self)

    # --- from the hub -----------------------------------------------------------------------

    def item_added(self, type_name: str) -> bool:
        """The hub's news; returns whether a notification went out."""
        actions = self.session.item_added(type_name)
        for action in actions:
            self._send(action.data)
        return bool(actions)

    def _send(self, data: bytes) -> None:
        if not self.connected:
            return  # dropped below, while answering a pipeline: the rest goes nowhere
        if write(self.transport, self._socket, data):
            return
        # Some bytes wait in our buffer. A client that lets them pile up past the cap does
        # not read: drop it rather than hold its data (flow control already stopped
        # reading its requests; a pipeline read before that could still be long).
        cap = self.server.max_unsent
        if cap is not None and unsent(self.transport) > cap:
            self.log.info("dropping a client that does not read ({bytes} bytes unsent)", bytes=unsent(self.transport))
            self.server.metrics.closed["max_unsent_bytes"].inc()
            self.connected = 0
            self.transport.abortConnection()

    def idle_for(self, now: float) -> float:
        """Seconds since the client last sent something; 0 in notification mode, where silence is normal."""
        if self.session.mode is Mode.NOTIF or self.session.waiting or self.transport.disconnecting:
            return 0.0
        return now - self.last_heard

    def close_idle(self) -> None:
        self.close_with(Err.IDLE, "idle_timeout")

    def _no_hello_in_time(self) -> None:
        self._hello_timer = None
        self.close_with(Err.NO_HELLO_IN_TIME, "hello_timeout")

    def close_with(self, error: Send, limit: str | None = None) -> None:
        """Say why in one line, then close; nothing is sent after it (a hello or a query still
        with the database is answered to no one). `limit`: the setting that closes it, counted."""
        if limit is not None:
            self.server.metrics.closed[limit].inc()
        self._send(error.data)
        self.server.hub.unsubscribe(self)
        self.transport.loseConnection()
        self.connected = 0

    def _identified_or_gone(self) -> None:
        """No longer waiting for a hello: a successful one came, or the connection closed."""
        if self._unidentified:
            self._unidentified = False
            self.server.left(self.address, self.server.unidentified)
        if self._hello_timer is not None:
            if self._hello_timer.active():
                self._hello_timer.cancel()
            self._hello_timer = None

    # --- carrying out actions ---------------------------------------------------------------

    def _carry_out(self, actions) -> None:
        # A Fetch answered from memory appends its answer's actions to this list, and the
        # loop goes on over them instead of recursing: a client may pipeline thousands of
        # `random?`. (The session hands over a new list each time: it is ours to extend.)
        for action in actions:
            match action:  # the commonest first: each case is an isinstance check
                case Send(data):
                    self._send(data)
                case Fetch(type_name, after):
                    actions.extend(self._fetch(type_name, after))
                case MarkRead(client_id, type_name, item_id):
                    self.server.read_marks.mark(client_id, type_name, item_id)
                case Identify(name, token):
                    self._identify(name, token)
                case Subscribe():
                    latest = self.server.hub.subscribe(self)
                    self._carry_out(self.session.subscribed(latest))
                case Unsubscribe():
                    self.server.hub.unsubscribe(self)
        self._update_reading()

    def _answer(self, actions) -> None:
        if self.connected:
            self._carry_out(actions)

    def _fetch(self, type_name: str, after: int, checked: bool = False) -> list:
        """Ask for the item a query returns; returns the answer's actions if known at once."""
        item_type = self.server.types[type_name]
        hub = self.server.hub
        if not checked and hub.behind():
            # A post was announced and memory may not hold it yet: wait for the catch-up (it
            # runs on its own database thread) rather than ask the database.
            d = hub.caught_up()
            d.addCallbacks(self._caught_up, self._from_store, callbackArgs=(type_name, after),
                           errbackArgs=(item_type, after))
            return []
        known, item = self.server.unread_in_memory(item_type, after, checked)
        if known:
            return self._answer_with(item, item_type)
        self._from_store(None, item_type, after)
        return []

    def _caught_up(self, _: object, type_name: str, after: int) -> None:
        if self.connected:
            self._carry_out(self._fetch(type_name, after, checked=True))

    def _from_store(self, _: object, item_type: ItemType, after: int) -> None:
        d = self.server.unread_in_store(item_type, after)
        d.addCallbacks(self._fetched, self._db_failed, callbackArgs=(item_type,))

    def _fetched(self, item: Item | None, item_type: ItemType) -> None:
        if self.connected:
            self._carry_out(self._answer_with(item, item_type))

    def _answer_with(self, item: Item | None, item_type: ItemType) -> list:
        if item is None:
            return self.session.fetched(self.server.fresh(item_type), None)
        line = self.server.render(item, item_type)
        if line is None:
            return self.session.skipped(item.id)
        return self.session.fetched(line, item.id)

    def _identify(self, name: str, token: str) -> None:
        limiter, ticket = self.server.hello_limiter, None
        if limiter is not None:
            # Counted as a failure while it is checked: hellos sent in parallel cannot
            # all be checked before the first wrong one is counted.
            ticket = limiter.attempt(self.address)
            if ticket is None:
                self.server.metrics.hellos["throttled"].inc()
                self._carry_out(self.session.throttled())
                return
        d = self.server.db.run(store.identify, name, token)
        d.addCallbacks(self._identified, self._hello_not_checked, callbackArgs=(ticket,), errbackArgs=(ticket,))

    def _identified(self, found: store.Identity | None, ticket: float | None) -> None:
        if found is not None and ticket is not None:
            self.server.hello_limiter.forgive(self.address, ticket)
        self.server.metrics.hellos["refused" if found is None else "accepted"].inc()
        if not self.connected:
            return
        if found is None:
            self.log.info("failed hello from {address}", address=self.address)
            self._carry_out(self.session.identified(None, {}))
            return
        # Revoked after the check and before this answer (the hub read the change first).
        revocation = self.server.revocations.get(found.client_id)
        if revocation is not None and revocation[0] > found.as_of_change:
            self.close_with(revocation[1])
            return
        self.as_of_change = found.as_of_change
        cursors = dict(found.cursors)
        # Marks of this client's earlier connections may still be on their way to the database.
        for type_name, item_id in self.server.read_marks.cursors_of(found.client_id).items():
            if item_id > cursors.get(type_name, 0):
                cursors[type_name] = item_id
        self._presence = self.server.db.run(store.client_connected, found.client_id, self.server.node)
        self._identified_or_gone()
        self._carry_out(self.session.identified(found.client_id, cursors, found.types))

    def _hello_not_checked(self, failure, ticket: float | None) -> None:
        if ticket is not None:  # the database failed: not the client's failure
            self.server.hello_limiter.forgive(self.address, ticket)
        self._db_failed(failure)

    def _db_failed(self, failure) -> None:
        self._answer(self.session.failed())  # the database logged it, once per outage

    # --- flow control -------------------------------------------------------------------------

    def _update_reading(self) -> None:
        # Read from the client only when the session can take a line and the client
        # reads what we write: while a request is with the database the following lines
        # wait in the kernel, not in our memory.
        want = not self.session.waiting and not self._write_blocked
        if want != self._reading and self.connected:
            self._reading = want
            if want:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()

    def pauseProducing(self) -> None:
        self._write_blocked = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._write_blocked = False
        self._update_reading()

    def stopProducing(self) -> None:
        pass


class _Refused(Protocol):
    """A connection over a limit: one ERR line, then closed."""

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connectionMade(self) -> None:
        self.transport.write(self.line)
        self.transport.loseConnection()


class ConnectionFactory(Factory):
    noisy = False  # one log line per connection is not worth it

    def __init__(self, server: Server) -> None:
        self.server = server

    def buildProtocol(self, addr) -> Protocol:
        server = self.server
        address = getattr(addr, "host", "local")
        refusal = server.admit(address)
        if refusal is not None:
            return _Refused(refusal)
        connection = Connection(server)
        connection.address = address
        return connection
