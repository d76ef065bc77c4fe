"""The database layer: read and write transactions, and how an outage is reported."""
from __future__ import annotations

import sqlite3

import pytest

from notifd import store
from notifd.db import SQLITE_BUSY_TIMEOUT_MS, transaction
from tests.posts import add_item


def messages(events, text):
    return [e for e in events if text in (e.get("log_format") or "")]


def test_an_outage_is_logged_once_and_its_end_too(database, engine, logged):
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items RENAME TO items_gone")
    failures = []
    for _ in range(5):  # five clients asking during the outage
        database.run(store.max_item_id).addErrback(failures.append)
    assert len(failures) == 5
    assert len(messages(logged, "database unavailable for {kind}")) == 1
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items_gone RENAME TO items")
    database.run(store.max_item_id)
    database.run(store.max_item_id)
    assert len(messages(logged, "the database answers {kind} again")) == 1


def test_every_failed_call_is_counted_by_kind(engine):
    from notifd.db import Database

    counted = []
    database = Database(engine, on_error=counted.append)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items RENAME TO items_gone")
    for _ in range(3):  # logged once, counted each time: the metric shows how many clients it hit
        database.run(store.max_item_id).addErrback(lambda f: None)
    database.run(add_item, "classified", "x").addErrback(lambda f: None)
    database.run(store.list_clients)  # a read that works is not counted
    assert counted == ["reads"] * 3 + ["writes"]


def test_a_bug_in_a_query_is_logged_every_time_with_its_traceback(database, logged):
    def broken(conn):
        raise KeyError("bug")

    for _ in range(2):
        database.run(broken).addErrback(lambda f: None)
    assert len([e for e in logged if e.get("log_failure") is not None]) == 2


def test_readers_are_served_while_another_process_holds_the_write_lock(database, db_path, engine):
    database.call(add_item, "classified", "ad")
    other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # another writer, holding the lock
    try:
        assert database.call(store.max_item_id) == 1  # at once, not after the busy timeout
        with pytest.raises(Exception, match="database is locked"):
            with transaction(engine, write=True, busy_ms=50) as conn:  # a short wait: the test's
                add_item(conn, "classified", "blocked")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert SQLITE_BUSY_TIMEOUT_MS >= 1000  # writers normally wait a while before giving up
    with transaction(engine, write=True) as conn:
        add_item(conn, "classified", "after")
    assert [i.text for i in database.call(store.list_items)] == ["after", "ad"]


def test_every_query_that_writes_is_marked():
    # A writer without the mark would run in a deferred transaction, which can fail at once
    # with "database is locked" instead of waiting for the lock.
    import inspect

    for name, f in vars(store).items():
        if inspect.isfunction(f) and f.__module__ == store.__name__ and not name.startswith("_"):
            source = inspect.getsource(f)
            if any(verb in source for verb in ("insert(", "update(", "delete(")):
                assert getattr(f, "writes", False), f"store.{name} writes but is not marked @writes"


def test_a_write_in_a_read_transaction_is_refused(database):
    from notifd.db import UnmarkedWrite

    def sneaky(conn):  # writes, but is not marked @store.writes
        add_item(conn, "classified", "x")

    with pytest.raises(UnmarkedWrite, match="mark the query @store.writes"):
        database.call(sneaky)
    assert database.call(store.list_items) == []
    database.call(store.writes(sneaky))
    assert len(database.call(store.list_items)) == 1


def test_without_psycopg_the_error_names_the_pip_of_notifd_s_environment(monkeypatch):
    # Not `pip install notifd[postgresql]`: on PyPI, "notifd" is somebody else's project.
    import sys

    from notifd import db as dbmod

    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    with pytest.raises(dbmod.UnusableDatabase) as raised:
        dbmod.open_engine(dbmod.database_url("postgresql://notifd@db.example/notifd"))
    assert str(raised.value) == (
        f"PostgreSQL needs the psycopg package in notifd's environment: {sys.prefix}/bin/pip install 'psycopg[binary]>=3.1'"
    )
