"""What the tests share: find it here, not in a test module.

For the unit tests (the server driven without a reactor, on the test database):

- `HeldDatabase`: the real Database, each call held until the test releases it (ordering under test control).
- `LateAnswers`: the real Database run at once, the answers of chosen queries delivered when the test says.
- `Rig`: a Server with its Hub on a task.Clock, connecting clients over StringTransport and posting items.
- `NamedRig`: a Rig on a HeldDatabase, with classified ads posted and a named client connected.
- `TcpPair`: a real loopback TCP connection under Twisted's tcp.Server, with no reactor running.
- `said`: what a StringTransport received since the last call.
- `DATABASES`: the parameters, and test ids, of the fixtures that run a test on each database.
- `clock_at_now`: a task.Clock reading the current time, as the stored items' timestamps do.
- `plugin`: a plugin module made of hook functions, for a plugin manager.

For the integration tests (a real notifd on a port):

- `subscribe`, `receive_all`: many plain-socket clients in notification mode, and the fan-out they hear.

The `rig` fixture (tests/conftest.py) is a Rig on the test database.
"""
from __future__ import annotations

import selectors
import socket
import time
import types
from collections import deque

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from notifd import hookimpl, store
from notifd.hub import Hub
from notifd.testing import TIMEOUT
from notifd.wire import ConnectionFactory, Server
from tests.posts import add_item

# A test on each database shows it in its id: test_x[sqlite], test_x[postgresql].
DATABASES = ("sqlite", "postgresql")


def clock_at_now() -> task.Clock:
    """A task.Clock at the current time: windows and back-offs compare it with items' created_at."""
    clock = task.Clock()
    clock.advance(time.time())
    return clock


def plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, f in hooks.items():
        setattr(module, hook_name, hookimpl(f))
    return module


class HeldDatabase:
    """The real Database, but each call waits until the test releases it: timing under test control."""

    def __init__(self, database):
        self.database = database
        self.held: deque = deque()

    def run(self, f, *args, **kwargs):
        d = defer.Deferred()
        self.held.append((f, args, kwargs, d))
        return d

    def release(self):
        """Run every held call, and those they lead to."""
        while self.held:
            self.release_one()

    def release_one(self):
        f, args, kwargs, d = self.held.popleft()
        self.database.run(f, *args, **kwargs).chainDeferred(d)


class WriteBetweenStatements:
    """A connection that runs `write()` right after its `after`-th statement: another
    transaction committing between two statements of one that reads in several (on
    PostgreSQL each statement has its own snapshot). `statements` counts what ran."""

    def __init__(self, conn, after: int, write) -> None:
        self.conn, self.after, self.write, self.statements = conn, after, write, 0

    def execute(self, *args, **kwargs):
        result = self.conn.execute(*args, **kwargs)
        self.statements += 1
        if self.statements == self.after:
            self.write()
        return result

    def __getattr__(self, name):
        return getattr(self.conn, name)


class Rig:
    """A server with its hub, and helpers to connect clients and post items."""

    def __init__(self, database, item_types, db=None):
        self.database = database
        self.clock = clock_at_now()
        self.db = db or database
        windows = {name: t.window for name, t in item_types.items()}
        self.hub = Hub(self.db, self.clock, windows)
        self.hub.notifiers = [("notifd.hub", n) for n in _notifiers(self.hub)]
        self.hub.start()
        if isinstance(self.db, HeldDatabase):
            self.db.release()
        self.server = Server(self.db, self.hub, item_types, self.clock, 4096, "test-node")
        self.hub.revoked = self.server.revoke  # as the service wires them
        self.factory = ConnectionFactory(self.server)

    def connect(self):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def post(self, type_name, text):
        item_id, _ = self.database.call(add_item, type_name, text)
        self.hub.wake()
        if isinstance(self.db, HeldDatabase):
            self.db.release()
        self.clock.advance(0)  # the push runs at the end of the reactor turn
        return item_id


def _notifiers(hub):
    found = []
    hub.register_notifiers(register=found.append)
    return found


def said(transport) -> bytes:
    data = transport.value()
    transport.clear()
    return data


class LateAnswers:
    """The real Database, run at once; but the answers of `slow` queries reach the reactor only
    when the test delivers them: a check done before a change, heard of after it."""

    def __init__(self, database, slow):
        self.database, self.slow, self.late = database, slow, []

    def run(self, f, *args, **kwargs):
        d = self.database.run(f, *args, **kwargs)
        if f not in self.slow:
            return d
        late = defer.Deferred()
        self.late.append((d, late))
        return late

    def deliver(self):
        """Deliver the answers held now (not those of the queries they lead to)."""
        current, self.late = self.late, []
        for d, late in current:
            d.chainDeferred(late)


class NamedRig:
    """A rig whose database calls are held, `ads` classified ads, and a named client connected."""

    def __init__(self, database, item_types, ads: int):
        self.held = HeldDatabase(database)
        self.rig = Rig(database, item_types, db=self.held)
        self.ids = [self.rig.post("classified", f"ad {n}") for n in range(ads)]
        self.token = database.call(store.add_client, "kiosk")
        self.proto, self.transport = self.connect()

    def connect(self):
        proto, transport = self.rig.connect()
        proto.dataReceived(f"hello kiosk {self.token}\n".encode())
        self.held.release()  # the hello, then its presence row
        assert said(transport) == b"OK\r\n"
        return proto, transport


class TcpPair:
    """A real TCP connection on loopback: `server` wrapped in Twisted's tcp.Server over a MemoryReactor."""

    def __init__(self, protocol):
        import socket

        from twisted.internet import tcp
        from twisted.internet.testing import MemoryReactorClock

        listener = socket.create_server(("127.0.0.1", 0))
        self.peer = socket.create_connection(listener.getsockname())
        sock, address = listener.accept()
        listener.close()
        sock.setblocking(False)
        self.peer.settimeout(5)
        self.reactor = MemoryReactorClock()
        self.protocol = protocol
        self.transport = tcp.Server(sock, protocol, address, None, 1, self.reactor)
        protocol.makeConnection(self.transport)

    def __enter__(self) -> "TcpPair":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, size):
        data = b""
        while len(data) < size:
            chunk = self.peer.recv(size - len(data))
            assert chunk, "closed"
            data += chunk
        return data

    def close(self):
        self.peer.close()
        if hasattr(self.transport, "socket"):  # connectionLost already closed it
            self.transport.socket.close()


def subscribe(port: int, count: int) -> list[socket.socket]:
    """`count` clients of 127.0.0.1:`port`, each in notification mode."""
    clients = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.sendall(b"notif\r\n")
        clients.append(sock)
    for sock in clients:
        assert sock.recv(64) == b"will send notifs\r\n"
    return clients


def receive_all(clients: list[socket.socket], expected: bytes, timeout: float = 3 * TIMEOUT) -> tuple[float, float]:
    """Wait until every client has received `expected`; returns the times (time.monotonic) of the
    first and the last arrival."""
    selector = selectors.DefaultSelector()
    for sock in clients:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    received: dict[socket.socket, bytes] = {}
    first = last = None
    deadline = time.monotonic() + timeout
    while len(received) < len(clients) or any(not data.endswith(b"\n") for data in received.values()):
        if time.monotonic() > deadline:
            missing = len(clients) - sum(data.endswith(b"\n") for data in received.values())
            raise AssertionError(f"{missing} of {len(clients)} clients were not notified")
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            received[sock] = received.get(sock, b"") + sock.recv(64)
            last = time.monotonic()
            first = first or last
            if received[sock].endswith(b"\n"):
                selector.unregister(sock)
    selector.close()
    assert set(received.values()) == {expected}
    for sock in clients:
        sock.setblocking(True)
    return first, last
