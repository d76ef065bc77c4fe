"""The PostgreSQL wake-up listener on its own: NOTIFY wakes it, a killed connection
comes back by itself and wakes it again (the catch-up), stop() ends its thread."""
from __future__ import annotations

import queue

import pytest

from notifd import db as dbmod
from notifd.wakeup import PgListener, send_wakeup
from tests import pg
from tests.integration.conftest import TIMEOUT

pytestmark = pytest.mark.integration


class ThreadReactor:
    """Just what the listener asks of a reactor: callFromThread, here into a queue the test reads."""

    def __init__(self):
        self.calls: queue.Queue = queue.Queue()

    def callFromThread(self, f, *args):
        self.calls.put((f, args))

    def run_next(self):
        f, args = self.calls.get(timeout=TIMEOUT)
        f(*args)


@pytest.fixture
def engine(pg_url):
    engine = dbmod.open_engine(dbmod.database_url(pg_url))
    yield engine
    engine.dispose()


def test_notify_wakes_and_a_killed_connection_reconnects_and_catches_up(engine, pg_url):
    reactor = ThreadReactor()
    woken = []
    listener = PgListener(reactor, engine, lambda: woken.append("wake"), "test-node")
    assert listener.pending()  # not listening yet: the hub may be behind
    first = listener.start()
    while not first.called:
        reactor.run_next()
    assert listener.connected and woken == ["wake"]  # connecting is itself a wake-up (catch-up)
    assert not listener.pending()

    send_wakeup(engine)
    f, args = reactor.calls.get(timeout=TIMEOUT)
    assert listener.pending()  # heard, not yet handed to the hub: random? asks the database
    f(*args)
    assert woken == ["wake", "wake"] and not listener.pending()

    pids = pg.execute(pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'notifd-listen test-node'")
    assert len(pids) == 1
    pg.execute(pg_url, "SELECT pg_terminate_backend(%s)", pids[0])
    while listener.connected:
        reactor.run_next()  # _disconnected
    while not listener.connected:
        reactor.run_next()  # reconnected after the back-off, then _connected wakes
    assert woken == ["wake"] * 3
    listener.stop()
    listener._thread.join(timeout=TIMEOUT)
    assert not listener._thread.is_alive()
