"""The hub: finding new items in the store and handing them to notifiers."""
from __future__ import annotations

from datetime import timedelta

import pytest

from twisted.internet import defer
from twisted.logger import formatEvent

from notifd import Notifier, Window, store
from notifd.hub import Hub
from notifd.plugins import errors
from tests.harness import HeldDatabase, Rig, WriteBetweenStatements, clock_at_now
from tests.posts import add_item


class Listener:
    def __init__(self):
        self.heard = []

    def item_added(self, type_name):
        self.heard.append(type_name)
        return True


def make_hub(db, windows=None):
    clock = clock_at_now()
    hub = Hub(db, clock, windows or {"classified": Window(), "random": Window()}, poll_interval=1.0)
    return hub, clock


def test_starts_from_where_the_store_stands(database):
    database.call(add_item, "classified", "before")
    hub, clock = make_hub(database)
    seen = []
    hub.notifiers = [("test", Notifier("record", seen.append))]
    hub.start()
    hub.wake()
    assert seen == []  # items before the start are unread state, not news
    item_id, _ = database.call(add_item, "classified", "after")
    hub.wake()
    assert [item.id for item in seen] == [item_id]
    assert hub.high_water == item_id


def test_the_safety_poll_finds_items_without_a_wakeup(database):
    hub, clock = make_hub(database)
    seen = []
    hub.notifiers = [("test", Notifier("record", seen.append))]
    hub.start()
    database.call(add_item, "classified", "quiet")
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
    database.call(add_item, "classified", "x")
    held.release()
    assert len(held.held) == 0  # the follow-up check ran and found the item
    assert hub.high_water == 1


def test_memory_answers_unless_a_wakeup_is_not_yet_followed_by_a_check(database):
    from notifd.items import Pick

    held = HeldDatabase(database)
    hub, clock = make_hub(held)
    hub.start()
    held.release()
    now = store.utcnow()
    assert hub.unread("classified", 0, Pick.OLDEST, now) == (True, None)
    clock.advance(1.0)  # the safety poll's check is in flight: it announces nothing
    assert len(held.held) == 1
    assert hub.unread("classified", 0, Pick.OLDEST, now) == (True, None)
    item_id, _ = database.call(add_item, "classified", "ad")
    hub.wake()  # a wake-up during that check: the hub is behind until a check begun after it ends
    assert hub.unread("classified", 0, Pick.OLDEST, now) == (False, None)
    held.release_one()  # the poll's check (it may or may not have seen the item)
    assert hub.unread("classified", 0, Pick.OLDEST, now) == (False, None)
    held.release_one()  # the check the wake-up asked for
    known, item = hub.unread("classified", 0, Pick.OLDEST, now)
    assert known and item.id == item_id
    hub.wakeup_pending = lambda: True  # a wake-up datagram not read yet
    assert hub.unread("classified", 0, Pick.OLDEST, now) == (False, None)
    hub.stop()


def test_a_failing_notifier_does_not_stop_the_others(database, logged):
    hub, clock = make_hub(database)
    seen = []

    def broken(item):
        raise RuntimeError("boom")

    failed_later = defer.Deferred()
    hub.notifiers = [
        ("bad", Notifier("raises", broken)),
        ("slow", Notifier("fails-later", lambda item: failed_later)),
        ("good", Notifier("record", seen.append)),
    ]
    hub.start()
    database.call(add_item, "classified", "x")
    hub.wake()
    assert len(seen) == 1
    failed_later.errback(RuntimeError("late"))  # logged, not raised
    assert [formatEvent(e) for e in logged if e.get("plugin") in ("bad", "slow")] == [
        "plugin bad failed in notifier raises: RuntimeError: boom",
        "plugin slow failed in notifier fails-later: RuntimeError: late",
    ]


def pushing_hub(database):
    """A started hub whose only notifier is its own push, with one subscribed listener."""
    hub, clock = make_hub(database)
    hub.notifiers = []
    hub.register_notifiers(register=lambda n: hub.notifiers.append(("hub", n)))
    hub.start()
    listener = Listener()
    hub.subscribe(listener)
    return hub, clock, listener


def test_push_once_per_type_per_batch_and_at_once(database):
    hub, clock, listener = pushing_hub(database)
    for text in ("a", "b", "c"):
        database.call(add_item, "classified", text)
    database.call(add_item, "random", "4")
    hub.wake()
    # Pushed in the same turn as the batch is read, without waiting for the reactor.
    assert listener.heard == ["classified", "random"]
    clock.advance(0)  # the end of the turn: the batch is done
    assert listener.heard == ["classified", "random"]
    sample = hub.metrics.registry.get_sample_value
    assert sample("notifd_notifications_sent_total", {"type": "classified"}) == 1
    assert sample("notifd_items_total", {"type": "classified"}) == 3
    database.call(add_item, "classified", "d")
    hub.wake()
    assert listener.heard == ["classified", "random", "classified"]  # a new batch pushes again
    clock.advance(0)
    hub.unsubscribe(listener)
    database.call(add_item, "classified", "e")
    hub.wake()
    clock.advance(0)
    assert listener.heard == ["classified", "random", "classified"]


def test_a_type_is_pushed_once_per_batch_even_across_many_items(database):
    hub, clock, listener = pushing_hub(database)
    with database.engine.begin() as conn:
        for i in range(50):
            add_item(conn, "classified", f"ad {i}")
    hub.wake()
    assert listener.heard == ["classified"]


def test_subscribe_returns_the_newest_recent_item_of_each_type(database):
    old = store.utcnow() - timedelta(days=30)
    database.call(add_item, "random", "1", now=old)
    ad, _ = database.call(add_item, "classified", "ad")
    database.call(add_item, "weather", "sunny")  # a type no plugin serves now
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
    assert database.failing[False]  # reads fail: logged once by the database, retried by the poll
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items_gone RENAME TO items")
    database.call(add_item, "classified", "back")
    clock.advance(1.0)
    assert not database.failing[False] and [i.text for i in seen] == ["back"]


# --- isolation from plugins -----------------------------------------------------------


def rig_with(database, item_types, *plugin_notifiers):
    """A server whose hub calls `plugin_notifiers` before the push to clients."""
    rig = Rig(database, item_types)
    rig.hub.notifiers = [*plugin_notifiers, *rig.hub.notifiers]
    return rig


def test_a_raising_notifier_is_logged_counted_and_isolated(database, item_types, logged):
    events = logged
    seen = []

    def broken(item):
        raise RuntimeError("boom")

    rig = rig_with(
        database, item_types, ("bad-plugin", Notifier("raises", broken)), ("good", Notifier("record", seen.append))
    )
    proto, transport = rig.connect()
    proto.dataReceived(b"notif\n")
    before = errors["bad-plugin"]
    item_id = rig.post("classified", "still stored")
    assert errors["bad-plugin"] == before + 1
    assert [formatEvent(e) for e in events if e.get("plugin") == "bad-plugin"] == [
        "plugin bad-plugin failed in notifier raises: RuntimeError: boom"
    ]
    assert [item.id for item in seen] == [item_id]  # the next notifier ran
    assert transport.value() == b"will send notifs\r\nnotif: classified\r\n"  # clients were told
    assert [i.text for i in database.call(store.list_items)] == ["still stored"]


def test_a_notifier_that_takes_forever_does_not_delay_clients(database, item_types):
    never = defer.Deferred()  # a notifier that would take 10 s, or forever
    rig = rig_with(database, item_types, ("slow-plugin", Notifier("slow", lambda item: never, timeout=10.0)))
    proto, transport = rig.connect()
    proto.dataReceived(b"notif\n")
    before = errors["slow-plugin"]
    rig.post("classified", "ad")  # advances the clock by 0 only
    assert transport.value() == b"will send notifs\r\nnotif: classified\r\n"
    assert errors["slow-plugin"] == before
    rig.clock.advance(10.0)
    assert errors["slow-plugin"] == before + 1  # and then it is given up, and counted
    assert never.called
    rig.hub.stop()


def test_plugin_errors_are_exported_as_a_metric(database, item_types):
    from notifd.metrics import Metrics

    def broken(item):
        raise RuntimeError("boom")

    rig = rig_with(database, item_types, ("metric-plugin", Notifier("raises", broken)))
    before = errors["metric-plugin"]
    rig.post("classified", "x")
    sample = Metrics().registry.get_sample_value("notifd_plugin_errors_total", {"plugin": "metric-plugin"})
    assert sample == before + 1


def test_items_this_daemon_posted_are_added_without_reading_them_back(database):
    # A group of HTTP posts right after the last item the hub has: added at once, no query.
    from notifd.posting import Post

    held = HeldDatabase(database)
    hub, clock = make_hub(held)
    seen = []
    hub.notifiers = [("test", Notifier("record", seen.append))]
    hub.start()
    held.release()
    group = [posted.item for posted in database.call(store.post_items, [Post("classified", "a"), Post("random", "b")])]
    hub.posted(group)
    assert not held.held and seen == group and hub.high_water == group[-1].id
    assert not hub.behind() and hub.recent["random"].newest() == group[1]
    # Someone else committed in between (a gap before the group): a check, which finds both.
    other, _ = database.call(add_item, "classified", "from notifctl")
    group = [posted.item for posted in database.call(store.post_items, [Post("classified", "c")])]
    hub.posted(group)
    assert len(held.held) == 1 and hub.behind()
    held.release()
    assert [item.id for item in seen[2:]] == [other, group[0].id] and not hub.behind()
    # A check in flight might bring the group too: a check again, and each item is heard once.
    hub.wake()
    group = [posted.item for posted in database.call(store.post_items, [Post("classified", "d")])]
    hub.posted(group)
    held.release()
    assert [item.text for item in seen] == ["a", "b", "from notifctl", "c", "d"]
    hub.stop()


@pytest.mark.parametrize("write", ["post", "remove"])
@pytest.mark.parametrize("after_statement", [1, 2, 3])
def test_a_write_committed_while_the_state_loads_is_in_memory_or_caught_up(engine_on_each_database, write,
                                                                          after_statement):
    # On PostgreSQL each statement of the start's load sees its own snapshot. A post or a
    # removal committed between two of them must end up either in what was loaded or above
    # the marks, where the catch-up finds it; never between, where nothing would.
    from notifd import db as dbmod
    from notifd import hub as hub_module

    engine = engine_on_each_database
    with engine.begin() as conn:
        add_item(conn, "classified", "before")
        doomed, _ = add_item(conn, "classified", "removed meanwhile")

    def write_meanwhile():
        with engine.begin() as other:
            if write == "post":
                add_item(other, "classified", "posted meanwhile")
            else:
                store.remove_items(other, [doomed])

    with dbmod.transaction(engine) as conn:  # a read transaction, as the daemon's start runs it
        loader = WriteBetweenStatements(conn, after_statement, write_meanwhile)
        high_water, change_mark, recent = hub_module._load_state(loader, {"classified": 100, "random": 100})
    assert loader.statements > after_statement
    with engine.connect() as conn:
        stored = [item.id for item in store.items_after(conn, 0)]
        _, changes = store.news_after(conn, high_water, change_mark)
    # What the first catch-up does with memory: the removals above the change mark.
    removed_later = {change.subject for change in changes if change.kind == store.ITEM_REMOVED}
    held = [item.id for item in recent["classified"].newest_items(100) if item.id not in removed_later]
    assert held == [i for i in stored if i <= high_water]
