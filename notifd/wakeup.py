# "The database changed": a wake-up with no payload, from whoever commits an item to every
# daemon serving that database. With SQLite it is a datagram to each daemon's Unix socket
# in a directory beside the database file (`<db>-wakeup/<pid>`), so that nothing but
# `--db` needs to be shared and several daemons on one file all hear it.
#
# Rule: a wake-up is a hint. Sending never fails the sender and never blocks; a lost one
# costs the daemon's safety poll interval in latency, never an item.
from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import Callable, Iterator

_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
_PEEK = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)  # an int: IntFlag arithmetic on every query costs


def wakeup_dir(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-wakeup")


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """A name for `path` that fits in a Unix socket address.

    Deep paths (pytest's temporary directories, say) go through /proc/self/fd/<dirfd>/.
    """
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def send_wakeup(db_path: Path) -> int:
    """Wake every daemon on this database; returns how many were reached."""
    directory = wakeup_dir(db_path)
    try:
        names = os.listdir(directory)
    except OSError:
        return 0  # no daemon ever listened here
    reached = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            path = directory / name
            try:
                with _short_path(path) as address:
                    sock.sendto(b"!", address)
                reached += 1
            except BlockingIOError:
                reached += 1  # its queue is full: it has wake-ups to read already
            except OSError as e:
                if e.errno == errno.ECONNREFUSED:  # the daemon died without cleaning up
                    path.unlink(missing_ok=True)
    return reached


class WakeupListener:
    """Calls `wake()` on each wake-up sent for this database (daemon side)."""

    def __init__(self, reactor, db_path: Path, wake: Callable[[], None]) -> None:
        self.reactor = reactor
        self.db_path = db_path
        self.path = wakeup_dir(db_path) / str(os.getpid())
        self.wake = wake
        self._port = None

    def start(self) -> None:
        from twisted.internet.protocol import DatagramProtocol

        wake = self.wake

        class _Wakeups(DatagramProtocol):
            noisy = False

            def datagramReceived(self, datagram, addr):
                wake()

        # Whoever may write the database may wake us: the directory and socket get the
        # database file's group access (owner-only by default; see docs/security.md).
        db = self.db_path.stat()
        shared = db.st_mode & 0o060 == 0o060
        self.path.parent.mkdir(mode=0o770 if shared else 0o700, exist_ok=True)
        self.path.unlink(missing_ok=True)  # left by an earlier process with our pid
        with _short_path(self.path) as address:
            self._port = self.reactor.listenUNIXDatagram(address, _Wakeups(), mode=0o660 if shared else 0o600)
        if shared:
            for path in (self.path.parent, self.path):
                if path.stat().st_gid != db.st_gid:
                    os.chown(path, -1, db.st_gid)
            self.path.parent.chmod(0o770)  # mkdir's mode is cut by the umask

    def pending(self) -> bool:
        """Whether a wake-up waits in the socket, not read yet (a peek: it stays there)."""
        if self._port is None:
            return False
        try:
            return bool(self._port.socket.recv(1, _PEEK))
        except OSError:  # EAGAIN: nothing waits
            return False

    def stop(self) -> None:
        if self._port is not None:
            self._port.stopListening()
            self._port = None
        self.path.unlink(missing_ok=True)
