"""Under load: a client that never reads, and posts in a tight loop while clients are served."""
from __future__ import annotations

import select
import threading

import pytest

from notifd import db as dbmod
from notifd import store
from tests.integration.conftest import TIMEOUT
from tests.posts import add_item

pytestmark = pytest.mark.integration


def test_a_client_that_never_reads_cannot_grow_the_daemon_or_delay_others(daemon):
    server = daemon()
    hog = server.connect()
    hog.sock.setblocking(False)
    request = b"random?\r\n" * 4096
    sent = 0
    before = server.rss_kib()
    # Send requests and never read a reply, until the daemon stops reading them: our
    # socket stays unwritable for a whole second.
    while True:
        _, writable, _ = select.select([], [hog.sock], [], 1.0)
        if not writable:
            break
        try:
            sent += hog.sock.send(request)
        except BlockingIOError:
            continue
        assert sent < 200 * 1024 * 1024, "the daemon kept reading a client that never reads"
    # Meanwhile, and after, other clients are served at once.
    other = server.connect()
    assert other.ask("random?").isdigit()
    assert other.ask("notif") == "will send notifs"
    grown = server.rss_kib() - before
    assert grown < 32 * 1024, f"RSS grew by {grown} KiB for {sent} bytes sent by a client that does not read"


def test_posting_in_a_tight_loop_while_clients_are_served(daemon, notifctl, db_path, tmp_path):
    token = notifctl("client", "add", "reader").stdout.splitlines()[-1]
    server = daemon()
    errors: list[str] = []
    stop = threading.Event()

    def read_loop(named: bool) -> None:
        # Named readers make the daemon write read cursors while the posters write items.
        try:
            client = server.connect()
            if named:
                assert client.ask(f"hello reader {token}") == "OK"
            while not stop.is_set():
                client.ask("classified?")
                assert client.ask("random?").lstrip("-").isdigit()
        except Exception as e:  # reported by the main thread
            errors.append(f"reader: {e!r}")

    def post_loop(n: int) -> None:
        engine = dbmod.open_engine(dbmod.database_url(str(db_path)))
        try:
            for i in range(n):
                with engine.begin() as conn:
                    add_item(conn, "classified", f"ad {i}")
        except Exception as e:
            errors.append(f"poster: {e!r}")
        finally:
            engine.dispose()

    readers = [threading.Thread(target=read_loop, args=(i % 2 == 0,)) for i in range(4)]
    posters = [threading.Thread(target=post_loop, args=(300,)) for _ in range(3)]
    for t in readers + posters:
        t.start()
    results = [notifctl("add", "classified", f"cli {i}", check=False) for i in range(10)]
    for t in posters:
        t.join(timeout=TIMEOUT * 6)
    stop.set()
    for t in readers:
        t.join(timeout=TIMEOUT)
    assert not errors
    assert [r.returncode for r in results] == [0] * 10, [r.stderr for r in results if r.returncode]
    assert not any("locked" in r.stderr for r in results)
    engine = dbmod.open_engine(dbmod.database_url(str(db_path)))
    with engine.begin() as conn:
        assert store.max_item_id(conn) == 3 * 300 + 10
    engine.dispose()
