"""`notifctl outbox` shows what waits for a durable notifier, queued or not yet, and says when nothing does."""
from __future__ import annotations

import json
from datetime import timedelta

from notifd import store
from tests.posts import add_item


def test_an_empty_outbox_says_so(cli):
    result = cli("outbox")
    assert (result.code, result.out) == (0, "the outbox is empty: nothing waits for a durable notifier\n")
    assert json.loads(cli("outbox", "--json").out) == []


def test_items_committed_while_no_daemon_runs_are_shown_as_new(cli, database):
    database.call(add_item, "classified", "before the notifier ran")
    database.call(store.add_marks, ["webhook"])  # the daemon ran once with the notifier, then stopped
    first, _ = database.call(add_item, "classified", "posted while down")
    second, _ = database.call(add_item, "random", "7")
    assert cli("outbox").out.splitlines() == [
        f"-\tnew\twebhook\titem {first} (classified)\tnot queued yet: queued when notifd starts",
        f"-\tnew\twebhook\titem {second} (random)\tnot queued yet: queued when notifd starts",
    ]
    rows = json.loads(cli("outbox", "--json").out)
    assert [(r["id"], r["state"], r["notifier"], r["item_id"]) for r in rows] == [
        (None, "new", "webhook", first), (None, "new", "webhook", second),
    ]

    # A daemon runs: they are about to be queued; once queued they are deliveries like any other.
    now = store.utcnow()
    database.call(store.node_alive, "n1", version="1", pid=1, listen="", started_at=now, connections=0,
                  subscribers=0, types=["classified", "random"])
    assert cli("outbox").out.splitlines()[0].endswith("\tnot queued yet: being queued")
    database.call(store.enqueue_new_items, ["webhook"], now=now)
    shown = cli("outbox").out.splitlines()
    assert [line.split("\t")[1:4] for line in shown] == [
        ["pending", "webhook", f"item {first} (classified)"], ["pending", "webhook", f"item {second} (random)"],
    ]
    for delivery in database.call(store.claim_deliveries, {"webhook": 10}, node="n1", now=now,
                                  lease_until={"webhook": now + timedelta(minutes=1)}):
        database.call(store.delivered, delivery.id)
    assert cli("outbox").out == "the outbox is empty: nothing waits for a durable notifier\n"


def test_a_dead_delivery_has_no_next_attempt_and_says_so(cli, database):
    database.call(store.add_marks, ["webhook"])
    item_id, _ = database.call(add_item, "classified", "undeliverable")
    now = store.utcnow()
    database.call(store.enqueue_new_items, ["webhook"], now=now)
    (delivery,) = database.call(store.claim_deliveries, {"webhook": 10}, node="n1", now=now,
                                lease_until={"webhook": now + timedelta(minutes=1)})
    database.call(store.delivery_failed, delivery.id, "CommandFailed: exit status 3", None)  # no retry: dead
    assert cli("outbox").out.splitlines() == [
        f"{delivery.id}\tdead\twebhook\titem {item_id} (classified)\tattempts 1\tnext -\tCommandFailed: exit status 3"
    ]
    assert json.loads(cli("outbox", "--json").out)[0]["next_attempt_at"] is None
