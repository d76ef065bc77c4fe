"""Faults of the disk under the database: full, and read-only, each said in one clear line.

The database lives on a small tmpfs mounted for the test, so the disk can really fill up
and really be read-only. Mounting needs root (CAP_SYS_ADMIN): elsewhere these tests skip,
saying so.
"""
from __future__ import annotations

import errno
import re
import sqlite3
import subprocess

import pytest
import sqlalchemy.exc

from tests.integration.conftest import (
    _ENV,
    TIMEOUT,
    _script,
    ensure_database,
    eventually,
)
from tests.require import unavailable

pytestmark = pytest.mark.integration

DISK_BYTES = 8 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )
    if mounted.returncode != 0:
        unavailable("root", f"needs root to mount a small tmpfs for a full or read-only disk: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.fixture
def db_path(small_disk):
    return small_disk / "notifd.db"


def fill(disk) -> object:
    """Fill the disk to the last byte; returns the filler file's path."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 1):  # big blocks, then the last bytes
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler


def empty_the_wal(db_path) -> None:
    # SQLite writes into the space its WAL file already has: truncated, the next write
    # needs new blocks, which a full disk does not have.
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0


def items(notifctl) -> list[str]:
    return [line.split("\t")[3] for line in notifctl("list").stdout.splitlines()]


def test_a_full_disk_fails_posts_cleanly_the_daemon_reads_on_and_recovers(daemon, notifctl, db_path, small_disk):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    notifctl("add", "classified", "ad")
    server = daemon()
    named = server.connect()
    assert named.ask(f"hello kiosk {token}") == "OK"
    empty_the_wal(db_path)
    filler = fill(small_disk)
    try:
        result = notifctl("add", "classified", "lost", check=False)
        assert result.returncode == 1
        assert result.stderr == "notifctl: database error: database or disk is full\n"
        # Reads need no space: answered. A hello must write: refused, the connection kept.
        reader = server.connect()
        assert reader.ask("classified?") == "ad"
        late = server.connect()
        late.sock.settimeout(TIMEOUT * 2)
        assert late.ask(f"hello kiosk {token}") == "ERR temporarily unavailable"
        assert late.ask("random?").isdigit()
        server.wait_for_log(re.compile("database unavailable for writes"))
    finally:
        filler.unlink()
    # Space again: the daemon writes again by itself, and nothing half-written shows.
    eventually(lambda: late.ask(f"hello kiosk {token}") == "OK")
    server.wait_for_log(re.compile("the database answers writes again"))
    assert sum("database unavailable for writes" in line for line in server.log) == 1  # once, not per client
    notifctl("add", "classified", "after")
    assert items(notifctl) == ["after", "ad"]
    result = notifctl("db", "check")
    assert "ok" in result.stdout.lower()


def test_a_read_only_disk_fails_posts_and_the_start_saying_so(notifctl, db_path, small_disk):
    notifctl("add", "classified", "ad")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    read_only = f"database {db_path}: the file system is read-only"
    try:
        # SQLite in WAL mode must create its shared-memory file beside the database: it
        # says "unable to open database file", which sends the reader to the permissions.
        for command in (("add", "classified", "lost"), ("add", "--id", "k", "classified", "lost"),
                        ("add", "--batch", "-", "classified"), ("list",), ("client", "add", "kiosk")):
            result = notifctl(*command, check=False, stdin="lost\n")
            assert (result.returncode, result.stdout, result.stderr) == (1, "", f"notifctl: {read_only}\n"), command
        started = subprocess.run(
            [*_script("notifd"), "--db", str(db_path), "--listen", "tcp:0:interface=127.0.0.1"],
            capture_output=True, text=True, timeout=TIMEOUT * 3, env=_ENV,
        )
        assert started.returncode == 1
        assert started.stderr.splitlines()[-1].endswith(f"cannot start: {read_only}")
        # A database to create there: the same words.
        created = notifctl("--db", str(small_disk / "new" / "notifd.db"), "db", "upgrade", check=False)
        assert created.stderr == f"notifctl: database {small_disk / 'new' / 'notifd.db'}: the file system is read-only\n"
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert items(notifctl) == ["ad"]


def test_a_daemon_logs_a_read_only_disk_as_such(db_path, small_disk):
    from notifd import db as dbmod

    engine = dbmod.open_engine(dbmod.database_url(str(db_path)))
    database = dbmod.Database.synchronous(engine)
    engine.dispose()  # no file open, or the remount waits
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        # The error a daemon's write meets when the file system turns read-only under it
        # (a remount would wait for the open database, so the error is made here).
        error = sqlalchemy.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("attempt to write a readonly database"))
        assert database.describe(error) == f"database {db_path}: the file system is read-only"
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert database.describe(error) == "attempt to write a readonly database"


def test_notifctl_says_read_only_when_the_disk_turns_read_only_under_an_open_database(db_path, small_disk):
    from notifd import store
    from notifd.cli.common import Store
    from notifd.config import build
    from notifd.posting import Post, UnusableDatabase

    ensure_database(db_path)
    opened = Store(build({"db": str(db_path)}))
    opened.engine.dispose()  # opened and checked; no file held, or the remount waits
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(UnusableDatabase, match=f"^database {re.escape(str(db_path))}: the file system is read-only$"):
            opened.call(store.post_items, [Post("classified", "lost")])
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    [kept] = opened.call(store.post_items, [Post("classified", "kept")])
    assert kept.item.id == 1
