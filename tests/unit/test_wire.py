"""The Twisted adapter (notifd.wire) over StringTransport, with a real SQLite store and a Clock."""
from __future__ import annotations

import pytest
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from notifd import ItemType, Window, store, wire
from tests import transcript
from tests.harness import HeldDatabase, LateAnswers, NamedRig, Rig, TcpPair, said
from tests.posts import add_item


def test_tutorial_session_replays_exactly(rig):
    for type_name, text in transcript.POSTS_BEFORE:
        rig.post(type_name, text)
    proto, transport = rig.connect()
    expected = b""
    for index, (who, line) in enumerate(transcript.load()):
        if who == "C":
            assert transport.value() == expected
            proto.dataReceived(line.encode() + b"\r\n")
        else:
            expected += line.encode() + b"\r\n"
        if index in transcript.POSTS_AFTER_LINE:
            rig.post(*transcript.POSTS_AFTER_LINE[index])
    assert transport.value() == expected


def test_every_client_in_notification_mode_hears_once_per_batch(rig):
    clients = [rig.connect() for _ in range(3)]
    for proto, _ in clients[:2]:
        proto.dataReceived(b"notif\n")
    for _ in range(5):
        rig.database.call(add_item, "classified", "ad")
    rig.hub.wake()
    rig.clock.advance(0)
    for _, transport in clients[:2]:
        assert said(transport) == b"will send notifs\r\nnotif: classified\r\n"
    assert said(clients[2][1]) == b""  # not in notification mode


def test_stop_notif_unsubscribes(rig):
    proto, transport = rig.connect()
    proto.dataReceived(b"notif\nstop_notif\n")
    assert said(transport) == b"will send notifs\r\nOK\r\n"
    rig.post("classified", "ad")
    assert said(transport) == b""
    assert not rig.hub.subscribers


def test_an_ok_pipelined_behind_notif_acknowledges_the_news_sent_on_entering(rig):
    rig.post("classified", "ad")
    proto, transport = rig.connect()
    proto.dataReceived(b"notif\r\nOK\r\n")
    assert said(transport) == b"will send notifs\r\nnotif: classified\r\n"  # no ERR: the OK was for it
    rig.post("classified", "another")
    assert said(transport) == b"notif: classified\r\n"  # acknowledged, so the next one is sent


def test_disconnect_unsubscribes(rig):
    proto, transport = rig.connect()
    proto.dataReceived(b"notif\n")
    proto.connectionLost(None)
    assert not rig.hub.subscribers


def test_named_client_state_is_stored(rig):
    token = rig.database.call(store.add_client, "kiosk")
    first = rig.post("classified", "first")
    rig.post("classified", "second")
    proto, transport = rig.connect()
    proto.dataReceived(f"hello kiosk {token}\r\nclassified?\r\n".encode())
    assert said(transport) == b"OK\r\nfirst\r\n"
    client_id = rig.database.call(store.list_clients)[0].id
    assert rig.database.call(store.client_cursors, client_id) == {"classified": first}
    assert rig.database.call(store.connected_clients) == {client_id: 1}
    proto.connectionLost(None)
    assert rig.database.call(store.connected_clients) == {}
    # A new connection of the same client continues where the first left off.
    proto, transport = rig.connect()
    proto.dataReceived(f"hello kiosk {token}\r\nclassified?\r\nclassified?\r\n".encode())
    assert said(transport) == b"OK\r\nsecond\r\n\r\n"


def test_a_query_after_a_second_wake_up_waits_for_the_check_that_covers_it(database, item_types):
    """Forced: check 1 reads the store before the post commits and answers after it; the
    post's wake-up comes meanwhile, then the query. The query must wait for check 2."""
    late = LateAnswers(database, {store.news_after})
    rig = Rig(database, item_types, db=late)
    late.deliver()  # the start's own check
    proto, transport = rig.connect()
    rig.hub.wake()  # check 1: runs now, before the post; its answer is held
    assert len(late.late) == 1
    rig.database.call(add_item, "classified", "posted after check 1 read")
    rig.hub.wake()  # the post's wake-up: coalesced, check 2 follows check 1
    proto.dataReceived(b"classified?\n")
    assert said(transport) == b"" and len(late.late) == 1  # waiting; no query of its own
    late.deliver()  # check 1 answers: it does not hold the post, the query waits on
    assert said(transport) == b"" and len(late.late) == 1  # check 2 ran, held
    late.deliver()
    assert said(transport) == b"posted after check 1 read\r\n"


def test_the_catch_up_runs_on_a_thread_of_its_own(engine):
    import threading

    from notifd import db as dbmod

    class Reactor:  # deferToThreadPool hands results over through callFromThread
        def callFromThread(self, f, *args, **kwargs):
            f(*args, **kwargs)

    database = dbmod.Database.threaded(engine, Reactor())
    database.start()
    try:
        release = threading.Event()
        database.run(lambda conn: release.wait(10))  # the reader thread is busy (a slow client query)
        done = threading.Event()
        database.run(store.news_after, 0, 0).addCallback(lambda _: done.set())
        assert done.wait(5)  # not behind the reader's work
        release.set()
    finally:
        database.stop()


@pytest.mark.parametrize("revoke, line", [
    (store.rotate_token, b"ERR token changed; hello again with the new one\r\n"),
    (store.remove_client, b"ERR client removed\r\n"),
])
def test_a_hello_checked_before_a_revocation_and_answered_after_it_is_closed(database, item_types, revoke, line):
    late = LateAnswers(database, {store.identify})
    rig = Rig(database, item_types, db=late)
    token = database.call(store.add_client, "kiosk")
    proto, transport = rig.connect()
    proto.dataReceived(f"hello kiosk {token}\nrandom?\n".encode())  # checked now: the token is good
    assert late.late and said(transport) == b""
    database.call(revoke, "kiosk")
    rig.hub.wake()  # the hub reads the change before the hello's answer arrives
    late.deliver()
    assert said(transport) == line  # closed, and the pipelined query is not answered
    assert transport.disconnecting
    # A hello checked after the change is not caught by it.
    if revoke is store.rotate_token:
        token = database.call(store.rotate_token, "kiosk")
        rig.hub.wake()
        proto, transport = rig.connect()
        proto.dataReceived(f"hello kiosk {token}\n".encode())
        late.deliver()
        assert said(transport) == b"OK\r\n" and not transport.disconnecting


def test_wrong_token(rig):
    rig.database.call(store.add_client, "kiosk")
    proto, transport = rig.connect()
    proto.dataReceived(b"hello kiosk nope\r\n")
    assert said(transport) == b"ERR unknown client or wrong token\r\n"


def test_random_draws_a_fresh_number_when_nothing_is_unread(rig):
    proto, transport = rig.connect()
    proto.dataReceived(b"random?\n")
    reply = said(transport)
    assert reply.endswith(b"\r\n") and reply[:-2].isdigit()
    assert rig.database.call(store.list_items) == []  # a fresh draw is not stored


def test_reading_pauses_while_a_request_is_with_the_database(database, item_types):
    held = HeldDatabase(database)
    rig = Rig(database, item_types, db=held)
    rig.hub.wakeup_pending = lambda: True  # the hub may be behind: queries ask the database
    proto, transport = rig.connect()
    proto.dataReceived(b"classified?\nrandom?\n")
    assert transport.producerState == "paused"
    held.release()
    assert transport.producerState == "producing"
    assert said(transport).count(b"\r\n") == 2


def test_an_answer_after_the_client_left_is_dropped(database, item_types):
    held = HeldDatabase(database)
    rig = Rig(database, item_types, db=held)
    rig.post("classified", "ad")
    rig.hub.wakeup_pending = lambda: True  # the hub may be behind: queries ask the database
    proto, transport = rig.connect()
    proto.dataReceived(b"classified?\n")
    proto.connectionLost(None)
    held.release()
    assert transport.value() == b""


def test_database_failure_answers_err_and_keeps_serving(rig, engine):
    rig.hub.wakeup_pending = lambda: True  # the hub may be behind: queries ask the database
    proto, transport = rig.connect()
    engine.dispose()
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items RENAME TO items_gone")
    proto.dataReceived(b"classified?\n")
    assert said(transport) == b"ERR temporarily unavailable\r\n"
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items_gone RENAME TO items")
    proto.dataReceived(b"classified?\n")
    assert said(transport) == b"\r\n"


def _bad_render(item):
    if item.text == "bad":
        raise RuntimeError("boom")
    return item.text


def _unsendable_rig(database, item_types, pick):
    from notifd import Pick

    fresh = (lambda: "fresh") if pick is Pick.NEWEST else None
    types = dict(item_types, flaky=ItemType(name="flaky", render=_bad_render, pick=pick, fresh=fresh))
    rig = Rig(database, types)
    rig.server.type_plugins = {"flaky": "flaky-plugin"}
    from notifd.metrics import Metrics

    rig.server.metrics = Metrics()
    return rig


def _session(rig, named):
    proto, transport = rig.connect()
    if named:
        token = rig.database.call(store.add_client, f"kiosk{len(rig.server.connections)}")
        proto.dataReceived(f"hello kiosk{len(rig.server.connections)} {token}\n".encode())
        assert said(transport) == b"OK\r\n"
    return proto, transport


@pytest.mark.parametrize("named", [False, True], ids=["anonymous", "named"])
def test_an_item_that_cannot_be_rendered_is_skipped_oldest_first(database, item_types, logged, named):
    from twisted.logger import formatEvent

    from notifd import Pick

    rig = _unsendable_rig(database, item_types, Pick.OLDEST)
    first, bad, last = (rig.post("flaky", text) for text in ("first", "bad", "last"))
    proto, transport = _session(rig, named)
    proto.dataReceived(b"flaky?\nflaky?\nflaky?\n")
    # The same answer that met the bad item carries the next one; nothing blocks behind it.
    assert said(transport) == b"first\r\nlast\r\n\r\n"
    assert proto.session.cursors["flaky"] == last
    if named:
        rig.clock.advance(1)  # the read marks' group write
        assert rig.database.call(store.client_cursors, proto.session.client_id) == {"flaky": last}
    # A second client meets it too, and skips it, but it is logged and counted once.
    other, other_transport = _session(rig, named)
    other.dataReceived(b"flaky?\nflaky?\n")
    assert said(other_transport) == b"first\r\nlast\r\n"
    lines = [formatEvent(e) for e in logged if "cannot be sent" in formatEvent(e)]
    assert lines == [f"item {bad} (flaky, plugin flaky-plugin) cannot be sent and is skipped: "
                     "its plugin failed to render it"]
    assert [formatEvent(e) for e in logged if e.get("plugin") == "flaky-plugin" and "failed in" in formatEvent(e)] == [
        f"plugin flaky-plugin failed in item type flaky (rendering item {bad}): RuntimeError: boom"
    ]
    assert rig.server.metrics.registry.get_sample_value("notifd_items_unsendable_total", {"type": "flaky"}) == 1
    assert first < bad < last


@pytest.mark.parametrize("named", [False, True], ids=["anonymous", "named"])
def test_an_item_that_cannot_be_rendered_is_skipped_newest_first(database, item_types, named):
    from notifd import Pick

    rig = _unsendable_rig(database, item_types, Pick.NEWEST)
    rig.post("flaky", "older")
    bad = rig.post("flaky", "bad")
    proto, transport = _session(rig, named)
    proto.dataReceived(b"flaky?\n")
    # Newest first: reading past the newest reads every older one, so a fresh value follows.
    assert said(transport) == b"fresh\r\n"
    assert proto.session.cursors["flaky"] == bad
    rig.post("flaky", "newer")
    proto.dataReceived(b"flaky?\n")
    assert said(transport) == b"newer\r\n"


@pytest.mark.parametrize("text", ["two\nlines", "carriage\rreturn", "escape \x1b[2J", "nul\x00", "sep\u2028"])
def test_a_row_written_by_another_tool_that_is_not_one_line_is_skipped(database, item_types, logged, text):
    from twisted.logger import formatEvent

    rig = Rig(database, item_types)
    rig.server.type_plugins = {"classified": "classified"}
    first = rig.post("classified", "first")
    with database.engine.begin() as conn:  # another tool: no check_line on this path
        conn.exec_driver_sql("INSERT INTO items (type, text, created_at) VALUES ('classified', ?, ?)",
                             (text, store.utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")))
    rig.hub.wake()
    last = rig.post("classified", "last")
    proto, transport = rig.connect()
    proto.dataReceived(b"classified?\nclassified?\nclassified?\n")
    assert said(transport) == b"first\r\nlast\r\n\r\n"
    assert proto.session.cursors["classified"] == last > first
    assert [formatEvent(e) for e in logged if "cannot be sent" in formatEvent(e)] == [
        f"item {first + 1} (classified, plugin classified) cannot be sent and is skipped: "
        "its text is not one line (a newline or a control character)"
    ]


def test_a_rendering_of_more_than_one_line_is_blamed_on_the_plugin_not_the_text(database, logged):
    from twisted.logger import formatEvent

    ticket = ItemType("ticket", render=lambda item: f"{item.text}\nsecond line")
    rig = Rig(database, {"ticket": ticket})
    skipped = rig.post("ticket", "T-1")
    proto, transport = rig.connect()
    proto.dataReceived(b"ticket?\n")
    assert said(transport) == b"\r\n"
    assert [formatEvent(e) for e in logged if "cannot be sent" in formatEvent(e)] == [
        f"item {skipped} (ticket, plugin unknown) cannot be sent and is skipped: "
        "its plugin rendered it as more than one line (a newline or a control character)"
    ]


def test_a_fresh_value_that_fails_is_an_error_and_the_connection_goes_on(database, item_types, logged):
    from twisted.logger import formatEvent

    from notifd import Pick
    from notifd.plugins import errors

    def broken():
        raise RuntimeError("no entropy")

    types = dict(item_types, dice=ItemType(name="dice", pick=Pick.NEWEST, fresh=broken))
    rig = Rig(database, types)
    rig.server.type_plugins = {"dice": "dice-plugin"}
    proto, transport = rig.connect()
    before = errors["dice-plugin"]
    proto.dataReceived(b"dice?\nrandom?\n")
    lines = said(transport).split(b"\r\n")
    assert lines[0] == b"ERR value cannot be sent" and lines[1].isdigit()
    assert errors["dice-plugin"] == before + 1
    assert [formatEvent(e) for e in logged if e.get("plugin") == "dice-plugin"] == [
        "plugin dice-plugin failed in item type dice: RuntimeError: no entropy"
    ]


def test_failed_hellos_are_throttled_per_address(database, item_types):
    from notifd.limits import FailureLimiter

    rig = Rig(database, item_types)
    rig.server.hello_limiter = FailureLimiter(rig.clock, allowed=2, window=60)
    token = rig.database.call(store.add_client, "kiosk")
    proto, transport = rig.connect()
    proto.dataReceived(b"hello kiosk a\nhello kiosk b\nhello kiosk c\n")
    assert said(transport) == b"ERR unknown client or wrong token\r\n" * 2 + b"ERR too many failed hellos; try again later\r\n"
    # Even the right token waits for the window: the address is not trusted right now.
    proto.dataReceived(f"hello kiosk {token}\n".encode())
    assert said(transport) == b"ERR too many failed hellos; try again later\r\n"
    rig.clock.advance(60)
    proto.dataReceived(f"hello kiosk {token}\n".encode())
    assert said(transport) == b"OK\r\n"


def test_anonymous_clients_refused(database, item_types):
    rig = Rig(database, item_types)
    rig.server.anonymous = False
    token = rig.database.call(store.add_client, "kiosk")
    proto, transport = rig.connect()
    proto.dataReceived(f"classified?\nhello kiosk {token}\nclassified?\n".encode())
    assert said(transport) == b"ERR hello first\r\nOK\r\n\r\n"


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.binary(max_size=300), max_size=10))
def test_hostile_bytes_on_one_connection_do_not_affect_another(rig, garbage):
    hostile, hostile_transport = rig.connect()
    other, transport = rig.connect()
    for piece in garbage:
        hostile.dataReceived(piece)
        other.dataReceived(b"random?\n")
        reply = said(transport)
        assert reply.endswith(b"\r\n") and reply[:-2].isdigit()
    other.dataReceived(b"notif random\r\nstop_notif\r\n")
    assert said(transport) == b"will send notifs\r\nOK\r\n"
    # The hostile connection got only what the protocol says (nothing is posted here, so a
    # query answers a fresh number or an empty line).
    for line in hostile_transport.value().split(b"\r\n")[:-1]:
        assert line.startswith(b"ERR ") or line in (b"OK", b"will send notifs", b"") or line.isdigit()
    hostile.connectionLost(None)
    other.connectionLost(None)


# --- the write fast path: real sockets under a real tcp.Server, no reactor running ---


def test_client_connections_have_keep_alives_and_no_nagle(rig):
    import socket

    with TcpPair(rig.factory.buildProtocol(None)) as pair:
        sock = pair.transport.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_keep_alives_find_a_vanished_peer_within_a_minute_of_the_setting(rig):
    import socket

    pytest.importorskip("OpenSSL")
    from twisted.internet.ssl import CertificateOptions
    from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    def options(sock):
        return [sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
                for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")]

    rig.server.keepalive = 60
    tls = TLSMemoryBIOProtocol(TLSMemoryBIOFactory(CertificateOptions(), False, rig.factory),
                               rig.factory.buildProtocol(None))
    for protocol in (rig.factory.buildProtocol(None), tls):  # plain TCP, and TLS over it
        with TcpPair(protocol) as pair:
            assert options(pair.transport.socket) == [60, 10, 6, 120_000]
    rig.server.keepalive = None  # `limits.keepalive = 0`: the system's settings
    with TcpPair(rig.factory.buildProtocol(None)) as pair:
        fresh = socket.socket()
        assert options(pair.transport.socket) == options(fresh)
        fresh.close()


def test_twisted_keeps_the_buffer_attributes_the_fast_path_reads(rig):
    # If a Twisted release renames them, direct_socket() turns the fast path off; this
    # test says so loudly instead of letting notifd quietly slow down.
    with TcpPair(rig.factory.buildProtocol(None)) as pair:
        assert pair.transport.dataBuffer == b"" and pair.transport._tempDataLen == 0
        assert wire.direct_socket(pair.transport) is pair.transport.socket


def test_a_notification_goes_to_the_socket_at_once(rig):
    with TcpPair(rig.factory.buildProtocol(None)) as pair:
        proto = pair.protocol
        proto.dataReceived(b"notif\n")
        rig.post("classified", "ad")
        expected = b"will send notifs\r\nnotif: classified\r\n"
        assert pair.read(len(expected)) == expected
        # Nothing went through the transport's buffer: no write was scheduled.
        assert pair.transport not in pair.reactor.writers
        assert pair.transport.dataBuffer == b"" and pair.transport._tempDataLen == 0


def test_a_partial_write_hands_the_rest_to_the_transport_in_order(rig):
    with TcpPair(rig.factory.buildProtocol(None)) as pair:
        proto = pair.protocol
        big = bytes(range(256)) * 32768  # 8 MiB: more than the socket buffers hold
        wire.write(pair.transport, proto._socket, big)
        assert pair.transport._tempDataLen > 0  # the kernel took part, Twisted holds the rest
        assert pair.transport in pair.reactor.writers
        wire.write(pair.transport, proto._socket, b"tail")  # must queue behind, not jump ahead
        received = bytearray()
        while len(received) < len(big) + 4:
            pair.transport.doWrite()
            received += pair.peer.recv(1 << 22)
        assert received == big + b"tail"


def test_a_closed_peer_takes_the_normal_path_to_connection_lost(rig):
    with TcpPair(rig.factory.buildProtocol(None)) as pair:
        proto = pair.protocol
        proto.dataReceived(b"notif\n")
        pair.read(len(b"will send notifs\r\n"))
        pair.peer.close()
        for _ in range(3):  # the first send may succeed; the kernel then learns of the reset
            wire.write(pair.transport, proto._socket, b"notif: classified\r\n")
        assert pair.transport in pair.reactor.writers  # the failure was left to the transport
        lost = pair.transport.doWrite()
        assert isinstance(lost, Exception)
        pair.transport.connectionLost(Failure(lost))  # what the reactor does with that result
        assert proto not in rig.hub.subscribers
        assert proto._socket is None


def test_tls_and_wrapping_transports_take_the_normal_path(rig):
    from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

    # A tcp.Server on which TLS was started: its bytes must go through the TLS layer.
    with TcpPair(rig.factory.buildProtocol(None)) as pair:
        pair.transport.TLS = True
        assert wire.direct_socket(pair.transport) is None

        class Socket:  # even with a socket at hand, nothing may bypass the TLS layer
            def send(self, data):
                raise AssertionError("sent around TLS")

        written = []
        pair.transport.write = written.append  # what the TLS layer would receive
        wire.write(pair.transport, Socket(), b"secret\r\n")
        assert written == [b"secret\r\n"]
        del pair.transport.write
        pair.transport.TLS = False
    # A wrapping transport (as TLSMemoryBIOProtocol is) and an in-memory one.
    wrapper = ProtocolWrapper(WrappingFactory(rig.factory), rig.factory.buildProtocol(None))
    assert wire.direct_socket(wrapper) is None
    assert wire.direct_socket(StringTransport()) is None


def test_a_real_tls_transport_takes_the_normal_path(rig):
    pytest.importorskip("OpenSSL")
    from twisted.internet.ssl import CertificateOptions
    from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    factory = TLSMemoryBIOFactory(CertificateOptions(), True, rig.factory)
    tls = TLSMemoryBIOProtocol(factory, rig.factory.buildProtocol(None))
    assert wire.direct_socket(tls) is None


# --- `random?` from the hub's memory ---------------------------------------------


def test_random_is_answered_from_memory_without_the_database(database, item_types):
    held = HeldDatabase(database)
    rig = Rig(database, item_types, db=held)
    rig.post("random", "456902234")
    proto, transport = rig.connect()
    proto.dataReceived(b"random?\nrandom?\n")
    assert not held.held  # no query was needed
    first, second = said(transport).split(b"\r\n")[:2]
    assert first == b"456902234"  # the newest unread item, now read
    assert second.isdigit() and second != b"456902234"  # then a fresh draw


def test_a_query_while_the_hub_catches_up_waits_for_it_not_for_the_database(database, item_types):
    held = HeldDatabase(database)
    rig = Rig(database, item_types, db=held)
    proto, transport = rig.connect()
    rig.database.call(add_item, "random", "7")
    rig.hub.wake()  # a check in flight: the hub does not know yet
    proto.dataReceived(b"random?\n")
    # The query waits for that check, in memory: no query of its own goes to the database.
    assert [f.__name__ for f, *_ in held.held] == ["news_after"] and said(transport) == b""
    held.release()
    assert said(transport) == b"7\r\n"
    # A wake-up not read yet counts as well: the query starts the check itself and waits for it.
    rig.database.call(add_item, "random", "8")
    pending = [True]
    rig.hub.wakeup_pending = lambda: pending[0]
    proto.dataReceived(b"random?\n")
    assert [f.__name__ for f, *_ in held.held] == ["news_after"] and said(transport) == b""
    pending[0] = False  # the reactor reads the datagram meanwhile
    held.release()
    assert said(transport) == b"8\r\n"


def test_random_from_memory_respects_the_recent_window(database, item_types):
    from datetime import timedelta

    types = dict(item_types)
    rig = Rig(database, types)
    rig.hub.set_windows(dict(rig.hub.windows, random=Window(max_age=timedelta(seconds=60))))
    rig.post("random", "5")
    proto, transport = rig.connect()
    rig.clock.advance(120)  # the item is no longer recent
    proto.dataReceived(b"random?\n")
    reply = said(transport)
    assert reply != b"5\r\n" and reply[:-2].isdigit()


def test_thousands_of_pipelined_random_queries(rig):
    proto, transport = rig.connect()
    proto.dataReceived(b"random?\r\n" * 5000)  # answered in a loop, not by recursion
    lines = said(transport).split(b"\r\n")
    assert len(lines) == 5001 and all(line.isdigit() for line in lines[:-1])


def test_classified_is_answered_from_memory_and_read_marks_are_written_in_groups(database, item_types):
    named = NamedRig(database, item_types, ads=4)
    held, ids = named.held, named.ids
    named.proto.dataReceived(b"classified?\n")
    assert said(named.transport) == b"ad 0\r\n"  # from memory: nothing waited for the database
    assert [(f.__name__, args) for f, args, _, _ in held.held] == [("mark_read", ([(1, "classified", ids[0])],))]
    # While that write is held, three more answers: their marks wait, merged into one.
    named.proto.dataReceived(b"classified?\nclassified?\nclassified?\n")
    assert said(named.transport) == b"ad 1\r\nad 2\r\nad 3\r\n"
    assert len(held.held) == 1
    held.release_one()
    named.rig.clock.advance(0.005)  # writes of marks start at most every 5 ms
    assert [(f.__name__, args) for f, args, _, _ in held.held] == [("mark_read", ([(1, "classified", ids[3])],))]
    held.release()
    assert database.call(store.client_cursors, 1) == {"classified": ids[3]}


def test_a_hello_continues_after_marks_not_yet_written(database, item_types):
    named = NamedRig(database, item_types, ads=3)
    named.proto.dataReceived(b"classified?\n")
    assert said(named.transport) == b"ad 0\r\n"
    mark = named.held.held.popleft()  # its read mark: not in the database yet
    named.proto.connectionLost()
    proto, transport = named.connect()  # the hello reads the stored cursors: none
    proto.dataReceived(b"classified?\n")
    assert said(transport) == b"ad 1\r\n"
    named.held.held.appendleft(mark)
    named.held.release()


def test_a_read_mark_that_fails_is_not_retried_and_the_next_one_goes(database, item_types):
    named = NamedRig(database, item_types, ads=2)
    named.proto.dataReceived(b"classified?\n")
    f, args, kwargs, d = named.held.held.popleft()
    d.errback(Failure(RuntimeError("disk full")))  # the database logged it
    named.proto.dataReceived(b"classified?\n")
    assert said(named.transport) == b"ad 0\r\nad 1\r\n"
    named.rig.clock.advance(0.005)
    named.held.release()
    assert database.call(store.client_cursors, 1) == {"classified": named.ids[1]}


# --- limits -----------------------------------------------------------------------


def test_a_client_that_lets_replies_pile_up_is_dropped(rig):
    import socket

    rig.server.max_unsent = 64 * 1024
    with TcpPair(rig.factory.buildProtocol(None)) as pair:
        proto = pair.protocol
        pair.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        pair.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Each 2-byte line costs a 21-byte answer: a pipeline read in one go amplifies.
        for _ in range(50):
            proto.dataReceived(b"x\n" * 2000)
            if pair.transport._aborting:
                break
        assert pair.transport._aborting  # dropped, not flushed: it does not read anyway
        assert counted(rig, "notifd_connections_closed_total", limit="max_unsent_bytes") == 1
        assert 64 * 1024 < wire.unsent(pair.transport) < 64 * 1024 + 2000 * 21


def test_connections_over_the_limits_get_one_line_and_are_closed(rig):
    from twisted.internet.address import IPv4Address

    rig.server.max_per_address = 2
    rig.server.max_connections = 3

    def connect(host):
        proto = rig.factory.buildProtocol(IPv4Address("TCP", host, 1234))
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    first, second = connect("10.0.0.1"), connect("10.0.0.1")
    refused, transport = connect("10.0.0.1")
    assert transport.value() == b"ERR too many connections from your address\r\n" and transport.disconnecting
    third = connect("10.0.0.2")
    refused, transport = connect("10.0.0.3")
    assert transport.value() == b"ERR too many connections\r\n" and transport.disconnecting
    first[0].connectionLost(None)  # one leaves: room again, for its address too
    again, transport = connect("10.0.0.1")
    assert transport.value() == b"" and not transport.disconnecting
    assert rig.server.per_address == {"10.0.0.1": 2, "10.0.0.2": 1}
    for proto, _ in (second, third, (again, None)):
        proto.connectionLost(None)
    assert rig.server.per_address == {}


def test_idle_connections_in_normal_mode_are_closed_not_in_notification_mode(rig):
    rig.server.idle_timeout = 60
    talker, talker_transport = rig.connect()
    silent, silent_transport = rig.connect()
    waiting, waiting_transport = rig.connect()
    waiting.dataReceived(b"notif\n")
    rig.clock.advance(50)
    talker.dataReceived(b"random?\n")
    rig.clock.advance(11)
    assert rig.server.close_idle() == 1
    assert silent_transport.value().endswith(b"ERR idle for too long\r\n") and silent_transport.disconnecting
    assert not talker_transport.disconnecting and not waiting_transport.disconnecting
    rig.clock.advance(3600)
    waiting.dataReceived(b"stop_notif\n")  # back in normal mode: the clock starts again
    assert rig.server.close_idle() == 1  # the talker, silent for an hour now
    rig.clock.advance(61)
    assert rig.server.close_idle() == 1 and waiting_transport.disconnecting


def test_parallel_wrong_hellos_are_checked_at_most_the_limit(database, item_types):
    from notifd.limits import FailureLimiter

    held = HeldDatabase(database)
    rig = Rig(database, item_types, db=held)
    rig.server.hello_limiter = FailureLimiter(rig.clock, allowed=5, window=60)
    database.call(store.add_client, "kiosk")
    clients = [rig.connect() for _ in range(50)]
    for proto, _ in clients:  # every hello arrives before the first answer comes back
        proto.dataReceived(b"hello kiosk guess\n")
    assert sum(f is store.identify for f, *_ in held.held) == 5
    held.release()
    replies = sorted(said(transport) for _, transport in clients)
    assert replies.count(b"ERR unknown client or wrong token\r\n") == 5
    assert replies.count(b"ERR too many failed hellos; try again later\r\n") == 45


def test_a_successful_hello_is_not_counted_as_a_failure(database, item_types):
    from notifd.limits import FailureLimiter

    held = HeldDatabase(database)
    rig = Rig(database, item_types, db=held)
    rig.server.hello_limiter = FailureLimiter(rig.clock, allowed=1, window=60)
    token = database.call(store.add_client, "kiosk")
    (right, right_transport), (wrong, wrong_transport) = rig.connect(), rig.connect()
    right.dataReceived(f"hello kiosk {token}\n".encode())
    held.release()
    wrong.dataReceived(b"hello kiosk guess\n")
    held.release()
    assert said(right_transport) == b"OK\r\n"
    assert said(wrong_transport) == b"ERR unknown client or wrong token\r\n"  # checked: the one allowed failure


# --- connections waiting for their hello, refusals, keep-alives ----------------------------


def counted(rig, name, **labels):
    return rig.server.metrics.registry.get_sample_value(name, labels)


def connect_from(rig, host):
    from twisted.internet.address import IPv4Address

    proto = rig.factory.buildProtocol(IPv4Address("TCP", host, 1234))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_connections_waiting_for_hello_are_limited_per_address(database, item_types):
    rig = Rig(database, item_types)
    rig.server.anonymous = False
    rig.server.max_unidentified_per_address = 2
    token = database.call(store.add_client, "kiosk")
    first, second = connect_from(rig, "10.0.0.1"), connect_from(rig, "10.0.0.1")
    _, refused = connect_from(rig, "10.0.0.1")
    assert refused.value() == b"ERR too many connections waiting for hello from your address\r\n"
    assert refused.disconnecting
    _, other = connect_from(rig, "10.0.0.2")  # another address has its own count
    assert not other.disconnecting
    first[0].dataReceived(f"hello kiosk {token}\n".encode())
    assert said(first[1]) == b"OK\r\n"
    _, third = connect_from(rig, "10.0.0.1")  # identified: no longer waiting, room for one more
    assert not third.disconnecting
    second[0].dataReceived(b"hello kiosk wrong\n")  # a failed hello is still waiting
    _, refused = connect_from(rig, "10.0.0.1")
    assert refused.disconnecting
    second[0].connectionLost(None)  # gone: room again
    _, fourth = connect_from(rig, "10.0.0.1")
    assert not fourth.disconnecting
    assert rig.server.unidentified == {"10.0.0.1": 2, "10.0.0.2": 1}
    assert counted(rig, "notifd_connections_refused_total", limit="max_unidentified_per_address") == 2


def test_anonymous_connections_are_not_waiting_for_hello(rig):
    rig.server.max_unidentified_per_address = 1
    rig.server.hello_timeout = 10
    clients = [connect_from(rig, "10.0.0.1") for _ in range(3)]
    rig.clock.advance(60)
    assert not any(transport.disconnecting for _, transport in clients)
    assert rig.server.unidentified == {}


def test_a_connection_gets_hello_timeout_from_connect_to_a_successful_hello(database, item_types):
    held = HeldDatabase(database)
    rig = Rig(database, item_types, db=held)
    rig.server.anonymous = False
    rig.server.hello_timeout = 10
    token = database.call(store.add_client, "kiosk")
    trickler, trickler_transport = connect_from(rig, "10.0.0.1")
    named, named_transport = connect_from(rig, "10.0.0.1")
    late, late_transport = connect_from(rig, "10.0.0.1")
    rig.clock.advance(5)
    named.dataReceived(f"hello kiosk {token}\n".encode())
    held.release()
    for byte in b"hello kiosk":  # bytes trickling in do not move the deadline
        trickler.dataReceived(bytes([byte]))
        rig.clock.advance(0.4)
    late.dataReceived(f"hello kiosk {token}\n".encode())  # still being checked at the deadline
    rig.clock.advance(10 - 5 - 0.4 * 11)
    assert trickler_transport.value() == b"ERR no hello in time\r\n" and trickler_transport.disconnecting
    assert late_transport.value() == b"ERR no hello in time\r\n" and late_transport.disconnecting
    held.release()
    assert late_transport.value() == b"ERR no hello in time\r\n"  # nothing after it
    late.connectionLost(None)
    trickler.connectionLost(None)
    rig.clock.advance(3600)
    assert said(named_transport) == b"OK\r\n" and not named_transport.disconnecting
    assert rig.server.unidentified == {}
    assert counted(rig, "notifd_connections_closed_total", limit="hello_timeout") == 2


def test_refusals_are_logged_once_a_minute_per_address_and_counted(rig, logged):
    from twisted.logger import formatEvent

    rig.server.max_per_address = 1
    connect_from(rig, "10.0.0.1")
    for _ in range(100):
        connect_from(rig, "10.0.0.1")
    connect_from(rig, "10.0.0.2")
    connect_from(rig, "10.0.0.2")

    def lines():
        found = [formatEvent(e) for e in logged if e.get("limit")]
        logged.clear()
        return found

    assert lines() == [
        "refused a connection from 10.0.0.1: limits.max_connections_per_address = 1 reached",
        "refused a connection from 10.0.0.2: limits.max_connections_per_address = 1 reached",
    ]
    rig.clock.advance(30)
    rig.server.sweep()
    assert lines() == []
    rig.clock.advance(30)
    rig.server.sweep()
    assert lines() == [
        "refused 99 connections from 10.0.0.1 since the last report: limits.max_connections_per_address = 1 reached"
    ]
    assert counted(rig, "notifd_connections_refused_total", limit="max_connections_per_address") == 101


def test_refusals_at_the_total_limit_are_one_log_key_whatever_the_address(rig, logged):
    from twisted.logger import formatEvent

    rig.server.max_connections = 1
    connect_from(rig, "10.0.0.1")
    for i in range(50):
        connect_from(rig, f"10.0.1.{i}")
    assert [formatEvent(e) for e in logged if e.get("limit")] == [
        "refused a connection: limits.max_connections = 1 reached"
    ]
    assert counted(rig, "notifd_connections_refused_total", limit="max_connections") == 50


def test_idle_closes_and_hellos_are_counted(database, item_types):
    from notifd.limits import FailureLimiter

    rig = Rig(database, item_types)
    rig.server.idle_timeout = 60
    token = database.call(store.add_client, "kiosk")
    rig.server.hello_limiter = FailureLimiter(rig.clock, allowed=1, window=60)
    proto, _ = rig.connect()
    proto.dataReceived(f"hello kiosk {token}\nhello kiosk x\n".encode())
    proto, _ = rig.connect()
    proto.dataReceived(b"hello kiosk x\nhello kiosk x\n")
    hellos = {result: counted(rig, "notifd_hellos_total", result=result)
              for result in ("accepted", "refused", "throttled")}
    assert hellos == {"accepted": 1, "refused": 1, "throttled": 1}  # the named one's second: `ERR already identified`
    rig.clock.advance(61)
    rig.server.sweep()
    assert counted(rig, "notifd_connections_closed_total", limit="idle_timeout") == 2


class BoundedTransport(StringTransport):
    """Pushes back as Twisted's FileDescriptor does: past `buffer_size` unsent bytes it
    pauses its registered streaming producer, and resumes it once drained."""

    buffer_size = 64

    def write(self, data):
        super().write(data)
        if self.producer is not None and self.streaming and len(self.value()) > self.buffer_size:
            self.producer.pauseProducing()

    def drain(self):
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()


def test_a_full_write_buffer_stops_reading_through_the_registered_producer(rig):
    proto = rig.factory.buildProtocol(None)
    transport = BoundedTransport()
    proto.makeConnection(transport)
    assert (transport.producer, transport.streaming) == (proto, True)
    assert transport.producerState == "producing"
    proto.dataReceived(b"random?\n" * 8)  # more answers than the buffer holds
    assert len(transport.value()) > transport.buffer_size
    # No more requests are read (so no more answers written) until the client reads.
    assert transport.producerState == "paused"
    transport.drain()
    assert transport.producerState == "producing"
