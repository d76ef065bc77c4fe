"""Many clients in notification mode, one `notifctl add`: every one of them hears about it."""
from __future__ import annotations

import selectors
import socket
import time

import pytest

from tests.integration.conftest import TIMEOUT

pytestmark = pytest.mark.integration

CLIENTS = 500


def test_every_client_in_notification_mode_hears_one_post(daemon, start_notifctl, report):
    server = daemon()
    clients = []
    for _ in range(CLIENTS):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        sock.sendall(b"notif\r\n")
        clients.append(sock)
    for sock in clients:
        assert sock.recv(64) == b"will send notifs\r\n"
    selector = selectors.DefaultSelector()
    for sock in clients:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)

    poster = start_notifctl("add", "classified", "Nice appart in the 11e.")
    assert poster.stdout.readline().strip().isdigit()
    committed = time.monotonic()  # notifctl prints the id once the item is committed
    received: dict[socket.socket, bytes] = {}
    first = last = None
    deadline = committed + TIMEOUT
    while len(received) < CLIENTS and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            received[sock] = received.get(sock, b"") + sock.recv(64)
            now = time.monotonic()
            first = first or now
            last = now
            if received[sock].endswith(b"\n"):
                selector.unregister(sock)
    assert len(received) == CLIENTS
    assert set(received.values()) == {b"notif: classified\r\n"}
    report(
        f"fan-out, {CLIENTS} clients, from the commit (notifctl add printing the id): "
        f"first {1000 * (first - committed):.1f} ms, last {1000 * (last - committed):.1f} ms"
    )
    assert poster.wait(timeout=TIMEOUT) == 0
    for sock in clients:
        sock.close()


def test_a_burst_of_posts_makes_one_notification_until_ok(daemon, notifctl):
    server = daemon()
    watcher = server.connect()
    assert watcher.ask("notif") == "will send notifs"
    for i in range(5):
        notifctl("add", "classified", f"ad {i}")
    assert watcher.read_line() == b"notif: classified\r\n"
    notifctl("add", "random", "1")
    watcher.send("OK")
    assert watcher.read_line() == b"notif: random\r\n"
    # The five ads were coalesced into the one notification already acknowledged.
    assert watcher.ask("stop_notif") == "OK"
