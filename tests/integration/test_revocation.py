"""Revoking takes effect on live connections, on every daemon: `notifctl client remove`,
`notifctl client rotate` and `auth.anonymous = false` (SIGHUP) close the sessions they
concern with one ERR line; `notifctl rm` makes every daemon forget the item.

The daemons run with a one-hour safety poll: only the wake-up that notifctl sends after
its commit can have told them, as it does for a post.
"""
from __future__ import annotations

import signal
import time

import pytest

from tests.harness import DATABASES
from tests.integration.conftest import TIMEOUT, eventually

pytestmark = pytest.mark.integration


@pytest.fixture(params=DATABASES)
def db_path(request, tmp_path):
    """Every test here runs twice: [sqlite] one daemon on a SQLite file, [postgresql] two nodes
    on one PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "notifd.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "notifd.toml"
    path.write_text('poll_interval = "1h"\n')
    return path


@pytest.fixture
def nodes(daemon, db_path, config):
    count = 1 if str(db_path).endswith(".db") else 2
    return [daemon("--node", f"node-{n}", "--config", str(config)) for n in range(count)]


def closed_with(client, line: str) -> float:
    """Read until the server's last line, which must be `line`, and the close; returns when."""
    while (got := client.read_line()) == b"notif: classified\r\n":
        pass
    assert got == line.encode() + b"\r\n"
    assert client.sock.recv(100) == b""  # then closed
    return time.monotonic()


def hello(node, name, token):
    client = node.connect()
    assert client.ask(f"hello {name} {token}") == "OK"
    return client


@pytest.mark.parametrize("action, reason", [
    ("remove", "ERR client removed"),
    ("rotate", "ERR token changed; hello again with the new one"),
])
def test_revoking_a_client_closes_its_sessions_on_every_node(nodes, notifctl, action, reason):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    other = notifctl("client", "add", "other").stdout.splitlines()[-1]
    sessions = []
    for node in nodes:
        waiting = hello(node, "kiosk", token)
        assert waiting.ask("notif") == "will send notifs"  # silent for hours, in notification mode
        sessions += [waiting, hello(node, "kiosk", token)]
    bystanders = [hello(node, "other", other) for node in nodes]

    done = notifctl("client", action, "kiosk")
    committed = time.monotonic()
    for session in sessions:
        closed_with(session, reason)
    assert time.monotonic() - committed < TIMEOUT
    for bystander in bystanders:
        assert bystander.ask("random?").isdigit()  # others are served on
    if action == "rotate":
        new_token = done.stdout.splitlines()[-1]
        for node in nodes:
            assert hello(node, "kiosk", new_token).ask("random?").isdigit()  # the new token stays served
            assert node.connect().ask(f"hello kiosk {token}") == "ERR unknown client or wrong token"
    else:
        for node in nodes:
            assert node.connect().ask(f"hello kiosk {token}") == "ERR unknown client or wrong token"


def test_turning_anonymous_clients_off_closes_their_sessions(nodes, notifctl, config):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    node = nodes[0]
    anonymous = [node.connect(), node.connect()]
    assert anonymous[0].ask("random?").isdigit()
    assert anonymous[1].ask("notif") == "will send notifs"
    named = hello(node, "kiosk", token)
    config.write_text('poll_interval = "1h"\n[auth]\nanonymous = false\n')
    node.proc.send_signal(signal.SIGHUP)
    for client in anonymous:
        closed_with(client, "ERR anonymous clients are no longer served; hello first")
    assert named.ask("random?").isdigit()
    assert node.connect().ask("random?") == "ERR hello first"


def test_a_removed_item_is_forgotten_by_every_node(nodes, notifctl):
    ids = [notifctl("add", "classified", text).stdout.strip() for text in ("first", "second", "third")]
    for node in nodes:  # each node's memory of recent items holds the three
        eventually(lambda node=node: node.connect().ask("classified?") == "first")
    assert notifctl("rm", ids[1]).returncode == 0

    def read_all(node):
        client = node.connect()
        return [client.ask("classified?") for _ in range(3)]

    for node in nodes:
        if node.db_path == nodes[0].db_path and str(node.db_path).endswith(".db"):
            # SQLite: the wake-up datagram is in the daemon's socket before notifctl exits,
            # and a query never answers from memory past an unread wake-up.
            assert read_all(node) == ["first", "third", ""]
        else:
            # PostgreSQL: NOTIFY reaches the node through its listening connection, a moment later.
            eventually(lambda node=node: read_all(node) == ["first", "third", ""])
