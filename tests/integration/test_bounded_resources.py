"""Bounded resources against a real notifd: connection limits, idle timeout, a client that
does not read its replies, connections waiting for their hello, keep-alives, the listen
backlog, and the metrics an operator watches."""
from __future__ import annotations

import re
import select
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import TIMEOUT, LineClient, eventually, run_notifctl
from tests.require import require_tool

pytestmark = pytest.mark.integration


@pytest.fixture
def limited(daemon, tmp_path):
    def start(text: str, *extra: str):
        config = tmp_path / "limits.toml"
        config.write_text(text)
        return daemon("--config", str(config), *extra)

    return start


def scrape(server) -> dict[str, float]:
    """The daemon's /metrics (it was started with `--metrics tcp:0:...`), by sample with its labels."""
    if not hasattr(server, "metrics_port"):
        pattern = re.compile(r"metrics on http TCP \S+")
        seen = [line for line in server.drained_log() if pattern.search(line)]
        line = seen[0] if seen else server.wait_for_log(pattern)
        server.metrics_port = int(re.search(r":(\d+)$", line.strip()).group(1))
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=TIMEOUT).read().decode()
    return {name: float(value) for name, value in re.findall(r"^(notifd_\S+) (\S+)$", page, re.MULTILINE)}


def ss(*args: str) -> list[str]:
    command = require_tool("ss", "iproute2", "to read socket state")
    return subprocess.run([command, "-H", *args], capture_output=True, text=True, check=True).stdout.splitlines()


def closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (waits for it, up to TIMEOUT)."""
    sock.settimeout(TIMEOUT)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    return True


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
    server = limited("[limits]\nmax_unsent_bytes = 65536\n", "--metrics", "tcp:0:interface=127.0.0.1")
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
    assert scrape(server)['notifd_connections_closed_total{limit="max_unsent_bytes"}'] == 1


def test_parallel_wrong_hellos_cannot_get_past_the_failed_hello_limit(limited, notifctl):
    notifctl("client", "add", "kiosk")
    server = limited("[limits]\nhello_failures = 5\n")
    clients = [server.connect() for _ in range(300)]
    for client in clients:  # all at once: most arrive while the first ones are being checked
        client.send("hello kiosk guess")
    replies = [client.read_line() for client in clients]
    assert replies.count(b"ERR unknown client or wrong token\r\n") == 5
    assert replies.count(b"ERR too many failed hellos; try again later\r\n") == 295


def test_one_address_cannot_hold_every_slot_waiting_for_hello(limited, notifctl):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    # The defaults: 32 connections from one address may wait for their hello.
    server = limited(
        '[auth]\nanonymous = false\n[limits]\nhello_timeout = "2s"\n', "--metrics", "tcp:0:interface=127.0.0.1"
    )
    squatters = [server.connect() for _ in range(32)]
    for squatter in squatters[::2]:
        squatter.sock.sendall(b"hello ki")  # bytes without a hello do not move the deadline
    refused = [server.connect() for _ in range(8)]
    for client in refused:
        assert client.read_line() == b"ERR too many connections waiting for hello from your address\r\n"
        assert closed(client.sock)
    server.wait_for_log(re.compile(
        r"refused a connection from 127\.0\.0\.1: limits\.max_unidentified_per_address = 32 reached"
    ))
    legitimate = LineClient(server.port, source="127.0.0.2")  # another host is not refused
    assert legitimate.ask(f"hello kiosk {token}") == "OK"
    for squatter in squatters:  # two seconds after they connected
        assert squatter.read_line() == b"ERR no hello in time\r\n"
        assert closed(squatter.sock)
    assert legitimate.ask("classified?") == ""  # identified in time: served

    def admitted():
        again = server.connect()
        reply = again.ask(f"hello kiosk {token}")
        again.close()
        return reply == "OK"

    eventually(admitted)  # room again for 127.0.0.1 once the daemon saw them go
    metrics = scrape(server)
    assert metrics['notifd_connections_refused_total{limit="max_unidentified_per_address"}'] == 8
    assert metrics['notifd_connections_closed_total{limit="hello_timeout"}'] == 32


def test_connections_probe_a_silent_peer_after_limits_keepalive(limited):
    server = limited('[limits]\nkeepalive = "45s"\n')
    client = server.connect()
    assert client.ask("notif") == "will send notifs"
    [line] = ss("-tno", "state", "established", f"( sport = :{server.port} )")
    timer = re.search(r"timer:\(keepalive,([^,]+),", line).group(1)
    units = {"ms": 0.001, "sec": 1, "min": 60, "h": 3600}
    seconds = sum(int(n) * units[unit] for n, unit in re.findall(r"(\d+)(ms|sec|min|h)", timer))
    assert 0 < seconds <= 45  # the kernel's default would be two hours


def test_the_listen_backlog_is_raised_unless_the_entry_sets_one(daemon):
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())

    def backlogs(port):  # for a listening socket, ss shows the backlog as Send-Q
        return [int(line.split()[2]) for line in ss("-ltn", f"( sport = :{port} )")]

    assert backlogs(daemon("--node", "a").port) == [min(1024, somaxconn)]
    assert backlogs(daemon("--node", "b", listen="tcp:0:interface=127.0.0.1:backlog=7").port) == [7]
    workers = daemon("--node", "c", "--workers", "2")
    assert eventually(lambda: len(found := backlogs(workers.port)) == 2 and found) == [min(1024, somaxconn)] * 2


def test_metrics_show_refusals_hellos_idle_closes_and_database_errors(limited, notifctl, db_path):
    import sqlite3

    notifctl("client", "add", "kiosk")
    server = limited(
        '[limits]\nmax_connections_per_address = 2\nhello_failures = 1\nidle_timeout = "1s"\n',
        "--metrics", "tcp:0:interface=127.0.0.1",
    )
    guesser, other = server.connect(), server.connect()
    assert guesser.ask("hello kiosk wrong") == "ERR unknown client or wrong token"
    assert guesser.ask("hello kiosk again") == "ERR too many failed hellos; try again later"
    assert server.connect().read_line() == b"ERR too many connections from your address\r\n"
    for client in (guesser, other):
        assert client.read_line() == b"ERR idle for too long\r\n"
    metrics = scrape(server)
    assert metrics['notifd_hellos_total{result="refused"}'] == 1
    assert metrics['notifd_hellos_total{result="throttled"}'] == 1
    assert metrics['notifd_connections_refused_total{limit="max_connections_per_address"}'] == 1
    eventually(lambda: scrape(server)['notifd_connections_closed_total{limit="idle_timeout"}'] == 2)
    assert scrape(server)['notifd_database_errors_total{kind="reads"}'] == 0
    with sqlite3.connect(db_path) as conn:  # the daemon's reads fail: its safety poll meets it
        conn.execute("ALTER TABLE items RENAME TO items_gone")
    try:
        eventually(lambda: scrape(server)['notifd_database_errors_total{kind="reads"}'] > 0)
    finally:
        with sqlite3.connect(db_path) as conn:
            conn.execute("ALTER TABLE items_gone RENAME TO items")


def test_metrics_show_the_outbox(limited, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "refusing.py").write_text(
        "from notifd import Notifier, hookimpl\n\n\n"
        "def refuse(item):\n    raise ConnectionRefusedError('nobody listens')\n\n\n"
        "@hookimpl\ndef register_notifiers(register):\n"
        "    register(Notifier('refusing', refuse, durable=True))\n"
    )
    server = limited(
        f'plugins_dirs = ["{plugins}"]\n[notifiers.refusing]\nmax_attempts = 1\n',
        "--metrics", "tcp:0:interface=127.0.0.1",
    )
    key = 'notifd_outbox_deliveries{{notifier="refusing",state="{}"}}'
    eventually(lambda: scrape(server).get(key.format("dead")) == 0)  # once the first round has counted
    run_notifctl(server.db_path, "add", "classified", "never delivered")
    # Counted by the outbox's round after the delivery died, not 10 s later.
    eventually(lambda: scrape(server)[key.format("dead")] == 1, timeout=5)
    assert scrape(server)[key.format("pending")] == 0
