"""The hub: finding new items in the store and handing them to notifiers."""
from __future__ import annotations

import time
from datetime import timedelta

from twisted.internet import defer, task

from notifd import Notifier, Window, store
from notifd.hub import Hub
from tests.unit.test_wire import HeldDatabase


class Listener:
    def __init__(self):
        self.heard = []

    def item_added(self, type_name):
        self.heard.append(type_name)


def make_hub(db, windows=None):
    clock = task.Clock()
    clock.advance(time.time())
    hub = Hub(db, clock, windows or {"classified": Window(), "random": Window()}, poll_interval=1.0)
    return hub, clock


def test_starts_from_where_the_store_stands(database):
    database.call(store.add_item, "classified", "before")
    hub, clock = make_hub(database)
    seen = []
    hub.notifiers = [("test", Notifier("record", seen.append))]
    hub.start()
    hub.wake()
    assert seen == []  # items before the start are unread state, not news
    item_id, _ = database.call(store.add_item, "classified", "after")
    hub.wake()
    assert [item.id for item in seen] == [item_id]
    assert hub.high_water == item_id


def test_the_safety_poll_finds_items_without_a_wakeup(database):
    hub, clock = make_hub(database)
    seen = []
    hub.notifiers = [("test", Notifier("record", seen.append))]
    hub.start()
    database.call(store.add_item, "classified", "quiet")
    assert seen == []
    clock.advance(1.0)
    assert [item.text for item in seen] == ["quiet"]
    hub.stop()


def test_wakeups_during_a_check_are_coalesced_into_one_more_check(database):
    held = HeldDatabase(database)
    hub, clock = make_hub(held)
    hub.start()
    held.release()
    for _ in range(5):
        hub.wake()
    assert len(held.held) == 1  # one query in flight, the other wake-ups remembered
    database.call(store.add_item, "classified", "x")
    held.release()
    assert len(held.held) == 0  # the follow-up check ran and found the item
    assert hub.high_water == 1


def test_a_failing_notifier_does_not_stop_the_others(database):
    hub, clock = make_hub(database)
    seen = []

    def broken(item):
        raise RuntimeError("boom")

    failed_later = defer.Deferred()
    hub.notifiers = [
        ("bad", Notifier("raises", broken)),
        ("slow", Notifier("fails later", lambda item: failed_later)),
        ("good", Notifier("record", seen.append)),
    ]
    hub.start()
    database.call(store.add_item, "classified", "x")
    hub.wake()
    assert len(seen) == 1
    failed_later.errback(RuntimeError("late"))  # logged, not raised


def test_push_once_per_type_per_batch_and_at_once(database):
    hub, clock = make_hub(database)
    hub.notifiers = []
    hub.register_notifiers(register=lambda n: hub.notifiers.append(("hub", n)))
    hub.start()
    listener = Listener()
    hub.subscribe(listener)
    for text in ("a", "b", "c"):
        database.call(store.add_item, "classified", text)
    database.call(store.add_item, "random", "4")
    hub.wake()
    # Pushed in the same turn as the batch is read, without waiting for the reactor.
    assert listener.heard == ["classified", "random"]
    clock.advance(0)  # the end of the turn: the batch is done
    assert listener.heard == ["classified", "random"]
    database.call(store.add_item, "classified", "d")
    hub.wake()
    assert listener.heard == ["classified", "random", "classified"]  # a new batch pushes again
    clock.advance(0)
    hub.unsubscribe(listener)
    database.call(store.add_item, "classified", "e")
    hub.wake()
    clock.advance(0)
    assert listener.heard == ["classified", "random", "classified"]


def test_a_type_is_pushed_once_per_batch_even_across_many_items(database):
    hub, clock = make_hub(database)
    hub.notifiers = []
    hub.register_notifiers(register=lambda n: hub.notifiers.append(("hub", n)))
    hub.start()
    listener = Listener()
    hub.subscribe(listener)
    with database.engine.begin() as conn:
        for i in range(50):
            store.add_item(conn, "classified", f"ad {i}")
    hub.wake()
    assert listener.heard == ["classified"]


def test_subscribe_returns_the_newest_recent_item_of_each_type(database):
    old = store.utcnow() - timedelta(days=30)
    database.call(store.add_item, "random", "1", now=old)
    ad, _ = database.call(store.add_item, "classified", "ad")
    database.call(store.add_item, "weather", "sunny")  # a type no plugin serves now
    hub, clock = make_hub(database, {"classified": Window(), "random": Window(max_age=timedelta(days=7))})
    hub.start()
    assert hub.subscribe(Listener()) == {"classified": ad}


def test_a_database_outage_is_retried_by_the_poll(database, engine):
    hub, clock = make_hub(database)
    seen = []
    hub.notifiers = [("test", Notifier("record", seen.append))]
    hub.start()
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items RENAME TO items_gone")
    hub.wake()
    clock.advance(1.0)
    assert hub._failing
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items_gone RENAME TO items")
    database.call(store.add_item, "classified", "back")
    clock.advance(1.0)
    assert not hub._failing and [i.text for i in seen] == ["back"]
