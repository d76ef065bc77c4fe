"""Named clients' read state survives connections and a kill -9 of the daemon."""
from __future__ import annotations

import signal

import pytest

pytestmark = pytest.mark.integration


def test_named_client_state_survives_kill_9(daemon, notifctl):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    for text in ("first ad", "second ad", "third ad"):
        notifctl("add", "classified", text)
    server = daemon()
    client = server.connect()
    assert client.ask(f"hello kiosk {token}") == "OK"
    assert client.ask("classified?") == "first ad"
    # One more round trip: the daemon's database work runs in order, so the read mark
    # of "first ad" is committed once this is answered.
    assert client.ask("random?").isdigit()
    assert server.kill(signal.SIGKILL) == -signal.SIGKILL

    server = daemon()
    client = server.connect()
    assert client.ask(f"hello kiosk {token}") == "OK"
    assert client.ask("classified?") == "second ad"
    # An anonymous client has its own, fresh, state.
    assert server.connect().ask("classified?") == "first ad"


def test_notifctl_add_while_the_daemon_is_down_counts_as_unread(daemon, notifctl):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    notifctl("add", "classified", "posted while down")
    server = daemon()
    client = server.connect()
    assert client.ask(f"hello kiosk {token}") == "OK"
    assert client.ask("notif") == "will send notifs"
    assert client.read_line() == b"notif: classified\r\n"


def test_clients_shows_who_is_connected(daemon, notifctl):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    notifctl("add", "classified", "ad")
    server = daemon()
    client = server.connect()
    assert client.ask(f"hello kiosk {token}") == "OK"
    assert client.ask("random?").isdigit()  # the presence row is written before this answer
    assert "connected (1)" in notifctl("clients").stdout
    assert "classified=1" in notifctl("clients").stdout
    client.close()


def test_sigterm_exits_zero(daemon):
    server = daemon()
    server.connect().ask("random?")
    assert server.kill(signal.SIGTERM) == 0
