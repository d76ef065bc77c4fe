"""The store under real concurrency on PostgreSQL: several nodes' writes at the same
moment, each on its own connection and thread, released together by a barrier.

SQLite needs none of this (one writer at a time); on PostgreSQL, READ COMMITTED lets two
nodes read the same state and both act on it unless the statement says otherwise.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from notifd import db as dbmod
from notifd import store
from tests.posts import add_item

pytestmark = pytest.mark.integration

NODES = 4


@pytest.fixture
def databases(pg_url):
    """One Database per node, each with its own engine (its own connections)."""
    engines = [dbmod.open_engine(dbmod.database_url(pg_url)) for _ in range(NODES)]
    yield [dbmod.Database.synchronous(engine) for engine in engines]
    for engine in engines:
        engine.dispose()


def at_once(databases, f, *args, **kwargs) -> list:
    """Run `f` on every node's database at the same moment; returns the results (raises the first error)."""
    barrier = threading.Barrier(len(databases))

    def run(database):
        barrier.wait(timeout=30)
        return database.call(f, *args, **kwargs)

    with ThreadPoolExecutor(len(databases)) as pool:
        return [future.result(timeout=60) for future in [pool.submit(run, d) for d in databases]]


def test_nodes_claiming_together_never_claim_one_delivery_twice(databases):
    first = databases[0]
    now = store.utcnow()
    first.call(store.add_marks, ["hook"])
    for n in range(200):
        first.call(add_item, "classified", f"ad {n}")
    first.call(store.enqueue_new_items, ["hook"], now=now)
    lease = {"hook": now + timedelta(minutes=5)}
    claimed: list[int] = []
    while True:
        rounds = at_once(databases, store.claim_deliveries, {"hook": 8}, node="n", now=now, lease_until=lease)
        got = [delivery.item.id for deliveries in rounds for delivery in deliveries]
        if not got:
            break
        claimed += got
    assert len(claimed) == 200
    assert len(set(claimed)) == 200  # SKIP LOCKED: each delivery went to exactly one node


def test_nodes_enqueueing_together_enqueue_each_item_once(databases):
    first = databases[0]
    first.call(store.add_marks, ["hook", "mail"])
    for n in range(100):
        first.call(add_item, "classified", f"ad {n}")
    # Each node sees the notifiers in its own order: the marks are still locked in one order.
    results = at_once(databases, store.enqueue_new_items, ["mail", "hook"], now=store.utcnow())
    assert results == [False] * NODES
    deliveries = first.call(store.list_outbox)
    assert len(deliveries) == 200
    assert len({(d.item.id, d.notifier) for d in deliveries}) == 200


def test_notifiers_seen_for_the_first_time_by_several_nodes_at_once(databases):
    databases[0].call(add_item, "classified", "history")
    at_once(databases, store.enqueue_new_items, ["hook"], now=store.utcnow())
    assert databases[0].call(store.list_outbox) == []  # a new notifier starts at the newest item


def test_the_same_idempotency_key_posted_by_several_admins_at_once(databases):
    results = at_once(databases, add_item, "classified", "once", key="order-1")
    assert len({item_id for item_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * (NODES - 1) + [True]
    assert [item.text for item in databases[0].call(store.list_items)] == ["once"]


def test_one_client_marking_reads_on_several_nodes_at_once(databases):
    databases[0].call(store.add_client, "kiosk")
    [client] = databases[0].call(store.list_clients)
    barrier = threading.Barrier(NODES)

    def mark(database, item_id):
        barrier.wait(timeout=30)
        database.call(store.mark_read, [(client.id, "classified", item_id)])

    with ThreadPoolExecutor(NODES) as pool:
        for future in [pool.submit(mark, d, i) for i, d in enumerate(databases, start=10)]:
            future.result(timeout=60)
    # Never back: the furthest cursor wins whatever the order of the commits.
    assert databases[0].call(store.client_cursors, client.id) == {"classified": 10 + NODES - 1}


def test_the_same_client_name_added_by_two_admins_at_once(databases):
    outcomes = []
    barrier = threading.Barrier(NODES)

    def add(database):
        barrier.wait(timeout=30)
        try:
            database.call(store.add_client, "kiosk")
            outcomes.append("created")
        except store.ClientExists:
            outcomes.append("exists")

    with ThreadPoolExecutor(NODES) as pool:
        for future in [pool.submit(add, d) for d in databases]:
            future.result(timeout=60)
    assert sorted(outcomes) == ["created"] + ["exists"] * (NODES - 1)


def test_nodes_pruning_together_split_the_work(databases):
    old = store.utcnow() - timedelta(days=60)
    for n in range(300):
        databases[0].call(add_item, "classified", f"old {n}", now=old)
    cutoff = store.utcnow() - timedelta(days=30)
    pruned = 0
    while True:
        counts = at_once(databases, store.prune_batch, None, (), cutoff, 50)
        if not any(counts):
            break
        pruned += sum(counts)
    assert pruned == 300
    assert databases[0].call(store.list_items) == []


def test_a_reader_following_the_ids_never_misses_an_item_posted_concurrently(databases):
    """The hub and the outbox read "items above the last id seen": items must become visible
    in id order even when several admins post at the same moment."""
    posters, reader = databases[:-1], databases[-1]
    per_poster = 60
    done = threading.Event()
    seen: list[int] = []

    def follow():
        high_water = 0
        while True:
            finished = done.is_set()  # read before the query: a last pass after the posts
            for item in reader.call(store.items_after, high_water):
                seen.append(item.id)
                high_water = item.id
            if finished:
                return

    def post(database):
        for n in range(per_poster):
            database.call(add_item, "classified", f"ad {n}")

    with ThreadPoolExecutor(len(databases)) as pool:
        following = pool.submit(follow)
        for future in [pool.submit(post, d) for d in posters]:
            future.result(timeout=120)
        done.set()
        following.result(timeout=120)
    assert sorted(seen) == seen
    assert len(seen) == per_poster * len(posters)  # none skipped
