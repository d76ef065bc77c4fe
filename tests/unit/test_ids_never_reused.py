"""Delivery, change, item, client and publisher ids are never handed out twice, on a new
database and on one upgraded from the schema before each migration that made it so (0006,
0007, 0008), with every row kept."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import insert, select

from notifd import db as dbmod
from notifd import store
from tests.posts import add_item

NOW = datetime(2026, 12, 1, 12, 0, 0)


def deliver_all(database, notifier="hook"):
    """Enqueue the new items for `notifier`, claim them and record them delivered; returns the ids used."""
    database.call(store.enqueue_new_items, [notifier], now=NOW)
    claimed = database.call(store.claim_deliveries, {notifier: 100}, node="n", now=NOW,
                            lease_until={notifier: NOW + timedelta(minutes=1)})
    for delivery in claimed:
        database.call(store.delivered, delivery.id)
    return [delivery.id for delivery in claimed]


def test_a_delivered_delivery_id_is_not_given_again(database):
    database.call(store.add_marks, ["hook"])
    database.call(add_item, "classified", "one")
    [first] = deliver_all(database)
    database.call(add_item, "classified", "two")
    [second] = deliver_all(database)
    assert second > first  # the outbox was empty in between: SQLite would have given `first` again


def test_a_change_id_is_not_given_again_once_changes_are_pruned(database):
    [(item_id, _)] = [database.call(add_item, "classified", "gone")]
    database.call(store.remove_items, [item_id], now=NOW)
    before = database.call(store.max_change_id)
    assert database.call(store.prune_changes, NOW + timedelta(days=2)) == 1
    [(item_id, _)] = [database.call(add_item, "classified", "gone too")]
    database.call(store.remove_items, [item_id], now=NOW)
    assert database.call(store.max_change_id) > before  # running daemons read changes above their mark


def _at(path, revision):
    """A database built up to `revision`, as an older notifd left it; returns its engine."""
    engine = dbmod.make_engine(dbmod.database_url(str(path)))
    config = dbmod._alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return engine


def test_upgrading_keeps_every_row_and_stops_the_reuse(tmp_path):
    path = tmp_path / "old.db"
    engine = _at(path, "0005")
    with engine.begin() as conn:
        item_id = conn.execute(insert(store.items).values(type="classified", text="ad", created_at=NOW)).inserted_primary_key[0]
        conn.execute(insert(store.outbox).values(id=7, item_id=item_id, notifier="hook", state="dead", attempts=3,
                                                 last_error="HTTP 500", created_at=NOW))
        conn.execute(insert(store.changes).values(id=4, kind=store.ITEM_REMOVED, subject=99, created_at=NOW))
    engine.dispose()

    engine = dbmod.open_engine(dbmod.database_url(str(path)))  # upgrades to head
    try:
        database = dbmod.Database.synchronous(engine)
        [dead] = database.call(store.list_outbox)
        assert (dead.id, dead.item.text, dead.state, dead.last_error) == (7, "ad", "dead", "HTTP 500")
        database.call(store.delivered, 7)
        with engine.begin() as conn:
            again = conn.execute(insert(store.outbox).values(item_id=item_id, notifier="hook", state="pending",
                                                             attempts=0, created_at=NOW)).inserted_primary_key[0]
            assert again == 8
            assert conn.execute(select(store.changes.c.id)).scalars().all() == [4]
        # The foreign key still cascades: removing the item removes its deliveries.
        database.call(store.remove_items, [item_id])
        assert database.call(store.list_outbox) == []
    finally:
        engine.dispose()


@pytest.fixture
def engine(engine_on_each_database):
    """Each test here on the test database runs twice, as test_x[sqlite] and test_x[postgresql]."""
    return engine_on_each_database


def test_on_both_engines_a_deleted_delivery_id_is_not_reused(engine):
    database = dbmod.Database.synchronous(engine)
    database.call(store.add_marks, ["hook"])
    database.call(add_item, "classified", "one")
    [first] = deliver_all(database)
    database.call(add_item, "classified", "two")
    assert deliver_all(database)[0] > first


def test_an_item_id_is_not_given_again_after_the_newest_is_removed_or_all_are_pruned(database):
    first, _ = database.call(add_item, "classified", "kept")
    newest, _ = database.call(add_item, "classified", "removed")
    database.call(store.remove_items, [newest])
    again, _ = database.call(add_item, "classified", "after the removal")
    assert again > newest  # daemons, cursors and outbox marks have passed `newest` already
    assert database.call(store.prune_batch, None, (), NOW + timedelta(days=3650), 100) == 2  # the table empties
    last, _ = database.call(add_item, "classified", "after the pruning")
    assert last > again


def test_upgrading_to_item_ids_that_only_grow_keeps_items_and_their_deliveries(tmp_path):
    path = tmp_path / "old.db"
    engine = _at(path, "0006")
    with engine.begin() as conn:
        for text in ("one", "two", "three"):
            conn.execute(insert(store.items).values(type="classified", text=text, created_at=NOW))
        conn.execute(insert(store.outbox).values(item_id=3, notifier="hook", state="pending", attempts=0, created_at=NOW))
    engine.dispose()

    engine = dbmod.open_engine(dbmod.database_url(str(path)))  # upgrades to head
    try:
        database = dbmod.Database.synchronous(engine)
        assert [item.text for item in database.call(store.list_items)] == ["three", "two", "one"]
        [delivery] = database.call(store.list_outbox)
        assert delivery.item.id == 3  # kept across the rebuild of `items`
        database.call(store.remove_items, [3])  # the newest, and its delivery with it (the cascade holds)
        assert database.call(store.list_outbox) == []
        assert database.call(add_item, "classified", "four")[0] == 4
    finally:
        engine.dispose()


def _client_id(database, name):
    return next(client.id for client in database.call(store.list_clients) if client.name == name)


def test_a_removed_client_s_id_is_not_given_again_and_its_late_marks_land_nowhere(database):
    database.call(store.add_client, "kiosk")
    old = _client_id(database, "kiosk")
    database.call(store.remove_client, "kiosk")
    database.call(store.add_client, "lobby")
    new = _client_id(database, "lobby")
    assert new > old  # the newest removed: SQLite would have given `old` again
    database.call(store.mark_read, [(old, "classified", 7)])  # a mark of kiosk's, written late
    assert database.call(store.client_cursors, new) == {}  # lobby has read nothing
    database.call(store.add_publisher, "shop", ["classified"])
    [shop] = database.call(store.list_publishers)
    database.call(store.remove_publisher, "shop")
    database.call(store.add_publisher, "shop", ["classified"])
    [again] = database.call(store.list_publishers)
    assert again.id > shop.id


def test_upgrading_to_client_ids_that_only_grow_keeps_clients_cursors_and_presence(tmp_path):
    path = tmp_path / "old.db"
    engine = _at(path, "0007")
    with engine.begin() as conn:
        for name in ("a", "b"):
            conn.execute(insert(store.clients).values(name=name, token_hash=name * 64, created_at=NOW))
        conn.execute(insert(store.cursors).values(client_id=2, type="classified", last_read_id=9))
        conn.execute(insert(store.presence).values(client_id=2, node="n", since=NOW))
        conn.execute(insert(store.publishers).values(name="shop", token_hash="s" * 64, types="classified",
                                                     created_at=NOW))
    engine.dispose()

    engine = dbmod.open_engine(dbmod.database_url(str(path)))  # upgrades to head
    try:
        database = dbmod.Database.synchronous(engine)
        assert [(c.id, c.name) for c in database.call(store.list_clients)] == [(1, "a"), (2, "b")]
        assert database.call(store.client_cursors, 2) == {"classified": 9}  # kept across the rebuild
        with engine.connect() as conn:
            assert conn.execute(select(store.presence.c.client_id)).scalars().all() == [2]
        assert [p.name for p in database.call(store.list_publishers)] == ["shop"]
        database.call(store.remove_client, "b")  # the newest, its cursors with it (the cascade holds)
        with engine.connect() as conn:
            assert conn.execute(select(store.cursors)).all() == []
        database.call(store.add_client, "c")
        assert _client_id(database, "c") == 3
    finally:
        engine.dispose()
