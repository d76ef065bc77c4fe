"""An acknowledged post is on disk: the commit that stores posted items is synced before
notifctl prints the id, or the daemon answers an HTTP post 201 (SQLite: one sync of the WAL
per transaction; PostgreSQL: the
posting transaction runs with synchronous_commit on, whatever the server's default).

On SQLite this is observed on the real program with strace (Debian's package; .ci/run
installs it), with the daemon running on the same file, as an admin would trace it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests import pg
from tests.integration.conftest import TIMEOUT, _script, ensure_database
from tests.require import require_tool

pytestmark = pytest.mark.integration

# What `notifctl add` is asked to post, per path; each prints one id per item.
PATHS = {
    "plain": (["add", "classified", "Nice appart in the 11e."], 1),
    "id": (["add", "--id", "order-1", "classified", "Nice appart in the 11e."], 1),
    "batch": (["add", "--batch", "{batch}"], 500),
}
SYNC = re.compile(r"^\d+ +(fsync|fdatasync)\((\d+)<([^>]*)>\) = 0$")
STDOUT = re.compile(r'^\d+ +write\(1<[^>]*>, "\d+\\n')  # an id, printed


def _strace() -> str:
    return require_tool("strace", "strace", "to see when notifctl syncs")


@pytest.mark.parametrize("path", PATHS)
def test_the_wal_is_synced_once_before_the_id_is_printed(path, daemon, db_path, tmp_path):
    strace = _strace()
    daemon()  # running on the same file, as in production: it holds the WAL open too
    args, count = PATHS[path]
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"classified ad number {n}\n" for n in range(count)))
    trace = tmp_path / "trace.txt"
    result = subprocess.run(
        [strace, "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,write", "-o", str(trace),
         *_script("notifctl"), "--db", str(db_path), *[a.format(batch=batch) for a in args]],
        capture_output=True, text=True, timeout=3 * TIMEOUT, env={"NOTIFD_CONFIG": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == count
    lines = trace.read_text().splitlines()
    wal_syncs = [n for n, line in enumerate(lines) if (m := SYNC.match(line)) and m.group(3).endswith("notifd.db-wal")]
    printed = [n for n, line in enumerate(lines) if STDOUT.match(line)]
    assert len(wal_syncs) == 1, "\n".join(lines)  # one per transaction: a batch pays once
    assert printed and wal_syncs[0] < printed[0], "\n".join(lines)  # on disk, then acknowledged
    # Beside it only the database's directory, once, as SQLite does after a new connection's
    # first WAL sync (the WAL's directory entry must be durable too); no checkpoint for these few pages.
    others = [m.group(3) for line in lines if (m := SYNC.match(line)) and not m.group(3).endswith("notifd.db-wal")]
    assert others in ([], [str(db_path.parent)]), "\n".join(lines)


def test_bookkeeping_writes_stay_at_normal_and_posts_are_full(database):
    """The daemon's own writes (read marks, heartbeats) need only survive a killed process;
    a post in the same process, on the same pooled connection, is synced (SQLite levels:
    1 NORMAL, 2 FULL)."""
    from notifd import store

    @store.durable
    def durable_level(conn):
        return conn.exec_driver_sql("PRAGMA synchronous").scalar()

    @store.writes
    def bookkeeping_level(conn):
        return conn.exec_driver_sql("PRAGMA synchronous").scalar()

    assert store.post_items.durable and not getattr(store.mark_read, "durable", False)
    assert [database.call(f) for f in (bookkeeping_level, durable_level, bookkeeping_level, durable_level)] == [1, 2, 1, 2]


# --- PostgreSQL ----------------------------------------------------------------------------------

RECORD_SETTING = """
CREATE TABLE commit_settings (text text, setting text);
CREATE FUNCTION record_commit_setting() RETURNS trigger AS $$
BEGIN
    INSERT INTO commit_settings VALUES (NEW.text, current_setting('synchronous_commit'));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER record_commit_setting BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION record_commit_setting();
"""


@pytest.mark.parametrize("path", PATHS)
def test_posting_on_postgresql_never_runs_with_synchronous_commit_off(path, pg_url, tmp_path):
    from sqlalchemy.engine import make_url

    ensure_database(pg_url)
    pg.execute(pg_url, RECORD_SETTING)
    # An operator (or a tuning guide) turned it off for the whole database.
    pg.execute(pg_url, f'ALTER DATABASE "{make_url(pg_url).database}" SET synchronous_commit = off')
    args, count = PATHS[path]
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"classified ad number {n}\n" for n in range(count)))
    result = subprocess.run(
        [*_script("notifctl"), "--db", pg_url, *[a.format(batch=batch) for a in args]],
        capture_output=True, text=True, timeout=3 * TIMEOUT, env={"NOTIFD_CONFIG": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    # Another writer on this database runs with the default: the trigger can tell them apart.
    pg.execute(pg_url, "INSERT INTO items (type, text, created_at) VALUES ('classified', 'by another tool', now())")
    settings = dict(pg.execute(pg_url, "SELECT text, setting FROM commit_settings"))
    assert settings.pop("by another tool") == "off"
    assert len(settings) == count and set(settings.values()) == {"on"}


def test_an_http_post_is_synced_before_its_201(daemon, db_path, notifctl, tmp_path):
    """The daemon itself, traced: the WAL sync of the group that stores a post completes
    after the request arrives and before the 201 is sent."""
    import http.client

    strace = _strace()
    trace = tmp_path / "trace.txt"
    server = daemon(prefix=(strace, "-f", "-qq", "-yy", "-s", "40", "-e",
                            "trace=fsync,fdatasync,recvfrom,read,sendto,write,writev", "-o", str(trace)))
    token = notifctl("token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT)
    connection.request("POST", "/v1/items/classified", body="Synced first.", headers={"Authorization": f"Bearer {token}"})
    assert connection.getresponse().status == 201
    connection.close()
    # Stopped as systemd would stop it; strace's child is notifd, and strace ends with it.
    notifd = int(Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()[0])
    os.kill(notifd, signal.SIGTERM)
    assert server.proc.wait(timeout=TIMEOUT) == 0
    lines = trace.read_text().splitlines()
    received = next(n for n, line in enumerate(lines) if re.search(r'(recvfrom|read)\(\d+<TCP:\[[^\]]*\]>, "POST /v1/items/', line))
    answered = next(n for n, line in enumerate(lines) if re.search(r'(sendto|write|writev)\(\d+<TCP:\[[^\]]*\]>, .*"HTTP/1.1 201', line))
    synced = []  # the lines where a sync of the WAL returned 0 (a call may be split by other threads' calls)
    started: dict[str, bool] = {}
    for n, line in enumerate(lines):
        pid = line.split(" ", 1)[0]
        if m := re.match(r"^\d+ +f(?:data)?sync\(\d+<([^>]*)>(.*)$", line):
            if m.group(2).endswith("<unfinished ...>"):
                started[pid] = m.group(1).endswith("notifd.db-wal")
            elif m.group(1).endswith("notifd.db-wal") and m.group(2).endswith("= 0"):
                synced.append(n)
        elif re.match(r"^\d+ +<\.\.\. f(?:data)?sync resumed>.*= 0$", line) and started.pop(pid, False):
            synced.append(n)
    assert any(received < n < answered for n in synced), "\n".join(lines[received:answered + 1])
