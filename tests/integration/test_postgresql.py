"""Several notifd nodes on one PostgreSQL database: one source of truth, LISTEN/NOTIFY.

Real notifd processes on tcp:0, a real PostgreSQL (a fresh database per test; skipped with
the reason when there is none), real notifctl, plain sockets.
"""
from __future__ import annotations

import json
import re
import signal
import time

import pytest

from notifd import store
from tests import pg
from tests.harness import receive_all, subscribe
from tests.integration.conftest import (
    TIMEOUT,
    DaemonProcess,
    ensure_database,
    eventually,
    run_notifctl,
)

pytestmark = pytest.mark.integration

LISTENERS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'notifd-listen %'"


# The harness's `daemon` and `notifctl` fixtures, on the test's PostgreSQL database.
db_path = pytest.fixture(lambda pg_url: pg_url)


@pytest.fixture
def nodes(daemon):
    """Start a named notifd node on the test database."""
    return lambda name, *extra: daemon("--node", name, *extra)


@pytest.fixture
def slow_poll(tmp_path):
    """A config whose safety poll never comes during a test: only LISTEN/NOTIFY can wake the nodes."""
    path = tmp_path / "notifd.toml"
    path.write_text('poll_interval = "1h"\n')
    return str(path)


def test_three_nodes_300_clients_one_add(nodes, notifctl, start_notifctl, report):
    servers = [nodes(f"node-{n}") for n in "abc"]
    clients = [sock for server in servers for sock in subscribe(server.port, 100)]
    poster = start_notifctl("add", "classified", "Nice appart in the 11e.")
    assert poster.stdout.readline().strip().isdigit()
    committed = time.monotonic()  # notifctl prints the id once the item is committed, then NOTIFYs
    _, last = receive_all(clients, b"notif: classified\r\n")
    assert poster.wait(timeout=TIMEOUT) == 0
    report(f"PostgreSQL, 3 nodes, 300 clients (100 each), one notifctl add: last notification "
           f"{1000 * (last - committed):.1f} ms after the commit")
    status = json.loads(notifctl("status", "--json").stdout)
    assert sorted(node["node"] for node in status["nodes"] if node["up"]) == ["node-a", "node-b", "node-c"]
    for sock in clients:
        sock.close()


def test_a_named_client_continues_on_another_node(nodes, notifctl):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    for text in ("first ad", "second ad", "third ad"):
        notifctl("add", "classified", text)
    node_a, node_b = nodes("node-a"), nodes("node-b")
    on_a = node_a.connect()
    assert on_a.ask(f"hello kiosk {token}") == "OK"
    assert on_a.ask("classified?") == "first ad"
    on_a.close()
    # The read mark is stored just after the reply: wait for it, as a reconnecting client would.
    eventually(lambda: json.loads(notifctl("clients", "--json").stdout)[0]["unread"]["classified"] == 2)
    on_b = node_b.connect()
    assert on_b.ask(f"hello kiosk {token}") == "OK"
    assert on_b.ask("classified?") == "second ad"


def test_one_named_client_on_two_nodes_at_once_is_allowed(nodes, notifctl):
    """Decision (docs/scaling.md): both connections are served, as two connections on one node
    are; each is sent what it has not been sent, and the stored read state is the furthest."""
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    node_a, node_b = nodes("node-a"), nodes("node-b")
    on_a, on_b = node_a.connect(), node_b.connect()
    for client in (on_a, on_b):
        assert client.ask(f"hello kiosk {token}") == "OK"
        assert client.ask("notif") == "will send notifs"
    eventually(lambda: "connected (2)" in notifctl("clients").stdout)
    notifctl("add", "classified", "one")
    notifctl("add", "classified", "two")
    for client in (on_a, on_b):
        assert client.read_line() == b"notif: classified\r\n"
        assert client.ask("stop_notif") == "OK"
    assert on_a.ask("classified?") == "one"
    assert on_a.ask("classified?") == "two"
    assert on_b.ask("classified?") == "one"  # loaded at its hello, before A read anything
    eventually(lambda: json.loads(notifctl("clients", "--json").stdout)[0]["unread"]["classified"] == 0)
    # A new connection starts from the stored state: the furthest of the two.
    late = node_b.connect()
    assert late.ask(f"hello kiosk {token}") == "OK"
    assert late.ask("classified?") == ""


def test_killed_listen_connections_come_back_and_the_next_post_reaches_every_node(nodes, notifctl, pg_url, slow_poll):
    # With the safety poll an hour away, only LISTEN/NOTIFY (or the catch-up after a
    # reconnection) can tell the nodes about a post.
    servers = [nodes(f"node-{n}", "--config", slow_poll) for n in "abc"]
    clients = [sock for server in servers for sock in subscribe(server.port, 5)]
    eventually(lambda: len(pg.execute(pg_url, LISTENERS)) == 3)

    killed = pg.execute(pg_url, f"SELECT pg_terminate_backend(pid) FROM ({LISTENERS}) AS listeners")
    assert killed == [(True,)] * 3
    for server in servers:
        server.wait_for_log(re.compile(r"wake-ups: lost the PostgreSQL LISTEN connection"))
        server.wait_for_log(re.compile(r"wake-ups: listening to PostgreSQL again"))
    notifctl("add", "classified", "after the reconnection")
    receive_all(clients, b"notif: classified\r\n")

    # Killed again, and a post made at once, before they can be listening again: the
    # catch-up that follows each reconnection finds it.
    for sock in clients:
        sock.sendall(b"OK\r\n")
    pg.execute(pg_url, f"SELECT pg_terminate_backend(pid) FROM ({LISTENERS}) AS listeners")
    notifctl("add", "random", "42")
    receive_all(clients, b"notif: random\r\n")
    for sock in clients:
        sock.close()


def test_notifctl_on_postgresql(notifctl):
    assert notifctl("add", "--id", "order-1", "classified", "once").stdout.strip() == "1"
    assert notifctl("add", "--id", "order-1", "classified", "once").stdout.strip() == "1"
    too_long = notifctl("add", "--id", "k" * 201, "classified", "x", check=False)
    assert too_long.returncode == 1
    assert too_long.stderr == "notifctl: --id is 201 characters, over the limit of 200\n"
    assert [item["text"] for item in json.loads(notifctl("list", "--json").stdout)] == ["once"]
    check = notifctl("db", "check")
    assert f"schema {store.SCHEMA_HEAD} (expected {store.SCHEMA_HEAD})" in check.stdout


def test_db_copy_moves_a_sqlite_database_to_postgresql(tmp_path, pg_url, nodes):
    sqlite = tmp_path / "old.db"
    ensure_database(sqlite)
    token = run_notifctl(sqlite, "client", "add", "kiosk").stdout.splitlines()[-1]
    for text in ("first ad", "second ad", "removed ad"):
        run_notifctl(sqlite, "add", "classified", text)
    run_notifctl(sqlite, "rm", "3")  # its id was handed out: it must not come back on PostgreSQL
    old = DaemonProcess(sqlite).start()
    reader = old.connect()
    assert reader.ask(f"hello kiosk {token}") == "OK"
    assert reader.ask("classified?") == "first ad"
    assert old.kill(15) == 0  # a stop commits the read mark

    copied = run_notifctl(sqlite, "db", "copy", "--to", pg_url)
    assert copied.stdout.startswith("copied 2 items, 1 clients, 0 publishers, 1 cursors, 0 outbox_marks, 0 outbox to postgresql")
    again = run_notifctl(sqlite, "db", "copy", "--to", pg_url, check=False)
    assert again.returncode == 1
    assert re.fullmatch(r"notifctl: \S+ already holds data \(2 items, 1 clients, 1 cursors\); copy into an empty database\n",
                        again.stderr)

    node = nodes("node-a")
    client = node.connect()
    assert client.ask(f"hello kiosk {token}") == "OK"  # the token travelled, hashed
    assert client.ask("classified?") == "second ad"  # and the read state
    # The id sequence continues after the last id SQLite handed out, not the last one copied.
    assert run_notifctl(pg_url, "add", "classified", "third ad").stdout.strip() == "4"
    assert client.ask("classified?") == "third ad"
    run_notifctl(pg_url, "rm", "4")

    # And back to a file: the same rule for SQLite's counters.
    back = tmp_path / "back.db"
    run_notifctl(pg_url, "db", "copy", "--to", str(back))
    assert run_notifctl(back, "add", "classified", "fourth ad").stdout.strip() == "5"


def test_nodes_starting_together_on_an_empty_database_migrate_it_once(pg_url):
    # Each start migrates under an advisory lock: whoever comes second finds the schema at head.
    processes = [DaemonProcess(pg_url, "--node", f"node-{n}") for n in "abc"]
    try:
        _start_all(processes)
        for process in processes:
            assert process.connect().ask("random?").isdigit()
    finally:
        for process in processes:
            process.stop()
    assert pg.execute(pg_url, "SELECT version_num FROM alembic_version") == [(store.SCHEMA_HEAD,)]


def _start_all(processes: list[DaemonProcess]) -> None:
    """Start every process first, then wait for each to listen."""
    import threading

    errors = []

    def start(process):
        try:
            process.start()
        except Exception as e:  # reported below, with the node's log
            errors.append(e)

    threads = [threading.Thread(target=start, args=(p,)) for p in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=3 * TIMEOUT)
    assert not errors, errors


def test_notifctl_watch_fails_over_to_the_next_node(nodes, notifctl, start_notifctl):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    notifctl("add", "classified", "first ad")
    node_a, node_b = nodes("node-a"), nodes("node-b")
    watcher = start_notifctl(
        "watch", "--name", "kiosk", "--token", token,
        "--connect", f"tcp:127.0.0.1:{node_a.port}", "--connect", f"tcp:127.0.0.1:{node_b.port}",
    )
    assert watcher.stdout.readline() == "classified: first ad\n"
    assert node_a.kill(signal.SIGTERM) == 0  # its clients are closed; the read mark is committed
    eventually(lambda: "connected (1)" in notifctl("clients").stdout)  # now on node B
    notifctl("add", "classified", "second ad")
    # Node B continues from the stored read state: the first ad is not printed again.
    assert watcher.stdout.readline() == "classified: second ad\n"
