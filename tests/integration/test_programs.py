"""The installed programs as an operator meets them: errors on one line, watch, start failures."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from notifd.posting import SCHEMA_HEAD
from tests.integration.conftest import _ENV, TIMEOUT, _script, read_line

pytestmark = pytest.mark.integration


def test_notifctl_error_is_one_line_on_stderr(notifctl):
    result = notifctl("add", "weather", "sunny", check=False)
    assert result.returncode == 1
    assert result.stderr == "notifctl: unknown item type 'weather' (known: classified, random)\n"
    assert result.stdout == ""


def test_notifd_refuses_a_bad_config_key(tmp_path):
    config = tmp_path / "notifd.toml"
    config.write_text('listen = "tcp:0"\nlissten = "x"\n')
    result = subprocess.run(
        [*_script("notifd"), "--config", str(config)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 1
    assert result.stderr == f"notifd: config file {config}: unknown key 'lissten'\n"


def test_a_database_that_cannot_be_reached_is_said_in_the_driver_s_words_on_one_line(notifctl):
    # Port 1: nothing listens there. SQLAlchemy's wrapping (the driver's class name, a link
    # to its web site on a second line) says nothing to an operator.
    unreachable = "postgresql://notifd@127.0.0.1:1/notifd"
    started = subprocess.run([*_script("notifd"), "--db", unreachable, "--listen", "tcp:0", "--http", "tcp:0"],
                             capture_output=True, text=True, timeout=TIMEOUT, env=_ENV)
    assert started.returncode == 1
    (line,) = [line for line in started.stderr.splitlines() if "cannot start" in line]
    assert line.endswith('cannot start: connection failed: connection to server at "127.0.0.1", port 1 failed: '
                         "Connection refused"), line
    listed = notifctl("--db", unreachable, "list", check=False)
    assert listed.stderr == ('notifctl: database error: connection failed: connection to server at "127.0.0.1", '
                             "port 1 failed: Connection refused\n")


def test_notifd_refuses_a_newer_database(notifctl, db_path):
    notifctl("db", "upgrade")
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    result = subprocess.run(
        [*_script("notifd"), "--db", str(db_path), "--listen", "tcp:0"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 1
    assert "the database schema is at revision 9999, newer than this notifd" in result.stderr


def test_notifd_creates_its_database_owner_only_and_at_head(daemon, db_path, tmp_path):
    # The other tests start notifd on a copy of a database built once (tests skip the
    # migrations that way); this one lets notifd build it, and checks it built the same.
    import sqlite3

    from notifd.testing import ensure_database

    daemon(new_database=False)
    assert oct(db_path.stat().st_mode & 0o777) == "0o600"
    copied = tmp_path / "copied.db"
    ensure_database(copied)

    def schema(path):
        # Each statement as a set of its lines: a migration that rebuilds a table may list its
        # UNIQUE constraints in any order (a Python set's), which is the same schema.
        with sqlite3.connect(path) as conn:
            return ({(kind, name, frozenset(line.strip(" ,") for line in (sql or "").splitlines()))
                     for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master")},
                    conn.execute("SELECT version_num FROM alembic_version").fetchall())

    assert schema(db_path) == schema(copied)
    assert schema(db_path)[1] == [(SCHEMA_HEAD,)]


def test_ctrl_c_while_add_prints_the_ids_says_they_are_stored(start_notifctl, notifctl, tmp_path):
    # 20,000 ids are more than a pipe holds: once the first is read, notifctl is blocked
    # writing the rest, after its commit. Ctrl-C there must not read as a failed post.
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"classified ad {n}\n" for n in range(20_000)))
    adding = start_notifctl("add", "--batch", str(batch))
    assert adding.stdout.read(2) == "1\n"
    adding.send_signal(signal.SIGINT)
    assert adding.wait(TIMEOUT) == 0
    assert adding.stderr.read().strip() == (
        "notifctl: interrupted while printing the ids; all 20000 stored (first id 1, last 20000): do not post them again"
    )
    assert "items: classified=20000" in notifctl("db", "check").stdout


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_notifd_reports_a_port_in_use_quoting_the_entry_as_written(daemon, db_path, workers):
    server = daemon()
    result = subprocess.run(
        [*_script("notifd"), "--db", str(db_path), "--listen", f"tcp:{server.port}:interface=127.0.0.1",
         "--http", "tcp:0:interface=127.0.0.1", *workers],  # not the default port, which another notifd may hold
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert f"cannot listen on 'tcp:{server.port}:interface=127.0.0.1': " in result.stderr  # no backlog= of ours


def test_notifctl_watch_prints_new_items(daemon, notifctl, start_notifctl):
    notifctl("add", "classified", "already there")
    server = daemon()
    watcher = start_notifctl("watch", "--connect", f"tcp:127.0.0.1:{server.port}")
    assert watcher.stdout.readline() == "classified: already there\n"
    notifctl("add", "classified", "Nice appart in the 11e.")
    assert watcher.stdout.readline() == "classified: Nice appart in the 11e.\n"
    notifctl("add", "random", "89765234756")
    assert watcher.stdout.readline() == "random: 89765234756\n"


DICE = """
from notifd import ItemType, Pick, hookimpl


def render(item):
    if item.text == "bad":
        raise RuntimeError("cannot render")
    return item.text


def fresh():
    raise RuntimeError("no entropy")


@hookimpl
def register_item_types(register):
    register(ItemType("dice", render=render, pick=Pick.NEWEST, fresh=fresh))
"""


def test_notifctl_watch_reports_an_err_answer_and_goes_on_in_the_same_session(daemon, notifctl, start_notifctl, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "dice.py").write_text(DICE)
    notifctl("add", "classified", "first ad")
    server = daemon("--plugins-dir", str(plugins))
    watcher = start_notifctl("watch", "--connect", f"tcp:127.0.0.1:{server.port}")
    assert read_line(watcher.stdout) == "classified: first ad\n"
    # The newest dice cannot be rendered (skipped), and no fresh value can be drawn: ERR.
    notifctl("--plugins-dir", str(plugins), "add", "dice", "bad")
    assert read_line(watcher.stderr) == "notifctl: dice? answered ERR value cannot be sent\n"
    notifctl("--plugins-dir", str(plugins), "add", "dice", "6")
    assert read_line(watcher.stdout) == "dice: 6\n"
    notifctl("add", "classified", "second ad")
    # The same session: a new (anonymous) one would print "first ad" again first.
    assert read_line(watcher.stdout) == "classified: second ad\n"
    assert watcher.poll() is None


def test_notifctl_watch_of_an_unknown_type_is_one_line(daemon, notifctl):
    server = daemon()
    result = notifctl("watch", "--connect", f"tcp:127.0.0.1:{server.port}", "--type", "nosuch", check=False)
    assert (result.returncode, result.stderr, result.stdout) == (1, "notifctl: the server refused: unknown type\n", "")


@pytest.mark.parametrize("revoke, reason", [
    ("remove", "client removed"), ("rotate", "token changed; hello again with the new one"),
])
def test_notifctl_watch_ends_when_its_client_is_revoked(daemon, notifctl, start_notifctl, tmp_path, revoke, reason):
    token_file = tmp_path / "token"
    # Saved by an editor that writes a byte order mark: no part of the token.
    token_file.write_text("\ufeff" + notifctl("client", "add", "kiosk").stdout.splitlines()[-1] + "\r\n")
    notifctl("add", "classified", "for kiosks")
    server = daemon()
    watcher = start_notifctl(
        "watch", "--connect", f"tcp:127.0.0.1:{server.port}", "--name", "kiosk", "--token-file", str(token_file)
    )
    assert watcher.stdout.readline() == "classified: for kiosks\n"
    notifctl("client", revoke, "kiosk")
    assert watcher.wait(TIMEOUT) == 1
    # One line: why the server closed the connection, which ends the watch (reconnecting
    # would only be refused).
    assert watcher.stderr.read() == f"notifctl: the server closed the connection: {reason}\n"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_notifctl_watch_stopped_by_a_signal_exits_0_quietly(daemon, notifctl, start_notifctl, stop_signal):
    notifctl("add", "classified", "already there")
    server = daemon()
    watcher = start_notifctl("watch", "--connect", f"tcp:127.0.0.1:{server.port}")
    assert watcher.stdout.readline() == "classified: already there\n"
    watcher.send_signal(stop_signal)
    assert watcher.wait(TIMEOUT) == 0
    assert watcher.stderr.read() == ""


def test_notifctl_watch_without_a_daemon_fails_cleanly(tmp_path):
    result = subprocess.run(
        [*_script("notifctl"), "watch", "--connect", "tcp:127.0.0.1:1"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("notifctl: ")


def test_notifctl_watch_finds_the_daemon_where_notifd_listen_puts_it(daemon, notifctl, db_path, tmp_path):
    # As notifd reads its settings: NOTIFD_LISTEN beats the config file's `listen`.
    notifctl("add", "classified", "already there")
    server = daemon()
    config = tmp_path / "notifd.toml"
    config.write_text('listen = ["tcp:1:interface=127.0.0.1"]\n')  # where nothing listens
    env = {**_ENV, "NOTIFD_CONFIG": str(config), "NOTIFD_LISTEN": f"tcp:{server.port}:interface=127.0.0.1"}
    watcher = subprocess.Popen([*_script("notifctl"), "--db", str(db_path), "watch"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert read_line(watcher.stdout) == "classified: already there\n", watcher.stderr
    finally:
        watcher.kill()
        watcher.communicate()


def test_notifctl_watch_reads_the_token_from_a_file(daemon, notifctl, start_notifctl, tmp_path):
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    notifctl("add", "classified", "for kiosks")
    server = daemon("--config", str(_config_without_anonymous(tmp_path)))
    token_file = tmp_path / "token"
    token_file.write_text(f"  {token}  \nthe first line only\n")
    watcher = start_notifctl(
        "watch", "--connect", f"tcp:127.0.0.1:{server.port}", "--name", "kiosk", "--token-file", str(token_file)
    )
    assert watcher.stdout.readline() == "classified: for kiosks\n"  # said hello: anonymous clients are refused
    assert token not in Path(f"/proc/{watcher.pid}/cmdline").read_text()  # nothing for `ps` to show

    token_file.write_text("not-the-token\n")
    refused = notifctl("watch", "--connect", f"tcp:127.0.0.1:{server.port}", "--name", "kiosk",
                       "--token-file", str(token_file), check=False)
    # One line, no "Unhandled Error" from the reconnecting service after it.
    assert (refused.returncode, refused.stderr) == (1, "notifctl: the server refused: unknown client or wrong token\n")


def _config_without_anonymous(tmp_path) -> Path:
    config = tmp_path / "notifd.toml"
    config.write_text("[auth]\nanonymous = false\n")
    return config


def test_notifctl_watch_token_file_errors_are_one_line(notifctl, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for token_file, error in [
        (tmp_path / "missing", f"--token-file {tmp_path}/missing: No such file or directory"),
        (tmp_path, f"--token-file {tmp_path}: Is a directory"),
        (empty, f"--token-file {empty}: the first line is empty"),
    ]:
        result = notifctl("watch", "--name", "kiosk", "--token-file", str(token_file), check=False)
        assert (result.returncode, result.stderr) == (1, f"notifctl: {error}\n")
    both = notifctl("watch", "--name", "kiosk", "--token", "t", "--token-file", str(empty), check=False)
    assert (both.returncode, both.stderr) == (1, "notifctl: give --token or --token-file, not both\n")


@pytest.mark.parametrize("endpoint", ["tcp:[::1]:8789", "tcp:localhost", "tcp:127.0.0.1:notaport", "nope:1", "tls:localhost"])
def test_notifctl_watch_refuses_an_endpoint_it_cannot_read_in_words_not_twisted_s(notifctl, endpoint):
    result = notifctl("watch", "--connect", endpoint, check=False)
    assert (result.returncode, result.stderr) == (1, (
        f"notifctl: --connect {endpoint}: not a client endpoint; write tcp:HOST:PORT, tls:HOST:PORT or "
        "unix:PATH (an IPv6 address with its colons escaped: tcp:\\:\\:1:8789)\n"))


@pytest.mark.parametrize("argv, env, error", [
    (["--name", "kiosk"], {"NOTIFD_TOKEN": "sec ret"}, "the token must be one word of printable characters"),
    (["--name", "kio sk", "--token", "t"], {}, "--name must be one word of printable characters, not 'kio sk'"),
    (["--type", "classified random"], {}, "--type must be one word of printable characters, not 'classified random'"),
])
def test_notifctl_watch_refuses_what_cannot_be_sent_before_connecting_and_never_shows_a_token(notifctl, argv, env,
                                                                                               error):
    # Port 1: nothing listens there; refused before any connection is tried.
    result = notifctl("watch", "--connect", "tcp:127.0.0.1:1", *argv, check=False, env=env)
    assert (result.returncode, result.stderr, result.stdout) == (1, f"notifctl: {error}\n", "")
