"""Retention: which items expire, pruning in batches, cursors that stay valid."""
from __future__ import annotations

from datetime import timedelta

import pytest

from notifd import store
from notifd.config import Config
from notifd.items import Pick, Window
from notifd.retention import Pruner, Rule, expired, prune_now, rules
from tests.harness import HeldDatabase, clock_at_now
from tests.posts import add_item

DAY = timedelta(days=1)

@pytest.fixture
def engine(engine_on_each_database):
    """Each test here on the test database runs twice, as test_x[sqlite] and test_x[postgresql]."""
    return engine_on_each_database


def add(database, type_name, text, age):
    return database.call(add_item, type_name, text, now=store.utcnow() - age)[0]


def test_rules_from_the_configuration():
    config = Config(
        retention=30 * DAY,
        types={"classified": {"retention": 90 * DAY}, "random": {"retention": None}, "weather": {"recent_max_count": 3}},
        given=frozenset({"retention", "types"}),
    )
    assert rules(config) == [
        Rule("classified", 90 * DAY),
        Rule(None, 30 * DAY, ("classified", "random")),  # random: kept forever
    ]
    assert rules(Config(retention=None)) == []


def test_prune_removes_only_expired_items_and_cursors_stay_valid(database, engine):
    old = [add(database, "classified", f"old {i}", 40 * DAY) for i in range(5)]
    keep = add(database, "classified", "recent", DAY)
    kept_random = add(database, "random", "7", 40 * DAY)
    config = Config(retention=30 * DAY, types={"random": {"retention": None}}, given=frozenset({"retention"}))
    found = rules(config)
    now = store.utcnow()
    assert expired(engine, found, now) == {"classified": 5}
    assert prune_now(engine, found, now, batch=2) == {"classified": 5}
    assert sorted(i.id for i in database.call(store.list_items)) == [keep, kept_random]
    # A client that had read up to the second old item reads the recent one next.
    window = Window(max_age=None, max_count=None)
    assert database.call(store.next_unread, "classified", old[1], Pick.OLDEST, window, now).id == keep
    assert database.call(store.next_unread, "classified", keep, Pick.OLDEST, window, now) is None


def test_the_daemon_prunes_in_batches_between_other_work(database):
    for i in range(7):
        add(database, "classified", f"old {i}", 40 * DAY)
    held = HeldDatabase(database)
    clock = clock_at_now()
    pruned = []
    pruner = Pruner(held, clock, Config(retention=30 * DAY, prune_batch=3), on_pruned=pruned.append)
    pruner.start()
    batches = 0
    while held.held:
        assert len(held.held) == 1  # one batch at a time: client queries get in between
        held.release_one()
        batches += 1
    assert pruned == [3, 3, 1] and batches == 4  # three batches of items, then the old changes
    assert database.call(store.list_items) == []
    # A pass already running is not doubled.
    add(database, "classified", "old again", 40 * DAY)
    clock.advance(pruner.interval)
    clock.advance(pruner.interval)
    assert len(held.held) == 1
    pruner.stop()
