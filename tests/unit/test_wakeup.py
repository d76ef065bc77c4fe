"""Wake-up sockets: who may send, long paths, dead daemons."""
from __future__ import annotations

import os
import stat

import pytest

from notifd import wakeup


def make_listener(db_path, woken):
    from twisted.internet import reactor

    db_path.touch()
    listener = wakeup.DatagramListener(reactor, db_path, lambda: woken.append(True))
    listener.start()
    return listener


def test_an_owner_only_database_gets_an_owner_only_socket(tmp_path):
    db_path = tmp_path / "n.db"
    db_path.touch(mode=0o600)
    os.chmod(db_path, 0o600)
    listener = make_listener(db_path, [])
    try:
        assert stat.S_IMODE(listener.path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(listener.path.stat().st_mode) == 0o600
    finally:
        listener.stop()
    assert not listener.path.exists()


def test_a_group_writable_database_lets_the_group_wake_the_daemon(tmp_path):
    db_path = tmp_path / "n.db"
    db_path.touch()
    os.chmod(db_path, 0o660)
    listener = make_listener(db_path, [])
    try:
        assert stat.S_IMODE(listener.path.parent.stat().st_mode) == 0o770
        assert stat.S_IMODE(listener.path.stat().st_mode) == 0o660
        assert listener.path.stat().st_gid == db_path.stat().st_gid
    finally:
        listener.stop()


def test_send_reaches_a_listener_and_forgets_dead_ones(tmp_path):
    import socket

    db_path = tmp_path / "n.db"
    directory = wakeup.wakeup_dir(db_path)
    directory.mkdir()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    live.bind(str(directory / "1"))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "2"))
    dead.close()  # a daemon killed without cleaning up: its socket file stays
    try:
        assert wakeup.send_datagrams(db_path) == 1
        assert live.recv(10) == b"!"
        assert sorted(os.listdir(directory)) == ["1"]
    finally:
        live.close()


def test_a_daemon_does_not_wake_itself(tmp_path):
    # After an HTTP group the posting daemon has woken its own hub already: its own datagram
    # would only make it check the database a second time.
    import socket

    db_path = tmp_path / "n.db"
    directory = wakeup.wakeup_dir(db_path)
    directory.mkdir()
    own, other = (socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2))
    own.bind(str(directory / "1"))
    other.bind(str(directory / "2"))
    own.setblocking(False)
    try:
        assert wakeup.send_datagrams(db_path, skip="1") == 1
        assert other.recv(10) == b"!"
        with pytest.raises(BlockingIOError):
            own.recv(10)
    finally:
        own.close()
        other.close()


def test_paths_too_long_for_a_socket_address(tmp_path):
    import socket

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    db_path = deep / "n.db"
    directory = wakeup.wakeup_dir(db_path)
    directory.mkdir()
    assert len(os.fsencode(directory / "123")) > 107
    with wakeup._short_path(directory / "123") as address:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(address)
    try:
        assert wakeup.send_datagrams(db_path) == 1
        assert listener.recv(10) == b"!"
    finally:
        listener.close()


def test_no_daemon_ever(tmp_path):
    assert wakeup.send_datagrams(tmp_path / "n.db") == 0


def test_the_wakeup_listener_tells_of_an_unread_wakeup(db_path):
    from twisted.internet import reactor

    db_path.touch()  # the daemon listens beside an existing database
    woken = []
    listener = wakeup.DatagramListener(reactor, db_path, lambda: woken.append(1))
    listener.start()  # a real Unix datagram socket; the reactor is not run
    try:
        assert not listener.pending()
        assert wakeup.send_datagrams(db_path) == 1
        assert listener.pending() and listener.pending()  # asking leaves it there
        listener._port.doRead()  # what the reactor does when it is readable
        assert woken == [1] and not listener.pending()
    finally:
        listener.stop()
