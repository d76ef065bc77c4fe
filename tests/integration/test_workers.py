"""`notifd --workers N` on one SQLite file: every worker serves, a post reaches the clients of
all of them, SIGTERM to the parent stops them all, a dead worker is replaced, and systemd's
watchdog hears from every worker."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
from collections import Counter

import pytest
from sqlalchemy import select

from notifd import db as dbmod
from notifd import store
from tests.integration.conftest import TIMEOUT, DaemonProcess, eventually

pytestmark = pytest.mark.integration

READY = re.compile(r"notifd: 2 workers ready, sharing TCP 127\.0\.0\.1:(\d+)")


def presence_by_node(db_path) -> Counter:
    engine = dbmod.make_engine(dbmod.database_url(str(db_path)))
    try:
        with engine.connect() as conn:
            return Counter(conn.execute(select(store.presence.c.node)).scalars())
    finally:
        engine.dispose()


def test_two_workers_share_the_port_and_a_post_reaches_both(daemon, notifctl, db_path):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    server = daemon("--workers", "2", "--node", "box")
    assert int(READY.search(server.wait_for_log(READY)).group(1)) == server.port
    clients = [server.connect() for _ in range(24)]
    for client in clients:
        assert client.ask(f"hello kiosk {token}") == "OK"
        assert client.ask("notif") == "will send notifs"
    # The kernel spreads connections over the workers' sockets (SO_REUSEPORT): with 24
    # connections, one worker getting them all has odds of one in eight million.
    by_node = eventually(lambda: (found := presence_by_node(db_path)) and sum(found.values()) == 24 and found)
    assert set(by_node) == {"box/1", "box/2"}

    notifctl("add", "classified", "for everyone")
    for client in clients:
        assert client.read_line() == b"notif: classified\r\n"
    status = json.loads(notifctl("status", "--json").stdout)
    assert sorted(node["node"] for node in status["nodes"] if node["up"]) == ["box/1", "box/2"]

    assert server.kill(signal.SIGTERM) == 0
    for client in clients:
        assert client.sock.recv(100) == b""  # each worker closed its connections
    stopped = notifctl("status", check=False)
    assert stopped.returncode == 3  # both workers recorded their stop


def test_a_worker_that_dies_is_started_again(daemon, notifctl):
    server = daemon("--workers", "2", "--node", "box")
    server.wait_for_log(READY)
    nodes = eventually(lambda: (rows := json.loads(notifctl("status", "--json").stdout)["nodes"]) and len(rows) == 2 and rows)
    victim = next(node for node in nodes if node["node"] == "box/2")
    os.kill(victim["pid"], signal.SIGKILL)
    server.wait_for_log(re.compile(r"worker 2 ended \(signal 9\); starting it again"))

    def replaced():
        rows = json.loads(notifctl("status", "--json").stdout)["nodes"]
        return any(n["node"] == "box/2" and n["up"] and n["pid"] != victim["pid"] for n in rows)

    eventually(replaced)
    watcher = server.connect()
    assert watcher.ask("notif") == "will send notifs"
    notifctl("add", "random", "7")
    assert watcher.read_line() == b"notif: random\r\n"


def _children(pid: int) -> list[int]:
    return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    return state == "Z"  # ended, waiting for init to reap it


def test_a_second_set_of_workers_cannot_join_the_port_and_workers_stop_with_their_parent(daemon, tmp_path):
    first = daemon("--workers", "2", "--node", "box")
    first.wait_for_log(READY)
    # SO_REUSEPORT would let any notifd of this user share the port, on another database even.
    for other in (("--workers", "2"), ()):
        intruder = DaemonProcess(tmp_path / "other.db", *other, listen=f"tcp:{first.port}:interface=127.0.0.1",
                                 new_database=False)
        with pytest.raises(AssertionError, match="Address already in use"):
            intruder.start()
    workers = _children(first.proc.pid)
    assert len(workers) == 2
    first.kill(signal.SIGKILL)
    eventually(lambda: all(_gone(pid) for pid in workers))  # none goes on serving the port alone
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", first.port)) != 0


@pytest.mark.parametrize("args, error", [
    (("--listen", "unix:{tmp}/sock"), "cannot be shared by --workers"),
    (("--metrics", "tcp:0:interface=127.0.0.1"), "put {worker} in the endpoint"),
])
def test_workers_refuse_what_they_cannot_share_before_creating_a_database(tmp_path, args, error):
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    process = DaemonProcess(tmp_path / "n.db", "--workers", "2", *args, new_database=False)
    with pytest.raises(AssertionError, match=re.escape(error)):
        process.start()
    assert not (tmp_path / "n.db").exists()  # a mistake in the configuration leaves nothing behind


def test_the_watchdog_pings_only_while_every_worker_answers(daemon, notifctl, tmp_path):
    # systemd's side: a NOTIFY_SOCKET and WatchdogSec=4s (workers ping the parent every
    # second, the parent systemd every second; a worker silent for 2 s is late).
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(TIMEOUT)

    def next_message() -> str:
        return sock.recv(4096).decode()

    try:
        server = daemon("--workers", "2", "--node", "box",
                        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "4000000"})
        server.wait_for_log(READY)
        while not next_message().startswith("READY=1"):
            pass
        assert next_message() == "WATCHDOG=1"  # pinged while both workers answer
        nodes = eventually(lambda: (rows := json.loads(notifctl("status", "--json").stdout)["nodes"]) and len(rows) == 2 and rows)
        stuck = next(node["pid"] for node in nodes if node["node"] == "box/2")
        os.kill(stuck, signal.SIGSTOP)  # its reactor stops, as if wedged
        try:
            server.wait_for_log(re.compile(r"worker 2 has not pinged its watchdog for [\d.]+s: .* not pinging systemd's watchdog"))
            sock.setblocking(False)
            while True:  # the pings sent before that
                try:
                    next_message()
                except BlockingIOError:
                    break
            sock.settimeout(2.5)  # more than two of the parent's rounds
            with pytest.raises(socket.timeout):
                next_message()
            sock.settimeout(TIMEOUT)
        finally:
            os.kill(stuck, signal.SIGCONT)
        assert next_message() == "WATCHDOG=1"
        server.wait_for_log(re.compile(r"every worker pings its watchdog again"))
        assert server.kill(signal.SIGTERM) == 0
    finally:
        sock.close()
