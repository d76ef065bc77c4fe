"""Many clients in notification mode, one `notifctl add`: every one of them hears about it."""
from __future__ import annotations

import time

import pytest

from tests.harness import receive_all, subscribe
from tests.integration.conftest import TIMEOUT

pytestmark = pytest.mark.integration

CLIENTS = 500


def test_every_client_in_notification_mode_hears_one_post(daemon, start_notifctl, report):
    server = daemon()
    clients = subscribe(server.port, CLIENTS)
    poster = start_notifctl("add", "classified", "Nice appart in the 11e.")
    assert poster.stdout.readline().strip().isdigit()
    committed = time.monotonic()  # notifctl prints the id once the item is committed
    first, last = receive_all(clients, b"notif: classified\r\n", timeout=TIMEOUT)
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
