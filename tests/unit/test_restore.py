"""`notifctl db restore`: a backup put in place, new ids after every id handed out, refusals that change nothing."""
from __future__ import annotations

import json
import sqlite3
import stat

from notifd import store


def ids(cli) -> list[int]:
    return [item["id"] for item in json.loads(cli("list", "--json").out)]


def test_new_ids_continue_after_the_replaced_database_s_and_the_file_keeps_its_mode(cli, db_path, tmp_path):
    cli("add", "classified", "kept")
    backup = tmp_path / "backup?of #1.db"  # characters that mean something in a file: URI
    assert cli("db", "backup", str(backup)).code == 0
    lost = int(cli("add", "classified", "posted after the backup").out)
    cli("client", "add", "kiosk")
    db_path.chmod(0o640)
    restored = cli("db", "restore", str(backup))
    assert (restored.code, restored.err) == (0, "")
    assert restored.out == f"restored {db_path} from {backup}: schema {store.SCHEMA_HEAD}, 1 items; " \
                           f"new item ids start after {lost}\n"
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o640
    assert ids(cli) == [lost - 1]
    # An event stream that saw `lost` resumes after it: the next item must not take its id.
    assert int(cli("add", "classified", "new").out) == lost + 1
    assert cli("client", "list").out == ""  # made after the backup: gone, but its id is not given again
    with sqlite3.connect(db_path) as conn:
        assert dict(conn.execute("SELECT name, seq FROM sqlite_sequence"))["clients"] == 1
    assert not [p for p in db_path.parent.iterdir() if ".restoring-" in p.name]


def test_a_running_daemon_or_a_bad_backup_is_refused_and_nothing_changes(cli, database, db_path, tmp_path):
    cli("add", "classified", "kept")
    backup = tmp_path / "backup.db"
    cli("db", "backup", str(backup))
    cli("add", "classified", "still here")
    database.call(store.node_alive, "n1", version="1", pid=1, listen="", started_at=store.utcnow(), connections=0,
                  subscribers=0, types=["classified"])
    running = cli("db", "restore", str(backup))
    assert (running.code, running.err) == (1, f"notifctl: notifd is running on {db_path} (n1): stop it first "
                                              "(systemctl stop notifd)\n")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    bad = cli("db", "restore", str(garbage))
    assert (bad.code, bad.err) == (1, f"notifctl: {garbage} is not a notifd database: file is not a database\n")
    missing = cli("db", "restore", str(tmp_path / "nope.db"))
    assert (missing.code, missing.err) == (1, f"notifctl: no backup at {tmp_path / 'nope.db'}\n")
    assert len(ids(cli)) == 2


def test_a_damaged_database_is_replaced_with_a_warning_that_ids_may_be_given_again(cli, db_path, tmp_path):
    first = int(cli("add", "classified", "kept").out)
    backup = tmp_path / "backup.db"
    cli("db", "backup", str(backup))
    db_path.write_bytes(b"\0" * 4096)  # what a disk failure might leave
    restored = cli("db", "restore", str(backup))
    assert restored.code == 0
    assert restored.err.startswith("notifctl: warning: the database replaced could not be read (")
    assert restored.out.endswith(f"new item ids start after {first}\n")
    assert ids(cli) == [first]


def test_postgresql_is_restored_with_its_own_tools(cli, tmp_path):
    backup = tmp_path / "backup.db"
    backup.write_bytes(b"")
    result = cli("--db", "postgresql://notifd@127.0.0.1:1/notifd", "db", "restore", str(backup), db=False)
    assert (result.code, result.err) == (1, "notifctl: db restore works on SQLite; for PostgreSQL use pg_restore\n")


def test_backups_and_restores_carry_no_daemon_and_no_connection(cli, database, db_path, tmp_path):
    # Taken while a daemon runs (its heartbeat is seconds old): restored after it stopped,
    # the heartbeat would show it running and warn the next start that its name is taken.
    client_id = database.call(store.add_client, "kiosk") and database.call(store.list_clients)[0].id
    database.call(store.node_alive, "n1", version="1", pid=1, listen="", started_at=store.utcnow(), connections=1,
                  subscribers=0, types=["classified"])
    database.call(store.client_connected, client_id, "n1")
    backup = tmp_path / "backup.db"
    assert cli("db", "backup", str(backup)).code == 0
    with sqlite3.connect(backup) as conn:
        assert [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("nodes", "presence")] == [0, 0]
    # A copy made by another tool keeps them; the restore forgets them all the same.
    raw = tmp_path / "raw.db"
    with sqlite3.connect(db_path) as src, sqlite3.connect(raw) as dst:
        src.backup(dst)
    database.call(store.node_stopped, "n1")
    assert cli("db", "restore", str(raw)).code == 0
    status = cli("status")
    assert status.code == 3, status.out
    with sqlite3.connect(db_path) as conn:
        assert [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("nodes", "presence")] == [0, 0]
        assert conn.execute("SELECT name FROM clients").fetchall() == [("kiosk",)]  # data stays
