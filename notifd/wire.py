# The Twisted adapter of the protocol: feeds each connection's bytes to its `Session` and
# carries out the actions it returns. The only module that sees transports, producers and
# disconnects; it decides nothing about the protocol itself (protocol.py does).
#
# Rules: every database call goes through `Database.run` (never on the reactor thread);
# an answer that arrives after the client left is dropped; plugin code (rendering, fresh
# values) cannot raise out of here.
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from . import store
from .items import Item, ItemType, Window
from .protocol import Fetch, Identify, MarkRead, Send, Session, Subscribe, Unsubscribe


@dataclass
class Server:
    """What every connection shares."""

    db: object  # db.Database
    hub: object  # hub.Hub
    types: Mapping[str, ItemType]
    windows: Mapping[str, Window]
    clock: object  # IReactorTime
    max_line: int
    node: str
    metrics: object = None  # metrics.Metrics
    anonymous: bool = True  # clients may use the protocol without `hello`
    hello_limiter: object = None  # limits.FailureLimiter; None: no limit
    connections: set = field(default_factory=set)  # every open Connection

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc).replace(tzinfo=None)


class Connection(Protocol):
    """One client connection: a Session and the transport it speaks through."""

    log = Logger()

    def __init__(self, server: Server) -> None:
        self.server = server
        self.session = Session(server.types, server.max_line, server.anonymous)
        self._reading = True  # whether the transport is reading from the client
        self._write_blocked = False  # the transport's buffer is full: the client is not reading
        self._presence = None  # Deferred of this connection's presence row, for a named client
        self.on_close = None  # called with this connection once it is closed (graceful stop)

    def connectionMade(self) -> None:
        self.server.connections.add(self)
        # As a streaming producer we hear when the client stops reading (our write buffer
        # fills up), and then stop reading its requests, so no buffer grows without bound.
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self._carry_out(self.session.receive(data))

    def connectionLost(self, reason=None) -> None:
        self.connected = 0  # Twisted sets it at connect but never clears it; _answer reads it
        self.server.connections.discard(self)
        self.server.hub.unsubscribe(self)
        if self._presence is not None:
            self._presence.addCallback(lambda presence_id: self.server.db.run(store.client_disconnected, presence_id))
            self._presence.addErrback(lambda failure: None)  # logged by the database
        if self.on_close is not None:
            self.on_close(self)

    # --- from the hub -----------------------------------------------------------------------

    def item_added(self, type_name: str) -> bool:
        actions = self.session.item_added(type_name)
        for action in actions:
            self.transport.write(action.data)
        return bool(actions)

    # --- carrying out actions ---------------------------------------------------------------

    def _carry_out(self, actions) -> None:
        for action in actions:
            match action:
                case Send(data):
                    self.transport.write(data)
                case Fetch(type_name, after):
                    self._fetch(type_name, after)
                case Identify(name, token):
                    self._identify(name, token)
                case Subscribe():
                    latest = self.server.hub.subscribe(self)
                    self._carry_out(self.session.subscribed(latest))
                case Unsubscribe():
                    self.server.hub.unsubscribe(self)
                case MarkRead(client_id, type_name, item_id):
                    # A failure was logged by the database; the client may get the item again.
                    self.server.db.run(store.mark_read, client_id, type_name, item_id).addErrback(lambda f: None)
        self._update_reading()

    def _answer(self, actions) -> None:
        if self.connected:
            self._carry_out(actions)

    def _fetch(self, type_name: str, after: int) -> None:
        item_type = self.server.types[type_name]
        window = self.server.windows[type_name]
        d = self.server.db.run(store.next_unread, type_name, after, item_type.pick, window, self.server.now())
        d.addCallbacks(self._fetched, self._db_failed, callbackArgs=(item_type,))

    def _fetched(self, item: Item | None, item_type: ItemType) -> None:
        try:
            if item is not None:
                line, item_id = item_type.render(item), item.id
            elif item_type.fresh is not None:
                line, item_id = item_type.fresh(), None
            else:
                line, item_id = "", None
            if not isinstance(line, str):
                raise TypeError(f"rendered a {type(line).__name__}, not a str")
        except Exception:
            self.log.failure("item type {type} failed to render", type=item_type.name)
            line, item_id = None, None
        self._answer(self.session.fetched(line, item_id))

    def _identify(self, name: str, token: str) -> None:
        limiter, address = self.server.hello_limiter, self._address()
        if limiter is not None and limiter.blocked(address):
            self._carry_out(self.session.throttled())
            return
        d = self.server.db.run(store.identify, name, token)
        d.addCallbacks(self._identified, self._db_failed)

    def _address(self) -> str:
        return getattr(self.transport.getPeer(), "host", "local")

    def _identified(self, found: tuple[int, dict[str, int]] | None) -> None:
        if not self.connected:
            return
        if found is None:
            if self.server.hello_limiter is not None:
                self.server.hello_limiter.failed(self._address())
            self.log.info("failed hello from {address}", address=self._address())
            self._carry_out(self.session.identified(None, {}))
            return
        client_id, cursors = found
        self._presence = self.server.db.run(store.client_connected, client_id, self.server.node)
        self._carry_out(self.session.identified(client_id, cursors))

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


class ConnectionFactory(Factory):
    noisy = False  # one log line per connection is not worth it

    def __init__(self, server: Server) -> None:
        self.server = server

    def buildProtocol(self, addr) -> Connection:
        return Connection(self.server)
