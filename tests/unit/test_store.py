"""The store's queries against a real temporary SQLite database, and a real PostgreSQL one."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest

from notifd import store
from notifd.items import Pick, Window
from notifd.posting import KeyConflict
from tests.harness import WriteBetweenStatements
from tests.posts import add_item

NOW = datetime(2026, 11, 26, 12, 0, 0)

@pytest.fixture
def engine(engine_on_each_database):
    """Each test here on the test database runs twice, as test_x[sqlite] and test_x[postgresql]."""
    return engine_on_each_database


def add(database, type_name, text, age=timedelta(0), key=None):
    return database.call(add_item, type_name, text, key=key, now=NOW - age)[0]


def unread(database, type_name, after, pick=Pick.OLDEST, window=Window(max_age=None, max_count=None)):
    item = database.call(store.next_unread, type_name, after, pick, window, NOW)
    return None if item is None else item.text


def test_oldest_first_walks_the_items_in_order(database):
    ids = [add(database, "classified", f"ad {i}") for i in range(3)]
    add(database, "random", "5")
    assert unread(database, "classified", 0) == "ad 0"
    assert unread(database, "classified", ids[0]) == "ad 1"
    assert unread(database, "classified", ids[2]) is None


def test_newest_first_returns_the_latest(database):
    add(database, "random", "1")
    add(database, "random", "2")
    assert unread(database, "random", 0, Pick.NEWEST) == "2"


def test_window_by_age(database):
    add(database, "classified", "old", age=timedelta(days=8))
    add(database, "classified", "new", age=timedelta(days=1))
    week = Window(max_age=timedelta(days=7), max_count=None)
    assert unread(database, "classified", 0, window=week) == "new"
    assert unread(database, "classified", 0, window=Window(max_age=timedelta(hours=1), max_count=None)) is None


def test_window_by_count(database):
    for i in range(5):
        add(database, "classified", f"ad {i}")
    add(database, "random", "7")  # other types do not count
    last_two = Window(max_age=None, max_count=2)
    assert unread(database, "classified", 0, window=last_two) == "ad 3"
    assert database.call(store.count_unread, "classified", 0, last_two, NOW) == 2


def test_idempotency_key(database):
    first = database.call(add_item, "classified", "ad", key="k1")
    again = database.call(add_item, "classified", "ad", key="k1")
    assert first[1] is True and again == (first[0], False)
    with pytest.raises(KeyConflict) as caught:
        database.call(add_item, "classified", "another ad", key="k1")
    assert caught.value.item_id == first[0]
    assert len(database.call(store.list_items)) == 1


def test_items_after_and_newest(database):
    a = add(database, "classified", "a")
    b = add(database, "random", "1")
    c = add(database, "classified", "c")
    d = add(database, "classified", "d")
    assert [i.id for i in database.call(store.items_after, a)] == [b, c, d]
    assert [i.id for i in database.call(store.newest_items, "classified", 2)] == [c, d]  # oldest first
    assert [i.id for i in database.call(store.newest_items, "random", 5)] == [b]
    assert database.call(store.max_item_id) == d


def test_read_marks_of_several_clients_in_one_call_skip_removed_clients(database):
    database.call(store.add_client, "a")
    database.call(store.add_client, "b")
    a, b = sorted(client.id for client in database.call(store.list_clients))
    database.call(store.mark_read, [(a, "classified", 4), (b, "random", 2), (b + 100, "classified", 1)])
    assert database.call(store.client_cursors, a) == {"classified": 4}
    assert database.call(store.client_cursors, b) == {"random": 2}


def test_client_tokens_are_stored_hashed_and_checked(database, engine):
    token = database.call(store.add_client, "kiosk")
    assert len(token) >= 43  # 256 bits, url-safe base64
    with engine.connect() as conn:
        stored = conn.execute(store.clients.select()).one().token_hash
    assert token not in stored
    assert stored == hashlib.sha256(token.encode()).hexdigest()  # hashed, not merely not in clear
    assert database.call(store.identify, "kiosk", "wrong") is None
    assert database.call(store.identify, "nobody", token) is None
    found = database.call(store.identify, "kiosk", token)
    assert found.cursors == {} and found.client_id == database.call(store.list_clients)[0].id
    with pytest.raises(store.ClientExists):
        database.call(store.add_client, "kiosk")


def test_publisher_tokens_are_stored_hashed_also_after_a_rotation(database, engine):
    token = database.call(store.add_publisher, "shop", ["classified"])
    rotated = database.call(store.rotate_publisher, "shop")
    with engine.connect() as conn:
        stored = conn.execute(store.publishers.select()).one().token_hash
    assert stored == hashlib.sha256(rotated.encode()).hexdigest() and rotated not in stored
    assert database.call(store.publisher_by_token, token) is None  # the old one is gone at once
    assert database.call(store.publisher_by_token, rotated).types == frozenset({"classified"})


def test_read_cursor_only_moves_forward(database):
    database.call(store.add_client, "kiosk")
    client_id = database.call(store.list_clients)[0].id
    database.call(store.mark_read, [(client_id, "classified", 5)])
    database.call(store.mark_read, [(client_id, "classified", 3)])  # a slower connection of the same client
    database.call(store.mark_read, [(client_id, "random", 1)])
    assert database.call(store.client_cursors, client_id) == {"classified": 5, "random": 1}


def test_unread_counts_and_presence(database):
    database.call(store.add_client, "kiosk")
    client_id = database.call(store.list_clients)[0].id
    ids = [add(database, "classified", f"ad {i}") for i in range(3)]
    database.call(store.mark_read, [(client_id, "classified", ids[0])])
    windows = {"classified": Window(max_age=None, max_count=None), "random": Window()}
    assert database.call(store.unread_counts, client_id, windows, NOW) == {"classified": 2, "random": 0}
    presence_id = database.call(store.client_connected, client_id, "node-a")
    database.call(store.client_connected, client_id, "node-b")
    assert database.call(store.connected_clients) == {client_id: 2}
    database.call(store.client_disconnected, presence_id)
    database.call(store.clear_presence, "node-b")
    assert database.call(store.connected_clients) == {}
    assert database.call(store.list_clients)[0].last_seen is not None


def test_removing_a_client_removes_its_state(database):
    database.call(store.add_client, "kiosk")
    client_id = database.call(store.list_clients)[0].id
    database.call(store.mark_read, [(client_id, "classified", 1)])
    database.call(store.client_connected, client_id, "n")
    assert database.call(store.remove_client, "kiosk") is True
    assert database.call(store.remove_client, "kiosk") is False
    assert database.call(store.client_cursors, client_id) == {}
    assert database.call(store.connected_clients) == {}


def test_a_failed_transaction_leaves_nothing(database):
    @store.writes
    def half_written(conn):
        add_item(conn, "classified", "half")
        raise RuntimeError("crash in the middle")

    with pytest.raises(RuntimeError):
        database.call(half_written)
    assert database.call(store.list_items) == []


# PostgreSQL only: SQLite has no read-only transactions.
@pytest.mark.parametrize("engine_on_each_database", ["postgresql"], indirect=True)
def test_a_query_not_marked_as_writing_cannot_write_on_postgresql(database, engine):
    # Reads run in read-only transactions there: a missing @store.writes shows at once.
    def sneaky(conn):
        add_item(conn, "classified", "unmarked")

    assert engine.dialect.name == "postgresql"
    from sqlalchemy.exc import InternalError

    with pytest.raises(InternalError, match="read-only transaction"):
        database.call(sneaky)
    assert database.call(store.list_items) == []


@pytest.mark.parametrize(
    "age, recent",
    [
        (timedelta(hours=1) - timedelta(seconds=1), True),
        (timedelta(hours=1), True),  # exactly max_age old: still recent (the window is closed)
        (timedelta(hours=1) + timedelta(seconds=1), False),
    ],
)
def test_window_by_age_boundary(database, age, recent):
    hour = Window(max_age=timedelta(hours=1), max_count=None)
    add(database, "classified", "ad", age=age)
    expected = "ad" if recent else None
    assert unread(database, "classified", 0, window=hour) == expected
    assert unread(database, "classified", 0, Pick.NEWEST, window=hour) == expected
    assert database.call(store.count_unread, "classified", 0, hour, NOW) == int(recent)
    found = database.call(store.recent_after, {"classified": 0}, {"classified": hour}, NOW, 10)
    assert [item.text for item in found] == (["ad"] if recent else [])


def test_recent_after_each_type_from_its_own_cursor_at_most_limit_each_in_id_order(database):
    ids = {}
    for n in range(4):
        ids[f"c{n}"] = add(database, "classified", f"c{n}")
        ids[f"r{n}"] = add(database, "random", f"r{n}")
    add(database, "weather", "not asked for")
    endless = Window(max_age=None, max_count=None)
    windows = {"classified": endless, "random": endless}
    found = database.call(store.recent_after, {"classified": ids["c0"], "random": 0}, windows, NOW, 2)
    # classified after c0: c1, c2 (the limit); random from the start: r0, r1; merged in id order.
    assert [item.text for item in found] == ["r0", "c1", "r1", "c2"]
    # The window applies per type: the newest one of each.
    windows["random"] = Window(max_age=None, max_count=1)
    found = database.call(store.recent_after, {"classified": ids["c2"], "random": 0}, windows, NOW, 10)
    assert [item.text for item in found] == ["c3", "r3"]


def test_items_after_returns_at_most_a_batch(database):
    first = add(database, "classified", "a")
    second = add(database, "classified", "b")
    add(database, "classified", "c")
    assert [i.id for i in database.call(store.items_after, 0, 2)] == [first, second]


def test_a_group_of_http_posts_is_decided_post_by_post(engine_on_each_database):
    # One transaction for the group; each post is checked against its own token, and a key
    # conflict refuses that post only. The tokens used are marked used at the group's time.
    from notifd.posting import Post

    engine = engine_on_each_database
    now = datetime(2026, 3, 4, 5, 6, 7)
    with engine.begin() as conn:
        shop = store.add_publisher(conn, "shop", ["classified"], now=now - timedelta(days=1))
        other = store.add_publisher(conn, "other", ["random"], now=now - timedelta(days=1))
        add_item(conn, "classified", "old", key="k")
    group = [
        store.Publication(shop, Post("classified", "a")),
        store.Publication("nope", Post("classified", "b")),
        store.Publication(other, Post("classified", "c")),
        store.Publication(shop, Post("classified", "d", key="k")),
        store.Publication(shop, Post("classified", "old", key="k")),
        store.Publication(shop, Post("classified", "e")),
    ]
    with engine.begin() as conn:
        outcomes = store.publish(conn, group, now=now)
    assert [o.outcome for o in outcomes] == ["created", "unauthorized", "forbidden", "conflict", "found", "created"]
    assert outcomes[3].conflict_with == outcomes[4].item.id == 1
    assert outcomes[0].item.id < outcomes[5].item.id and outcomes[5].item.text == "e"
    with engine.begin() as conn:
        used = {p.name: p.last_used for p in store.list_publishers(conn)}
        assert used == {"shop": now, "other": None}
        assert [item.text for item in store.list_items(conn)] == ["e", "a", "old"]


# PostgreSQL only: SQLite's writers take the write lock first, so nothing commits between
# the statements of a hello there.
@pytest.mark.parametrize("engine_on_each_database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("revoke", [store.rotate_token, store.remove_client])
@pytest.mark.parametrize("check", ["hello", "bearer"])
@pytest.mark.parametrize("after_statement", [1, 2, 3])
def test_a_revocation_committed_during_a_hello_is_still_applied_to_it(database, engine, revoke, check,
                                                                       after_statement):
    # A hello is checked in several statements, each with its own snapshot. A rotation or
    # removal that commits between them must either refuse the hello or come after the
    # change the session is known "as of", so that the daemons close it.
    from sqlalchemy.exc import OperationalError

    from notifd import db as dbmod

    token = database.call(store.add_client, "kiosk")
    waited = []

    def revoke_now():
        try:
            with dbmod.transaction(engine, write=True) as other:
                other.exec_driver_sql("SET LOCAL lock_timeout = '500ms'")
                revoke(other, "kiosk")
        except OperationalError:
            waited.append(True)  # the hello holds the client's row: the revocation comes after it

    with dbmod.transaction(engine, write=True) as conn:
        checker = WriteBetweenStatements(conn, after_statement, revoke_now)
        found = (store.identify(checker, "kiosk", token) if check == "hello"
                 else store.identify_bearer(checker, token))
    assert checker.statements > after_statement
    if waited:
        revoke_now()
        assert len(waited) == 1
    if found is not None:
        with engine.connect() as conn:
            _, changes = store.news_after(conn, 0, found.as_of_change)
        assert [change.kind for change in changes if change.subject == found.client_id] in (
            [store.TOKEN_ROTATED], [store.CLIENT_REMOVED])
