"""No item is skipped whatever order posters commit in (PostgreSQL, two nodes, every posting path).

Readers follow items by "id above the last one seen": the nodes' hubs, a named client's
cursor, the durable notifiers' outbox marks. On PostgreSQL an id is handed out at insert,
so a poster that got id N and commits after another poster's N+1 would leave N behind
every reader that saw N+1. The test forces that interleaving: a trigger holds the first
poster's INSERT (its id already drawn) on a lock the test owns while the second poster
runs, and clients read in that window; then the test lets the first poster commit. Every post goes through posting.store_posts, where posters
take turns from their first id to their commit: the second poster waits, so there is
nothing to skip.
"""
from __future__ import annotations

import subprocess

import pytest

from notifd.posting import ITEMS_LOCK
from tests import pg
from tests.integration.collector import collector_config, delivered_ids
from tests.integration.conftest import (
    TIMEOUT,
    LineClient,
    _script,
    ensure_database,
    eventually,
)

pytestmark = pytest.mark.integration

# The harness's `daemon` fixture, on the test's PostgreSQL database.
db_path = pytest.fixture(lambda pg_url: pg_url)

GATE = 4242  # an advisory lock the test holds: a 'slow' INSERT waits for it, its id drawn
NODES = ("node-a", "node-b")

SLOW_INSERT = f"""
CREATE FUNCTION hold_slow_posts() RETURNS trigger AS $$
BEGIN
    IF NEW.text LIKE 'slow%' THEN
        PERFORM pg_advisory_lock_shared({GATE});
        PERFORM pg_advisory_unlock_shared({GATE});
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER hold_slow_posts BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION hold_slow_posts();
"""

# One command per posting path: {text} and {n} are filled in per poster.
PATHS = {
    "plain": lambda text, n, tmp: ["add", "classified", text],
    "id": lambda text, n, tmp: ["add", "--id", f"order-{n}", "classified", text],
    "batch": lambda text, n, tmp: ["add", "--batch", _batch_file(tmp, n, f"classified {text}\n")],
}


def _batch_file(tmp, n, content) -> str:
    path = tmp / f"batch-{n}.txt"
    path.write_text(content)
    return str(path)


@pytest.fixture
def setup(tmp_path, pg_url, daemon):
    ensure_database(pg_url)
    pg.execute(pg_url, SLOW_INSERT)
    config, delivered = collector_config(tmp_path)
    nodes = [daemon("--node", name, "--config", str(config)) for name in NODES]
    return pg_url, config, delivered, nodes


@pytest.fixture
def gate(setup):
    """Hold the gate: a 'slow' post waits in its INSERT until the test calls `gate.open()`."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(setup[0]).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s)", (GATE,))

    class Gate:
        @staticmethod
        def open():
            conn.execute("SELECT pg_advisory_unlock(%s)", (GATE,))

    yield Gate
    conn.close()


def _waiting_on(url: str, key: int) -> int:
    """How many backends wait for the advisory lock `key` (a key below 2**32: objid, classid 0)."""
    return pg.execute(
        url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = 0 AND objid = %s",
        (key,),
    )[0][0]


def _notifctl(url, config) -> list[str]:
    return [*_script("notifctl"), "--config", str(config), "--db", url]


def _poster(url, config, args):
    return subprocess.Popen([*_notifctl(url, config), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _named_in_notif(node, name, token) -> LineClient:
    client = node.connect()
    assert client.ask(f"hello {name} {token}") == "OK"
    assert client.ask("notif") == "will send notifs"
    return client


def _drain(client: LineClient) -> list[str]:
    """Leave notification mode (skipping any notif: lines) and read every unread ad, oldest first."""
    client.send("stop_notif")
    while (line := client.read_line()) != b"OK\r\n":
        assert line == b"notif: classified\r\n", line
    texts = []
    while text := client.ask("classified?"):
        texts.append(text)
    assert client.ask("notif") == "will send notifs"
    return texts


@pytest.mark.parametrize("path", PATHS)
def test_an_item_committed_after_a_higher_id_is_not_skipped(setup, gate, tmp_path, path):
    url, config, delivered, nodes = setup
    tokens = {}
    for node in nodes:
        name = f"kiosk-{node.port}"
        created = subprocess.run(
            [*_notifctl(url, config), "client", "add", name], capture_output=True, text=True, check=True
        )
        tokens[node] = (name, created.stdout.splitlines()[-1])
    named = {node: _named_in_notif(node, *tokens[node]) for node in nodes}

    slow = _poster(url, config, PATHS[path]("slow one", 1, tmp_path))
    # The first poster has its id and waits at the gate, uncommitted.
    eventually(lambda: _waiting_on(url, GATE) == 1)
    fast = _poster(url, config, PATHS[path]("fast two", 2, tmp_path))
    # The second poster waits for its turn (or, without turns, commits the higher id).
    eventually(lambda: fast.poll() is not None or _waiting_on(url, ITEMS_LOCK) == 1)

    # Clients read in that window, as the tutorial's loop would after a notification.
    seen = {node: _drain(named[node]) for node in nodes}
    gate.open()

    assert slow.wait(timeout=TIMEOUT) == 0, slow.stderr.read()
    assert fast.wait(timeout=TIMEOUT) == 0, fast.stderr.read()
    slow_id, fast_id = int(slow.stdout.read()), int(fast.stdout.read())
    assert slow_id < fast_id  # the interleaving the test is about

    for node in nodes:
        client = named[node]
        # Every node pushes the news, and the named client then reads everything, in id order.
        try:
            pushed = client.read_line()
        except TimeoutError:
            raise AssertionError(f"{node.port}: the item committed after a higher id was never pushed") from None
        assert pushed == b"notif: classified\r\n"
        seen[node] += _drain(client)
        assert seen[node] == ["slow one", "fast two"], node.drained_log()
        # A fresh hello continues from the stored cursor: nothing left, nothing skipped.
        again = node.connect()
        assert again.ask(f"hello {tokens[node][0]} {tokens[node][1]}") == "OK"
        assert again.ask("classified?") == ""
        # The node's memory of recent items holds both (an anonymous client starts from 0).
        anonymous = node.connect()
        assert [anonymous.ask("classified?") for _ in range(3)] == ["slow one", "fast two", ""]

    # The durable notifier gets both (each once: nodes enqueue each item once).
    eventually(lambda: delivered_ids(delivered) == [slow_id, fast_id], timeout=3 * TIMEOUT)


@pytest.mark.parametrize("path", PATHS)
def test_the_second_poster_waits_for_the_first_to_commit(setup, gate, tmp_path, path):
    """The mechanism, on every path: while the first post is uncommitted, the second waits for its turn."""
    url, config, _, _ = setup
    slow = _poster(url, config, PATHS[path]("slow one", 1, tmp_path))
    eventually(lambda: _waiting_on(url, GATE) == 1)
    fast = _poster(url, config, PATHS[path]("fast two", 2, tmp_path))
    eventually(lambda: _waiting_on(url, ITEMS_LOCK) == 1)
    assert fast.poll() is None
    gate.open()
    assert slow.wait(timeout=TIMEOUT) == 0, slow.stderr.read()
    assert fast.wait(timeout=TIMEOUT) == 0, fast.stderr.read()
    assert int(slow.stdout.read()) < int(fast.stdout.read())
