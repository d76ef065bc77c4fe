"""Alembic migrations against the models: they cannot drift."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from notifd import db as dbmod
from notifd import store
from tests.posts import add_item


def test_schema_head_constant_is_the_alembic_head():
    scripts = ScriptDirectory.from_config(dbmod._alembic_config())
    assert scripts.get_current_head() == store.SCHEMA_HEAD


def test_migrated_schema_matches_the_models(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, store.metadata) == []


def test_a_new_database_is_owner_only_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "fresh.db"
    dbmod.open_engine(dbmod.database_url(str(path))).dispose()
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.db"]


def test_a_failed_create_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_upgrade(engine, version=None):
        raise RuntimeError("disk full")

    monkeypatch.setattr(dbmod, "upgrade", broken_upgrade)
    with pytest.raises(RuntimeError):
        dbmod.open_engine(dbmod.database_url(str(tmp_path / "fresh.db")))
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_without_schema_is_brought_to_head(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    engine = dbmod.open_engine(dbmod.database_url(str(path)))
    with engine.connect() as conn:
        assert dbmod.schema_version(conn) == store.SCHEMA_HEAD
    engine.dispose()


def test_sqlite_is_in_wal_mode_with_a_busy_timeout(engine):
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == dbmod.SQLITE_BUSY_TIMEOUT_MS
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # sqlite_busy_timeout reaches the engine, outside and inside transactions.
    short = dbmod.open_engine(engine.url, busy_timeout=0.25)
    with short.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 250
    with dbmod.transaction(short, write=True) as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 250
    short.dispose()


def test_backup_is_a_consistent_copy(engine, database, db_path, tmp_path):
    database.call(add_item, "classified", "kept")
    copy = tmp_path / "copy.db"
    dbmod.backup_sqlite(db_path, copy)
    other = dbmod.Database.synchronous(dbmod.open_engine(dbmod.database_url(str(copy))))
    assert [i.text for i in other.call(store.list_items)] == ["kept"]
    assert copy.stat().st_mode & 0o777 == 0o600


def _schema(engine) -> dict:
    """What a schema is made of, in engine-neutral terms: tables, columns, keys, indexes."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    schema = {}
    for table in sorted(inspector.get_table_names()):
        columns = {
            c["name"]: (type(c["type"].as_generic()).__name__, getattr(c["type"], "length", None), c["nullable"])
            for c in inspector.get_columns(table)
        }
        foreign = sorted(
            (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]),
             (fk.get("options") or {}).get("ondelete"))
            for fk in inspector.get_foreign_keys(table)
        )
        indexes = sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes(table)
            if not i.get("duplicates_constraint")  # PostgreSQL's index behind a UNIQUE constraint
        )
        unique = sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table))
        schema[table] = {
            "columns": columns,
            "primary_key": tuple(inspector.get_pk_constraint(table)["constrained_columns"]),
            "foreign_keys": foreign,
            "indexes": indexes,
            "unique": unique,
        }
    return schema


def test_the_migrations_give_the_same_schema_on_postgresql_and_sqlite(engine, pg_url):
    postgresql = dbmod.open_engine(dbmod.database_url(pg_url))  # an empty database, migrated
    try:
        with postgresql.connect() as conn:
            assert dbmod.schema_version(conn) == store.SCHEMA_HEAD
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, store.metadata) == []
        on_sqlite, on_postgresql = _schema(engine), _schema(postgresql)
        assert set(on_sqlite) == {t.name for t in store.metadata.sorted_tables} | {"alembic_version"}
        assert on_postgresql == on_sqlite
    finally:
        postgresql.dispose()
