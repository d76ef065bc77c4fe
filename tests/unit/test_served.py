"""What the running daemons serve, as notifctl reads it from their heartbeats."""
from __future__ import annotations

from datetime import datetime, timedelta

from notifd import posting, store

NOW = datetime(2026, 11, 30, 12, 0, 0)


def test_running_daemons_are_those_with_a_recent_heartbeat_and_no_stop():
    rows = [
        ("a", "classified,random", NOW - timedelta(seconds=5), None),
        ("b", "classified", "2026-11-30 11:59:50.000000", None),  # sqlite3's text, 10 s ago
        ("gone", "weather", NOW - timedelta(seconds=16), None),  # missed three beats
        ("stopped", "weather", NOW, NOW),
    ]
    assert posting.running_daemons(rows, NOW) == [
        posting.Running("a", frozenset({"classified", "random"})), posting.Running("b", frozenset({"classified"})),
    ]


def test_a_type_no_running_daemon_serves_is_named_with_what_each_serves():
    running = [posting.Running("a", frozenset({"classified", "random"})), posting.Running("b", frozenset())]
    assert posting.unserved(["weather", "classified", "weather"], running) == (
        "weather: served by no running notifd (a serves classified, random; b serves nothing)"
    )
    assert posting.unserved(["random"], running) is None


def test_nothing_is_said_when_no_daemon_runs_or_one_does_not_say():
    assert posting.unserved(["weather"], []) is None
    older = [posting.Running("a", frozenset({"classified"})), posting.Running("old", None)]
    assert posting.unserved(["weather"], older) is None


def test_the_heartbeat_records_the_types(engine, tmp_path):
    from notifd import db as dbmod

    database = dbmod.Database.synchronous(engine)
    database.call(store.node_alive, "a", version="1", pid=1, listen="", started_at=NOW, connections=0,
                  subscribers=0, types=["classified", "weather"], now=NOW)
    [node] = database.call(store.list_nodes)
    assert node.types == "classified,weather"
    rows = posting.sqlite_nodes(tmp_path / "notifd.db")  # notifctl add's reading, without SQLAlchemy
    assert posting.running_daemons(rows, NOW) == [posting.Running("a", frozenset({"classified", "weather"}))]
