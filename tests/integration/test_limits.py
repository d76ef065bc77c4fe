"""Bounded resources against a real notifd: connection limits, idle timeout, a client that
does not read its replies, the listen backlog."""
from __future__ import annotations

import re
import select
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import TIMEOUT, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def limited(daemon, tmp_path):
    def start(text: str):
        config = tmp_path / "limits.toml"
        config.write_text(text)
        return daemon("--config", str(config))

    return start


def closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (waits for it, up to TIMEOUT)."""
    sock.settimeout(TIMEOUT)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    return True


needs_ss = pytest.mark.skipif(not shutil.which("ss"), reason="needs ss (iproute2) to read socket state")


def ss(*args: str) -> list[str]:
    return subprocess.run(["ss", "-H", *args], capture_output=True, text=True, check=True).stdout.splitlines()


def test_one_address_cannot_take_every_connection(limited):
    server = limited("[limits]\nmax_connections_per_address = 3\n")
    clients = [server.connect() for _ in range(3)]
    extra = server.connect()
    assert extra.read_line() == b"ERR too many connections from your address\r\n"
    assert closed(extra.sock)
    assert [c.ask("random?").isdigit() for c in clients] == [True] * 3  # the others are served
    clients[0].close()

    def admitted():
        # Room again once one has gone: the daemon notices the close first, so poll for it.
        again = server.connect()
        reply = again.ask("random?")
        again.close()
        return reply.isdigit()

    eventually(admitted)


def test_idle_connections_are_closed_but_not_in_notification_mode(limited):
    server = limited('[limits]\nidle_timeout = "1s"\n')
    silent = server.connect()
    waiting = server.connect()
    assert waiting.ask("notif") == "will send notifs"
    assert silent.read_line() == b"ERR idle for too long\r\n"  # within about 1.5 s
    assert closed(silent.sock)
    assert waiting.ask("stop_notif") == "OK"  # still there, well past the timeout


def test_a_client_that_does_not_read_its_replies_is_dropped(limited):
    server = limited("[limits]\nmax_unsent_bytes = 65536\n")
    hog = server.connect()
    hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.sock.setblocking(False)
    # Two bytes in, twenty-one out: an amplifying pipeline that the client never reads.
    sent, dropped = 0, False
    while sent < 200 * 1024 * 1024:
        _, writable, _ = select.select([], [hog.sock], [], TIMEOUT)
        if not writable:
            break  # the daemon stopped reading us without dropping us: fails below
        try:
            sent += hog.sock.send(b"x\n" * 8192)
        except (ConnectionResetError, BrokenPipeError):
            dropped = True
            break
    assert dropped, f"sent {sent} bytes without reading a reply, and the daemon did not drop the client"
    server.wait_for_log(re.compile(r"dropping a client that does not read \(\d+ bytes unsent\)"))
    assert server.connect().ask("random?").isdigit()  # the others are served


def test_parallel_wrong_hellos_cannot_get_past_the_failed_hello_limit(limited, notifctl):
    notifctl("client", "add", "kiosk")
    server = limited("[limits]\nhello_failures = 5\n")
    clients = [server.connect() for _ in range(300)]
    for client in clients:  # all at once: most arrive while the first ones are being checked
        client.send("hello kiosk guess")
    replies = [client.read_line() for client in clients]
    assert replies.count(b"ERR unknown client or wrong token\r\n") == 5
    assert replies.count(b"ERR too many failed hellos; try again later\r\n") == 295


@needs_ss
def test_the_listen_backlog_is_raised_unless_the_entry_sets_one(daemon):
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())

    def backlogs(port):  # for a listening socket, ss shows the backlog as Send-Q
        return [int(line.split()[2]) for line in ss("-ltn", f"( sport = :{port} )")]

    assert backlogs(daemon("--node", "a").port) == [min(1024, somaxconn)]
    assert backlogs(daemon("--node", "b", listen="tcp:0:interface=127.0.0.1:backlog=7").port) == [7]
    workers = daemon("--node", "c", "--workers", "2")
    assert eventually(lambda: len(found := backlogs(workers.port)) == 2 and found) == [min(1024, somaxconn)] * 2
