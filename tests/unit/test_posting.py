"""The one posting function (notifd.posting) under its two callers: sqlite3 for `notifctl add`, SQLAlchemy for the rest."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import datetime

import pytest

from notifd import db as dbmod
from notifd import posting, store
from notifd.posting import Post

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901)
POSTS = [
    Post("classified", "Nice appart in the 11e."),
    Post("random", "42"),
    Post("classified", "Vélo à vendre", key="order-7"),
    Post("classified", "Vélo à vendre", key="order-7"),  # a retry within the batch: one item
]


def dump(path):
    """Every row of every table but Alembic's, as SQLite holds it (types and formats included)."""
    conn = sqlite3.connect(path)
    try:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in tables
            if table != "alembic_version"
        }
    finally:
        conn.close()


def migrated(path):
    dbmod.open_engine(dbmod.database_url(str(path))).dispose()
    return path


def summary(stored):
    return [(p.item.id, p.item.type, p.item.text, p.item.created_at, p.created) for p in stored]


def test_the_sqlite_path_writes_exactly_what_the_store_writes(tmp_path):
    # The same function under both; if the SQLAlchemy path starts writing anything else (a
    # column, an outbox row), this fails.
    by_store = migrated(tmp_path / "store.db")
    engine = dbmod.open_engine(dbmod.database_url(str(by_store)))
    store_posted = dbmod.Database(engine).call(store.post_items, POSTS, now=NOW)
    engine.dispose()
    by_posting = migrated(tmp_path / "posting.db")
    posted = posting.post_to_sqlite_file(by_posting, POSTS, NOW)
    assert summary(posted) == summary(store_posted)
    assert [p.item.id for p in posted] == [1, 2, 3, 3] and [p.created for p in posted] == [True, True, True, False]
    assert dump(by_posting) == dump(by_store)
    # And the store reads them back as it reads its own.
    engine = dbmod.open_engine(dbmod.database_url(str(by_posting)))
    with engine.begin() as conn:
        assert [(i.type, i.text, i.created_at) for i in store.list_items(conn)] == [
            (p.type, p.text, NOW) for p in reversed(POSTS[:3])
        ]
    engine.dispose()


def test_postgresql_stores_what_sqlite_stores(tmp_path, pg_url):
    engine = dbmod.open_engine(dbmod.database_url(pg_url))
    try:
        on_postgresql = dbmod.Database(engine).call(store.post_items, POSTS, now=NOW)
    finally:
        engine.dispose()
    on_sqlite = posting.post_to_sqlite_file(migrated(tmp_path / "x.db"), POSTS, NOW)
    assert summary(on_postgresql) == summary(on_sqlite)


def test_the_key_length_follows_the_store():
    assert posting.KEY_MAX == store.items.c.key.type.length


def test_declines_a_missing_database_and_creates_nothing(tmp_path):
    path = tmp_path / "none.db"
    assert posting.post_to_sqlite_file(path, POSTS, NOW) is None
    assert not path.exists()


def test_declines_another_schema_and_stores_nothing(tmp_path):
    path = migrated(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    assert posting.post_to_sqlite_file(path, POSTS, NOW) is None
    assert dump(path)["items"] == []


def test_a_failure_midway_stores_nothing(tmp_path):
    path = migrated(tmp_path / "x.db")
    with pytest.raises(sqlite3.IntegrityError):
        posting.post_to_sqlite_file(path, [Post("classified", "fine"), Post("classified", None)], NOW)  # NOT NULL
    assert dump(path)["items"] == []


def test_a_key_conflict_in_a_batch_stores_nothing(tmp_path):
    path = migrated(tmp_path / "x.db")
    posting.post_to_sqlite_file(path, [Post("classified", "first", key="k")], NOW)
    with pytest.raises(posting.KeyConflict, match="key already used by item 1"):
        posting.post_to_sqlite_file(path, [Post("classified", "fine"), Post("random", "first", key="k")], NOW)
    assert [row[2] for row in dump(path)["items"]] == ["first"]


def test_a_key_on_a_drawn_value_finds_its_item_whatever_was_drawn_again(tmp_path):
    # Two retries in one group (the HTTP group commit) and one after: each drew another value.
    path = migrated(tmp_path / "x.db")
    group = [Post("random", "5", key="d", drawn=True), Post("random", "9", key="d", drawn=True)]
    stored = posting.post_to_sqlite_file(path, group, NOW)
    later = posting.post_to_sqlite_file(path, [Post("random", "3", key="d", drawn=True)], NOW)
    assert [(p.item.id, p.item.text, p.created) for p in stored + later] == [(1, "5", True), (1, "5", False), (1, "5", False)]
    with pytest.raises(posting.KeyConflict):  # a text of one's own is compared
        posting.post_to_sqlite_file(path, [Post("random", "9", key="d")], NOW)
    with pytest.raises(posting.KeyConflict):  # and the type always
        posting.post_to_sqlite_file(path, [Post("classified", "9", key="d", drawn=True)], NOW)


def _group(n):
    """A group as an HTTP group commit or a --batch makes it: more than one INSERT's worth,
    keys stored before, repeated within, and in conflict, in between plain posts."""
    posts = [Post("classified", f"post {i}") for i in range(n)]
    posts[3] = Post("classified", "keyed", key="a")  # new
    posts[7] = Post("classified", "keyed", key="a")  # its retry in the same group: found
    posts[9] = Post("random", "other", key="a")  # the same key, another type: conflict with posts[3]
    posts[11] = Post("classified", "old", key="stored")  # found: stored before
    posts[13] = Post("classified", "changed", key="stored")  # conflict with the stored item
    return posts


def _check_group(results, posts, first_id):
    """New items have ids in post order, consecutive; keys find or refuse as one at a time would."""
    new = [i for i, r in enumerate(results) if isinstance(r, posting.Posted) and r.created]
    assert new == [i for i in range(len(posts)) if i not in (7, 9, 11, 13)]
    assert [results[i].item.id for i in new] == list(range(first_id, first_id + len(new)))
    assert all(results[i].item.text == posts[i].text for i in new)
    assert results[7] == posting.Posted(results[3].item, created=False)
    assert isinstance(results[9], posting.KeyConflict) and results[9].item_id == results[3].item.id
    assert not results[11].created and results[11].item.text == "old" and results[11].item.id == 1
    assert isinstance(results[13], posting.KeyConflict) and results[13].item_id == 1


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_a_group_is_stored_in_order_and_each_conflict_refuses_only_its_post(engine_name, tmp_path, request):
    # More posts than one INSERT takes: ids must follow the posts' order across chunks, and
    # RETURNING (which promises no order) must not shuffle them.
    url = request.getfixturevalue("pg_url") if engine_name == "postgresql" else str(migrated(tmp_path / "x.db"))
    engine = dbmod.open_engine(dbmod.database_url(url))
    try:
        database = dbmod.Database(engine)
        database.call(store.post_items, [Post("classified", "old", key="stored")], now=NOW)
        posts = _group(2 * posting.CHUNK + 7)

        @store.durable
        def group(conn):
            return posting.store_posts(conn.exec_driver_sql, conn.dialect.name, posts, NOW, report_conflicts=True)

        results = database.call(group)
        _check_group(results, posts, first_id=2)
        with engine.begin() as conn:
            stored = conn.exec_driver_sql("SELECT id, text FROM items ORDER BY id").fetchall()
        assert [text for _, text in stored] == ["old"] + [posts[i].text for i in range(len(posts))
                                                          if i not in (7, 9, 11, 13)]
    finally:
        engine.dispose()


def test_a_group_through_sqlite3_matches_and_a_conflict_still_stores_nothing(tmp_path):
    path = migrated(tmp_path / "x.db")
    posting.post_to_sqlite_file(path, [Post("classified", "old", key="stored")], NOW)
    posts = [post for i, post in enumerate(_group(2 * posting.CHUNK + 7)) if i not in (9, 13)]
    stored = posting.post_to_sqlite_file(path, posts, NOW)
    assert [p.item.id for p in stored if p.created] == list(range(2, 2 + len(posts) - 2))
    # Without report_conflicts the first conflict in order is raised (with the item the first
    # post of key "b" was to be), not the later one with a stored key; the caller rolls back.
    before = dump(path)
    with pytest.raises(posting.KeyConflict, match=f"item {stored[-1].item.id + 1} "):
        posting.post_to_sqlite_file(path, [Post("classified", "x", key="b"), Post("random", "x", key="b"),
                                           Post("random", "old", key="stored")], NOW)
    assert dump(path) == before


@pytest.mark.parametrize("value", [None, "relative.db", "~/notifd-test.db"])
def test_finds_the_file_db_py_would_open(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/state:/elsewhere")
    assert posting.sqlite_file(value) == dbmod.sqlite_path(dbmod.database_url(value))


def test_leaves_urls_to_sqlalchemy():
    assert posting.sqlite_file("sqlite:////tmp/x.db") is None
    assert posting.sqlite_file("postgresql://localhost/notifd") is None


def test_notifctl_add_imports_no_sqlalchemy_twisted_or_alembic(tmp_path):
    path = migrated(tmp_path / "x.db")
    script = (
        "import sys\n"
        "from notifd.cli import notifctl_main\n"
        f"sys.argv = ['notifctl', '--db', {str(path)!r}, 'add', 'classified', 'ad']\n"
        "try:\n    notifctl_main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'twisted', 'alembic'})\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env={"NOTIFD_CONFIG": "", "PATH": ""}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1\n"
    assert "heavy: []" in result.stderr
