"""sd_notify against a fake NOTIFY_SOCKET."""
from __future__ import annotations

import os
import socket

import pytest

from notifd import systemd


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    yield str(path), sock
    sock.close()


def test_messages_reach_the_socket(notify_socket):
    path, sock = notify_socket
    assert systemd.notify("READY=1\nSTATUS=listening", {"NOTIFY_SOCKET": path})
    assert sock.recv(1024) == b"READY=1\nSTATUS=listening"


def test_abstract_socket():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"notifd-test-{os.getpid()}"
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert systemd.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(1024) == b"STOPPING=1"
    finally:
        sock.close()


def test_outside_systemd_nothing_happens(tmp_path):
    assert systemd.notify("READY=1", {}) is False
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")}) is False


def test_watchdog_interval_is_half_of_watchdog_sec():
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None  # not for us
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert systemd.watchdog_interval({}) is None
