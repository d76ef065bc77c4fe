"""The hub's memory of recent items (notifd.recent) against the store's own query.

The property: whenever memory says it is sure, its answer is the one `store.next_unread`
gives the same cursor, window and time on a real SQLite database holding the same items.
Random posts, passing time, small caps (memory loses its oldest items), windows by age and
count, a restart in the middle (memory loaded from the store) and SIGHUP window changes.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from notifd import store
from notifd.items import Item, Pick, Window
from notifd.recent import IN_MEMORY_MAX, RecentItems, cap_for
from tests.posts import add_item

T0 = datetime(2026, 11, 26, 12, 0, 0)
SETTINGS = settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

windows = st.builds(
    Window,
    max_age=st.sampled_from([None, timedelta(seconds=5), timedelta(seconds=30)]),
    max_count=st.sampled_from([None, 1, 2, 4, 8]),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("post"), st.sampled_from(["classified", "random"])),
        st.tuples(st.just("wait"), st.integers(1, 20)),
        st.tuples(st.just("ask"), st.integers(0, 30), st.sampled_from(list(Pick))),
        st.tuples(st.just("restart")),
        st.tuples(st.just("window"), windows),
    ),
    max_size=60,
)


@SETTINGS
@given(window=windows, cap=st.integers(1, 6), steps=steps)
def test_memory_answers_as_the_store_does_or_not_at_all(window, cap, steps):
    engine = create_engine("sqlite://")
    store.metadata.create_all(engine)
    now = T0
    memory = RecentItems(cap)
    with engine.begin() as conn:
        for step in steps:
            if step[0] == "post":
                item_id, _ = add_item(conn, step[1], "x", now=now)
                if step[1] == "classified":  # memory holds one type; the other only takes ids
                    memory.add(Item(item_id, "classified", "x", now))
            elif step[0] == "wait":
                now += timedelta(seconds=step[1])
            elif step[0] == "restart":
                newest = store.newest_items(conn, "classified", cap)
                memory = RecentItems(cap, newest, complete=len(newest) < cap)
            elif step[0] == "window":
                window = step[1]
                memory.window_changed()
            else:
                _, after, pick = step
                known, item = memory.unread(after, pick, window, now)
                if known:
                    assert item == store.next_unread(conn, "classified", after, pick, window, now)
                else:
                    assert item is None
    engine.dispose()


def test_memory_is_sure_in_the_common_cases():
    window = Window(max_age=timedelta(days=7), max_count=100)
    items = [Item(n, "classified", f"ad {n}", T0) for n in range(1, 6)]
    # Everything the type has fits: sure at any cursor.
    memory = RecentItems(cap_for(window), items, complete=True)
    assert memory.unread(0, Pick.OLDEST, window, T0) == (True, items[0])
    assert memory.unread(2, Pick.OLDEST, window, T0) == (True, items[2])
    assert memory.unread(5, Pick.OLDEST, window, T0) == (True, None)
    assert memory.unread(0, Pick.NEWEST, window, T0) == (True, items[-1])
    # The newest 3 of more: sure above them, or when the count window ends inside memory.
    memory = RecentItems(3, items[2:], complete=False)
    assert memory.unread(0, Pick.OLDEST, window, T0) == (False, None)
    assert memory.unread(2, Pick.OLDEST, window, T0) == (True, items[2])
    assert memory.unread(0, Pick.NEWEST, window, T0) == (True, items[-1])
    assert memory.unread(0, Pick.OLDEST, Window(max_age=None, max_count=3), T0) == (True, items[2])


def test_expired_items_are_forgotten_without_losing_completeness():
    window = Window(max_age=timedelta(seconds=10), max_count=None)
    memory = RecentItems(10, [Item(1, "classified", "old", T0), Item(2, "classified", "new", T0 + timedelta(seconds=30))])
    later = T0 + timedelta(seconds=35)
    assert memory.unread(0, Pick.OLDEST, window, later) == (True, Item(2, "classified", "new", T0 + timedelta(seconds=30)))
    assert len(memory) == 1
    # A longer window (SIGHUP) may make the forgotten item recent again: ask the store.
    memory.window_changed()
    assert memory.unread(0, Pick.OLDEST, Window(max_age=None, max_count=None), later) == (False, None)


def test_memory_keeps_at_most_its_cap():
    memory = RecentItems(3)
    for n in range(1, 1001):
        memory.add(Item(n, "classified", "x", T0))
    assert len(memory) == 3 and memory.complete_after == 997
    assert len(memory._items) <= 6  # forgotten items are dropped in bulk, not kept


@pytest.mark.parametrize("pick", list(Pick))
@pytest.mark.parametrize(
    "age, recent",
    [
        (timedelta(seconds=9), True),
        (timedelta(seconds=10), True),  # exactly max_age old: still recent, as in store._recent
        (timedelta(seconds=11), False),
    ],
)
def test_the_age_window_includes_an_item_exactly_max_age_old(pick, age, recent):
    window = Window(max_age=timedelta(seconds=10), max_count=None)
    item = Item(1, "classified", "ad", T0)
    memory = RecentItems(10, [item])
    assert memory.unread(0, pick, window, T0 + age) == (True, item if recent else None)
    assert len(memory) == int(recent)  # only an item past the window is forgotten


@pytest.mark.parametrize(
    "max_count, cap", [(None, IN_MEMORY_MAX), (5, 5), (IN_MEMORY_MAX + 1, IN_MEMORY_MAX)]
)
def test_memory_keeps_the_count_window_at_most_in_memory_max(max_count, cap):
    assert cap_for(Window(max_age=None, max_count=max_count)) == cap


def ads(*ids, at=T0):
    return [Item(n, "classified", f"ad {n}", at) for n in ids]


def test_memory_loaded_from_the_store_is_complete_above_its_oldest_item():
    everything = Window(max_age=None, max_count=None)
    # All the type has (ids of other types in between): sure at any cursor.
    memory = RecentItems(10, ads(5, 6), complete=True)
    assert memory.unread(0, Pick.OLDEST, everything, T0) == (True, ads(5)[0])
    assert memory.after(0) == ads(5, 6)
    # Only the newest of more: an older item may sit at any id below 5.
    memory = RecentItems(2, ads(5, 6), complete=False)
    assert memory.unread(3, Pick.OLDEST, everything, T0) == (False, None)
    assert memory.after(3) is None
    assert memory.unread(4, Pick.OLDEST, everything, T0) == (True, ads(5)[0])
    assert memory.after(4) == ads(5, 6)


def test_a_smaller_cap_forgets_the_oldest_and_memory_is_then_incomplete_below_them():
    everything = Window(max_age=None, max_count=None)
    memory = RecentItems(10, ads(1, 2, 3, 4, 5))
    memory.resize(2)
    assert (len(memory), memory.cap, memory.newest_items(10)) == (2, 2, ads(4, 5))
    assert memory.unread(0, Pick.OLDEST, everything, T0) == (False, None)
    assert memory.unread(3, Pick.OLDEST, everything, T0) == (True, ads(4)[0])
    memory.add(ads(6)[0])
    assert memory.newest_items(10) == ads(5, 6) and memory.after(4) == ads(5, 6)


def test_a_count_window_wider_than_memory_is_not_answered_from_memory():
    memory = RecentItems(3)
    for item in ads(1, 2, 3, 4):  # item 1 is forgotten: memory holds 2 to 4
        memory.add(item)
    last_four = Window(max_age=None, max_count=4)
    assert memory.unread(0, Pick.OLDEST, last_four, T0) == (False, None)  # the store says item 1
    assert memory.unread(1, Pick.OLDEST, last_four, T0) == (True, ads(2)[0])


def test_every_expired_item_at_the_head_is_forgotten():
    window = Window(max_age=timedelta(seconds=10), max_count=None)
    [new] = ads(4, at=T0 + timedelta(seconds=30))
    memory = RecentItems(10, ads(1, 2, 3) + [new])
    assert memory.unread(0, Pick.OLDEST, window, T0 + timedelta(seconds=35)) == (True, new)
    assert len(memory) == 1


FRESH = Item(1, "classified", "fresh", T0 + timedelta(seconds=30))
LAGGING = Item(2, "classified", "lagging clock", T0)  # ids follow commits, times the posting node's clock


@pytest.mark.parametrize(
    "window, newest",
    [(Window(max_age=timedelta(seconds=10), max_count=None), FRESH), (Window(max_age=None, max_count=None), LAGGING)],
)
def test_an_id_newer_than_its_time_is_not_answered_once_expired(window, newest):
    memory = RecentItems(10, [FRESH, LAGGING])
    assert memory.unread(0, Pick.NEWEST, window, T0 + timedelta(seconds=35)) == (True, newest)


def test_removed_items_are_forgotten():
    memory = RecentItems(10, ads(1, 2, 3))
    memory.remove(2)
    memory.remove(7)  # not here: nothing happens
    assert memory.after(0) == ads(1, 3) and memory.newest_items(1) == ads(3)
    memory.remove(3)
    assert memory.newest() == ads(1)[0]


def test_removing_an_item_already_forgotten_leaves_the_held_ones():
    memory = RecentItems(4, ads(1, 2, 3, 4, 5, 6))  # 1 and 2 forgotten, still in the list
    memory.remove(1)
    assert memory.after(2) == ads(3, 4, 5, 6) and len(memory) == 4


def test_by_default_the_items_given_are_every_item_of_the_type():
    assert RecentItems(10, ads(5, 6)).after(0) == ads(5, 6)  # ids 1-4 were removed, not forgotten
    assert RecentItems(10, ads(5, 6), complete=False).after(0) is None
