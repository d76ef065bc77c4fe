"""Named clients' read state survives connections and a kill -9 of the daemon."""
from __future__ import annotations

import signal

import pytest

from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration


def test_named_client_state_survives_kill_9(daemon, notifctl):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    for text in ("first ad", "second ad", "third ad"):
        notifctl("add", "classified", text)
    server = daemon()
    client = server.connect()
    assert client.ask(f"hello kiosk {token}") == "OK"
    assert client.ask("classified?") == "first ad"
    # The daemon's writes run in order: once another hello (a write) is answered, the
    # read mark of "first ad", queued before it, is committed.
    assert server.connect().ask(f"hello kiosk {token}") == "OK"
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
    clients = [server.connect() for _ in range(2)]
    for client in clients:
        assert client.ask(f"hello kiosk {token}") == "OK"
    # Presence rows are written just after the OK: poll for them.
    def two_connected():
        out = notifctl("clients").stdout
        return out if "connected (2)" in out else None

    listed = eventually(two_connected)
    assert "classified=1" in listed
    for client in clients:
        client.close()
    eventually(lambda: "not connected" in notifctl("clients").stdout)


def test_sigterm_exits_zero(daemon):
    server = daemon()
    server.connect().ask("random?")
    assert server.kill(signal.SIGTERM) == 0
