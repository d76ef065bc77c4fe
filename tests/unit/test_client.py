"""The client library against the real server protocol, connected in memory (twisted.test.iosim);
failover between in-memory nodes on a task.Clock."""
from __future__ import annotations

import pytest
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.test import iosim
from twisted.test.iosim import connectedServerAndClient
from zope.interface import implementer

from notifd import store
from notifd.client import Failover, NotifClient, NotifdError
from notifd.watch import connect_endpoint, follow, watch
from tests import transcript
from tests.harness import Rig


class RecordingClient(NotifClient):
    """Remembers every line from the server, to check what the library sent back."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def lineReceived(self, raw):
        self.lines.append(raw.rstrip(b"\r").decode())
        super().lineReceived(raw)


@pytest.fixture
def rig(database, item_types):
    return Rig(database, item_types)


@pytest.fixture
def pair(rig):
    client, server, pump = connectedServerAndClient(lambda: rig.factory.buildProtocol(None), RecordingClient)
    return client, server, pump


def result(d, pump):
    pump.flush()
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred did not fire"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def test_the_tutorial_session_through_the_library(rig, pair):
    client, server, pump = pair
    for type_name, text in transcript.POSTS_BEFORE:
        rig.post(type_name, text)
    assert result(client.random(), pump) == 456902234
    assert result(client.classified(), pump) == "Nice appart in the 11e."
    heard = []
    assert result(client.notif(heard.append), pump) is None
    rig.post("classified", "Flat share in the 20e.")
    pump.flush()
    rig.post("random", "89765234756")
    pump.flush()
    assert heard == ["classified", "random"]  # the library sent the OK in between
    result(client.stop_notif(), pump)
    assert result(client.random(), pump) == 89765234756
    result(client.notif(heard.append), pump)
    assert heard == ["classified", "random", "classified"]
    assert not [line for line in client.lines if line.startswith("ERR")]


def test_requests_made_together_are_queued_and_answered_in_order(rig, pair):
    client, server, pump = pair
    rig.post("classified", "a")
    rig.post("classified", "b")
    first, second, third = client.classified(), client.classified(), client.classified()
    assert [result(d, pump) for d in (first, second, third)] == ["a", "b", ""]


def test_err_fails_the_request_and_the_next_one_still_works(pair):
    client, server, pump = pair
    with pytest.raises(NotifdError, match="^unknown type$"):
        result(client.query("nosuchtype"), pump)
    assert isinstance(result(client.random(), pump), int)


@pytest.mark.parametrize("call", [
    lambda c: c.query("random?\r\nclassified"),
    lambda c: c.query("random classified"),
    lambda c: c.query(""),
    lambda c: c.hello("kiosk", "tok\nen"),
    lambda c: c.hello("two words", "token"),
    lambda c: c.notif(print, ["classified", "random\rrandom"]),
])
def test_an_argument_that_is_not_one_word_is_refused_before_anything_is_sent(pair, call):
    # It would send two commands for one request: every reply after it would answer the wrong one.
    client, server, pump = pair
    with pytest.raises(ValueError, match="must be one word"):
        call(client)
    pump.flush()
    assert client.lines == []
    assert isinstance(result(client.random(), pump), int)  # in step
    assert client.lines and client.lines[-1].isdigit()


def test_hello(rig, pair):
    client, server, pump = pair
    token = rig.database.call(store.add_client, "kiosk")
    with pytest.raises(NotifdError, match="wrong token"):
        result(client.hello("kiosk", "nope"), pump)
    assert result(client.hello("kiosk", token), pump) is None


def test_stop_notif_from_the_callback_sends_no_ok(rig, pair):
    client, server, pump = pair
    stops = []
    result(client.notif(lambda type_name: stops.append(client.stop_notif())), pump)
    rig.post("classified", "ad")
    pump.flush()
    assert len(stops) == 1 and result(stops[0], pump) is None
    assert client.lines == ["will send notifs", "notif: classified", "OK"]


def test_subscription_filter(rig, pair):
    client, server, pump = pair
    heard = []
    result(client.notif(heard.append, types=["random"]), pump)
    rig.post("classified", "ad")
    rig.post("random", "1")
    pump.flush()
    assert heard == ["random"]


REQUESTS = {
    "random": lambda client: client.random(),
    "query": lambda client: client.query("classified"),
    "hello": lambda client: client.hello("kiosk", "token"),
    "notif": lambda client: client.notif(lambda type_name: None),
    "stop_notif": lambda client: client.stop_notif(),
}


def lose_uncleanly(client, server):
    # iosim hands the client its transport's disconnectReason when the server side closes.
    client.transport.disconnectReason = ConnectionLost("the network went down")
    server.transport.loseConnection()


@pytest.mark.parametrize("kind", REQUESTS)
@pytest.mark.parametrize(
    "close, reason",
    [
        (lambda client, server: client.transport.loseConnection(), ConnectionDone),
        (lose_uncleanly, ConnectionLost),
    ],
    ids=["closed", "lost"],
)
def test_pending_requests_fail_when_the_connection_is_lost(pair, kind, close, reason):
    client, server, pump = pair
    in_flight, queued = REQUESTS[kind](client), REQUESTS[kind](client)
    close(client, server)
    pump.flush()
    late = REQUESTS[kind](client)  # made after the loss: fails at once, with the same reason
    for d in (in_flight, queued, late):
        with pytest.raises(reason):
            result(d, pump)
    if reason is ConnectionDone:  # `closed` fires with None on a clean close, else fails with why
        assert result(client.closed, pump) is None
    else:
        with pytest.raises(reason):
            result(client.closed, pump)


def test_the_watch_loop_prints_each_new_item_once(rig, pair):
    client, server, pump = pair
    rig.post("classified", "already there")
    printed = []
    follow(client, (), printed.append)
    pump.flush()
    assert printed == ["classified: already there"]
    rig.post("classified", "new ad")
    pump.flush()
    rig.post("random", "42")
    pump.flush()
    rig.post("classified", "x")
    rig.post("classified", "y")
    pump.flush()
    assert printed == ["classified: already there", "classified: new ad", "random: 42", "classified: x", "classified: y"]
    assert not [line for line in client.lines if line.startswith("ERR")]


# --- several nodes: Failover ------------------------------------------------------------
# Nodes are in-memory endpoints: each connects the client to a server of its own (its own
# hub), all over one database, as nodes over one PostgreSQL. Time is a task.Clock.


@implementer(IStreamClientEndpoint)
class Node:
    """A node reached in memory; `up = False` refuses connections."""

    def __init__(self, rig=None):
        self.rig = rig
        self.up = rig is not None
        self.attempts = 0
        self.pumps = []
        self.servers = []

    def connect(self, factory):
        self.attempts += 1
        if not self.up:
            return defer.fail(ConnectionRefusedError("node down"))
        client = factory.buildProtocol(None)
        server = self.rig.factory.buildProtocol(None)
        pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=False)
        self.pumps.append(pump)
        self.servers.append(server)
        return defer.succeed(client)

    def flush(self):
        for pump in self.pumps:
            pump.flush()

    def drop(self):
        """The node goes down: its connections are lost, new ones refused."""
        self.up = False
        for server in self.servers:
            server.transport.loseConnection()
        self.flush()


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def two_nodes(database, item_types):
    return Node(Rig(database, item_types)), Node(Rig(database, item_types))


def test_failover_skips_a_node_that_is_down(clock, two_nodes):
    down, up = Node(), two_nodes[1]
    failover = Failover(None, [down, up], clock=clock)
    failover.start()
    connected = failover.when_connected()
    assert not connected.called
    clock.advance(5)  # the back-off after the refused attempt
    client = result(connected, up.pumps[0])
    assert (down.attempts, up.attempts) == (1, 1)
    assert isinstance(result(client.random(), up.pumps[0]), int)


def test_failover_moves_to_the_next_node_when_its_node_goes_down(clock, two_nodes):
    node_a, node_b = two_nodes
    token = node_a.rig.database.call(store.add_client, "kiosk")
    for text in ("first ad", "second ad"):
        node_a.rig.post("classified", text)
    node_b.rig.hub.wake()  # as every node's hub is woken by a post (LISTEN/NOTIFY)
    hellos = []

    def on_connect(client):
        hellos.append(client)
        return client.hello("kiosk", token)

    failover = Failover(None, [node_a, node_b], on_connect, clock=clock)
    failover.start()
    node_a.flush()
    client = result(failover.when_connected(), node_a.pumps[0])
    assert result(client.classified(), node_a.pumps[0]) == "first ad"

    node_a.drop()
    reconnected = failover.when_connected()
    clock.advance(5)
    node_b.flush()
    client = result(reconnected, node_b.pumps[0])
    assert len(hellos) == 2  # on_connect ran again, on node B
    # The read state lives in the database both nodes share.
    assert result(client.classified(), node_b.pumps[0]) == "second ad"


def test_backoff_grows_while_every_node_is_down(clock):
    nodes = [Node(), Node()]
    failover = Failover(None, nodes, clock=clock, initial_delay=1.0, max_delay=8.0, jitter=lambda: 0.25)
    failover.start()
    times, tried = [clock.seconds()], [nodes[0].attempts]
    for _ in range(7):
        (retry,) = clock.getDelayedCalls()
        clock.advance(retry.getTime() - clock.seconds())
        times.append(clock.seconds())
        tried.append(nodes[0].attempts + nodes[1].attempts)
    # Times 1.5 from 1 s up to 8 s, each plus the jitter; the nodes in turn.
    assert [b - a for a, b in zip(times, times[1:])] == [1.75, 2.5, 3.625, 5.3125, 7.84375, 8.25, 8.25]
    assert tried == [1, 2, 3, 4, 5, 6, 7, 8] and (nodes[0].attempts, nodes[1].attempts) == (4, 4)
    failover.stop()


def test_watch_fails_over_and_stops_on_a_refused_hello(clock, two_nodes):
    node_a, node_b = two_nodes
    node_a.rig.post("classified", "already there")
    printed = []
    ended = watch(None, [node_a, node_b], None, None, (), printed.append, clock=clock)
    node_a.flush()
    assert printed == ["classified: already there"]
    node_a.drop()
    clock.advance(5)
    node_b.flush()
    node_b.rig.post("classified", "after the failover")
    node_b.flush()
    # Anonymous: the new connection starts fresh, so it prints both.
    assert printed[1:] == ["classified: already there", "classified: after the failover"]
    assert not ended.called

    refused = watch(None, [node_b], "nobody", "wrong", (), printed.append, clock=clock)
    node_b.flush()
    clock.advance(0)
    with pytest.raises(NotifdError):
        result(refused, node_b.pumps[-1])


def test_the_client_turns_nagle_off_on_tcp():
    from twisted.internet.testing import StringTransport

    class TcpTransport(StringTransport):
        no_delay = False

        def setTcpNoDelay(self, enabled):
            self.no_delay = enabled

    tcp, other = TcpTransport(), StringTransport()
    NotifClient().makeConnection(tcp)
    NotifClient().makeConnection(other)  # not TCP: nothing to set, nothing fails
    assert tcp.no_delay is True


@pytest.mark.parametrize("name, token, types, error", [
    (None, None, ("nosuch",), "unknown type"),
    ("nobody", "wrong", (), "unknown client or wrong token"),
])
def test_a_refused_watch_stops_its_failover_and_closes_the_connection_in_order(clock, two_nodes, name, token, types,
                                                                                  error):
    node = two_nodes[0]
    ended = watch(None, [node], name, token, types, [].append, clock=clock)
    node.flush()
    clock.advance(0)  # the watch ends on the turn after the refusal
    # Losing the connection once the service stopped raised automat's NoTransition
    # (an "Unhandled Error" after notifctl's one line).
    node.flush()
    with pytest.raises(NotifdError, match=error):
        result(ended, node.pumps[0])
    assert node.servers[0].transport.disconnected
    assert clock.getDelayedCalls() == []  # no reconnection pending


@pytest.mark.parametrize("listen, connect", [
    ("tcp:8789:interface=127.0.0.1", "tcp:127.0.0.1:8789"),
    ("tcp:8789:interface=127.0.0.1:backlog=1024", "tcp:127.0.0.1:8789"),
    ("tcp:8789", "tcp:127.0.0.1:8789"),  # every address: the loopback one
    ("tcp:8789:interface=0.0.0.0", "tcp:127.0.0.1:8789"),
    ("tcp:8789:10.0.0.2:50", "tcp:10.0.0.2:8789"),  # tcp:PORT:INTERFACE:BACKLOG
    ("tcp:port=8789:interface=10.0.0.1", "tcp:10.0.0.1:8789"),
    (r"tcp:8789:interface=\:\:", r"tcp:\:\:1:8789"),
    ("tcp6:8789", r"tcp:\:\:1:8789"),
    (r"tcp6:8789:interface=fd00\:\:5", r"tcp:fd00\:\:5:8789"),
    ("ssl:8790:privateKey=/k.pem:certKey=/c.pem:interface=notifd.example", "tls:notifd.example:8790"),
    ("ssl:8790:privateKey=/k.pem", "tls:127.0.0.1:8790"),
    ("unix:/run/notifd/notifd.sock:mode=660", "unix:path=/run/notifd/notifd.sock"),
    ("systemd:domain=INET:name=notifd", None),  # the socket's address is systemd's
    ("tcp:0:interface=127.0.0.1", None),  # a port chosen at start
    ("nonsense", None),
])
def test_watch_connects_where_the_daemon_listens(listen, connect):
    assert connect_endpoint(listen) == connect
