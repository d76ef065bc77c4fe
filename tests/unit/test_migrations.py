"""Alembic migrations against the models: they cannot drift."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from notifd import db as dbmod
from notifd import store


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


def test_backup_is_a_consistent_copy(engine, database, db_path, tmp_path):
    database.call(store.add_item, "classified", "kept")
    copy = tmp_path / "copy.db"
    dbmod.backup_sqlite(db_path, copy)
    other = dbmod.Database.synchronous(dbmod.open_engine(dbmod.database_url(str(copy))))
    assert [i.text for i in other.call(store.list_items)] == ["kept"]
    assert copy.stat().st_mode & 0o777 == 0o600
