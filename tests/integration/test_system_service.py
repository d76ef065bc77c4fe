"""notifd as a system service: systemd notifications, signals, metrics, socket activation,
backups during posting, retention, status (TLS: test_tls.py)."""
from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import urllib.request

import pytest

from notifd import db as dbmod
from notifd import store
from tests.integration.conftest import TIMEOUT
from tests.posts import add_item

pytestmark = pytest.mark.integration


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(TIMEOUT)
    yield str(path), sock
    sock.close()


def test_started_as_systemd_would(daemon, notify_socket):
    path, sock = notify_socket
    server = daemon(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    messages = []
    while not any(m.startswith("READY=1") for m in messages):
        messages.append(sock.recv(4096).decode())
    assert f"STATUS=listening on TCP 127.0.0.1:{server.port}" in messages[-1]
    assert "WATCHDOG=1" in messages  # pinged from the start, every WatchdogSec/2
    client = server.connect()
    assert client.ask("notif") == "will send notifs"
    assert server.kill(signal.SIGTERM) == 0
    rest = []
    while "STOPPING=1" not in rest:
        rest.append(sock.recv(4096).decode())
    assert client.sock.recv(100) == b""  # the daemon closed the connection before exiting


def test_sigterm_loses_nothing_committed(daemon, notifctl, db_path):
    server = daemon()
    client = server.connect()
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    notifctl("add", "classified", "ad")
    assert client.ask(f"hello kiosk {token}") == "OK"
    assert client.ask("classified?") == "ad"
    assert server.kill(signal.SIGTERM) == 0
    # The read mark written after the reply was committed before the daemon exited.
    engine = dbmod.open_engine(dbmod.database_url(str(db_path)))
    with engine.begin() as conn:
        client_id = store.list_clients(conn)[0].id
        assert store.client_cursors(conn, client_id) == {"classified": 1}
    engine.dispose()


def test_sighup_reloads_the_recent_window(daemon, notifctl, tmp_path):
    config = tmp_path / "notifd.toml"
    config.write_text("")
    for text in ("first", "second", "third"):
        notifctl("add", "classified", text)
    server = daemon("--config", str(config))
    assert server.connect().ask("classified?") == "first"
    config.write_text('[types.classified]\nrecent_max_count = 1\nlisten = "x"\n')
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_log(re.compile(r"SIGHUP: configuration not reloaded: .*unknown key 'types.classified.listen'"))
    config.write_text('[types.classified]\nrecent_max_count = 1\n[log]\nlevel = "debug"\n')
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_log(re.compile("SIGHUP: configuration reloaded"))
    assert server.connect().ask("classified?") == "third"


def test_metrics_show_a_connected_client_and_a_posted_item(daemon, notifctl):
    server = daemon("--metrics", "tcp:0:interface=127.0.0.1")
    metrics_port = int(re.search(r":(\d+)$", server.wait_for_log(re.compile(r"metrics on http TCP \S+"))).group(1))
    client = server.connect()
    assert client.ask("notif") == "will send notifs"
    notifctl("add", "classified", "ad")
    assert client.read_line() == b"notif: classified\r\n"
    page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=TIMEOUT).read().decode()
    assert "notifd_connections 1.0" in page
    assert "notifd_notif_mode_connections 1.0" in page
    assert 'notifd_items_total{type="classified"} 1.0' in page
    assert 'notifd_notifications_sent_total{type="classified"} 1.0' in page
    assert "notifd_pending_notifications 1.0" in page  # sent, not yet acknowledged
    assert "notifd_database_seconds_count" in page
    health = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=TIMEOUT)
    assert health.status == 200 and health.read() == b"ok\n"


def test_status_while_running_and_after(daemon, notifctl):
    assert notifctl("status", check=False).returncode == 3
    server = daemon()
    server.connect().ask("notif")
    result = notifctl("status", "--json")
    import json

    status = json.loads(result.stdout)
    (node,) = status["nodes"]
    assert status["running"] and node["up"] and node["pid"] == server.proc.pid
    assert node["listen"] == f"TCP 127.0.0.1:{server.port} HTTP 127.0.0.1:{server.http_port}"
    server.kill(signal.SIGTERM)
    after = notifctl("status", check=False)
    assert after.returncode == 3 and "not running" in after.stdout


# --- socket activation ---------------------------------------------------------------------------


AS_SYSTEMD = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid
os.execvp(sys.argv[2], sys.argv[2:])
"""


def test_socket_activation(daemon, db_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]

    fd = listener.fileno()
    server = daemon(
        listen="systemd:domain=INET:name=notifd",  # as in contrib/systemd/notifd.socket
        env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "notifd"},
        # As systemd does: the socket on fd 3, and LISTEN_PID set to notifd's own pid.
        prefix=(sys.executable, "-c", AS_SYSTEMD, str(fd)),
        pass_fds=(fd,),
    )
    listener.close()
    assert server.port == port
    assert server.connect().ask("random?").isdigit()


# --- backups and retention -----------------------------------------------------------------------


def test_a_backup_during_a_burst_of_posts_restores_to_a_consistent_database(daemon, notifctl, db_path, tmp_path):
    server = daemon()
    done = threading.Event()
    errors = []

    def burst():
        engine = dbmod.open_engine(dbmod.database_url(str(db_path)))
        try:
            i = 0
            while not done.is_set() or i < 200:
                with engine.begin() as conn:
                    add_item(conn, "classified", f"ad {i}")
                i += 1
        except Exception as e:
            errors.append(repr(e))
        finally:
            engine.dispose()

    poster = threading.Thread(target=burst)
    poster.start()
    backups = [tmp_path / f"backup-{n}.db" for n in range(3)]
    for backup in backups:
        notifctl("db", "backup", str(backup))
    done.set()
    poster.join(timeout=TIMEOUT * 3)
    assert not errors
    for backup in backups:
        with sqlite3.connect(backup) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            ids = [row[0] for row in conn.execute("SELECT id FROM items ORDER BY id")]
        # One transaction per post: a consistent copy holds a gap-free prefix of the posts.
        assert ids == list(range(1, len(ids) + 1))
    # Restored in place of the live database, it serves.
    server.kill(signal.SIGTERM)
    restored = backups[-1]
    os.replace(restored, db_path)
    for leftover in (f"{db_path}-wal", f"{db_path}-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    assert notifctl("db", "check").returncode == 0
    posts = len(ids)
    assert posts >= 200
    # The oldest recent ad: the window holds the 100 newest.
    assert daemon().connect().ask("classified?") == f"ad {posts - 100}"


def test_backup_refuses_to_overwrite(notifctl, tmp_path):
    notifctl("db", "upgrade")
    target = tmp_path / "exists.db"
    target.write_text("precious")
    result = notifctl("db", "backup", str(target), check=False)
    assert result.returncode == 1 and result.stderr == f"notifctl: {target} exists; remove it or choose another name\n"
    assert target.read_text() == "precious"


def test_a_backup_that_cannot_be_written_is_one_line(notifctl, db_path, tmp_path):
    notifctl("db", "upgrade")
    target = tmp_path / "no-such-dir" / "backup.db"
    result = notifctl("db", "backup", str(target), check=False)
    assert result.returncode == 1
    assert result.stderr == f"notifctl: cannot back up {db_path} to {target}: No such file or directory\n"


def test_a_backup_into_a_directory_the_user_cannot_write_is_one_line(service_user):
    # The service's user backing up into a directory of root's, as an operator would try first.
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from tests.integration.conftest import _ENV, _script, ensure_database

    place = Path(tempfile.mkdtemp(prefix="notifd-backup-"))
    try:
        place.chmod(0o755)
        state, root_only = place / "state", place / "root-only"
        state.mkdir()
        root_only.mkdir(mode=0o755)
        db = state / "notifd.db"
        ensure_database(db)
        for path in (state, db):
            os.chown(path, service_user.uid, service_user.gid)
        target = root_only / "backup.db"
        result = subprocess.run(
            service_user.command(*_script("notifctl"), "--db", str(db), "db", "backup", str(target)),
            capture_output=True, text=True, env=_ENV, timeout=TIMEOUT * 3,
        )
        assert (result.returncode, result.stderr) == (
            1, f"notifctl: cannot back up {db} to {target}: Permission denied\n")
        assert list(root_only.iterdir()) == []
    finally:
        shutil.rmtree(place)


def test_a_config_file_the_user_cannot_read_is_one_line_naming_it(service_user):
    # An admin outside the service's group, with the system's config file in place: notifctl
    # says which file it could not read, without naming an option the admin never gave.
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from tests.integration.conftest import _ENV, _script

    place = Path(tempfile.mkdtemp(prefix="notifd-config-"))
    try:
        place.chmod(0o755)
        config = place / "notifd.toml"
        config.write_text('db = "notifd.db"\n')
        config.chmod(0o600)  # root's alone
        for program, argv in (("notifctl", ["status"]), ("notifd", ["--check-config"])):
            result = subprocess.run(
                service_user.command(*_script(program), *argv), capture_output=True, text=True,
                env={**_ENV, "NOTIFD_CONFIG": str(config)}, timeout=TIMEOUT * 3,
            )
            assert result.returncode == 1, (program, result.stderr)
            assert result.stderr.endswith(f"cannot read config file {config}: Permission denied\n"), (program, result.stderr)
            assert result.stderr.count("\n") == 1 and "--config" not in result.stderr, (program, result.stderr)
    finally:
        shutil.rmtree(place)


def test_a_backup_that_sqlite_refuses_is_one_line_and_leaves_nothing(notifctl, db_path, tmp_path):
    db_path.write_bytes(b"not a database, whatever its name says" * 200)
    backups = tmp_path / "backups"
    backups.mkdir()
    target = backups / "backup.db"
    result = notifctl("db", "backup", str(target), check=False)
    assert result.returncode == 1
    assert result.stderr == f"notifctl: cannot back up {db_path} to {target}: file is not a database\n"
    assert list(backups.iterdir()) == []  # no half backup, under its name or aside


def test_db_check_reports_corruption(notifctl, db_path):
    notifctl("add", "classified", "ad")
    with open(db_path, "r+b") as f:  # scribble over the items table's page
        f.seek(4096 * 2)
        f.write(b"\xff" * 4096)
    result = notifctl("db", "check", check=False)
    assert result.returncode == 1 and result.stderr.startswith("notifctl: ")


def test_the_daemon_prunes_expired_items_at_start(daemon, notifctl, db_path, tmp_path):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    engine = dbmod.open_engine(dbmod.database_url(str(db_path)))
    old = store.utcnow() - datetime.timedelta(days=40)
    with engine.begin() as conn:
        for i in range(3):
            add_item(conn, "classified", f"old {i}", now=old)
        client_id = store.list_clients(conn)[0].id
        store.mark_read(conn, [(client_id, "classified", 2)])
        add_item(conn, "classified", "fresh")
    engine.dispose()
    config = tmp_path / "notifd.toml"
    config.write_text('[recent]\nmax_age = 0\n[retention]\nmax_age = "30d"\nbatch = 2\n')
    server = daemon("--config", str(config))
    server.wait_for_log(re.compile("pruned 3 expired items"))
    client = server.connect()
    assert client.ask(f"hello kiosk {token}") == "OK"
    assert client.ask("classified?") == "fresh"  # the cursor (2) still means what it meant
    assert [line.split("\t")[3] for line in notifctl("list").stdout.splitlines()] == ["fresh"]
