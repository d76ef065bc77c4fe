# "The database changed": a wake-up with no payload, from whoever commits an item to every
# daemon serving that database. `send_wakeup(engine)` is the one call writers make, after
# their commit; `make_listener(...)` is the daemon's side. Two carriers, one meaning:
#
# - SQLite: a datagram to each daemon's Unix socket in a directory beside the database file
#   (`<db>-wakeup/<pid>`), so that nothing but `--db` needs to be shared and several daemons
#   on one file (`--workers`) all hear it.
# - PostgreSQL: `NOTIFY notifd`; each node LISTENs on a connection of its own, in a
#   thread of its own (the reactor never waits on it), and reconnects with back-off after
#   the server restarts or the connection is killed. Once listening again it wakes the hub,
#   which catches up from the items table: wake-ups missed meanwhile cost nothing.
#
# Rule: a wake-up is a hint. Sending never fails the sender and never blocks for long; a
# lost one costs the daemon's safety poll interval in latency, never an item.
from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import first_line

CHANNEL = "notifd"  # the NOTIFY channel; one per database, so several notifd databases never mix

_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL


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


def send_wakeup(engine) -> None:
    """Wake every daemon on this database (call it after committing)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
                conn.commit()
        except SQLAlchemyError:
            pass  # a hint: the daemons' safety poll finds the item
        return
    from .db import sqlite_path

    path = sqlite_path(engine.url)
    if path is not None:
        send_datagrams(path)


class WakeupDenied(Exception):
    """A writer may write the database but not reach a daemon's wake-up socket: its post is
    seen at the daemon's next safety poll only (docs/security.md, "Who may post")."""


def send_datagrams(db_path: Path, skip: str | None = None) -> int:
    """Wake every daemon on this SQLite file; returns how many were reached.

    `skip`: the name of a socket not to wake, the sender's own (a daemon that woke its hub
    already: its own datagram would only make it check the database a second time).
    Raises WakeupDenied, after waking every daemon it may, when it may not wake one.
    """
    directory = wakeup_dir(db_path)
    try:
        names = os.listdir(directory)
    except PermissionError as e:
        raise WakeupDenied(f"{e.strerror}: {directory}") from None
    except OSError:
        return 0  # no daemon ever listened here
    reached = 0
    denied = None
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            if name == skip:
                continue
            path = directory / name
            try:
                with _short_path(path) as address:
                    sock.sendto(b"!", address)
                reached += 1
            except BlockingIOError:
                reached += 1  # its queue is full: it has wake-ups to read already
            except PermissionError as e:
                denied = f"{e.strerror}: {path}"
            except OSError as e:
                if e.errno == errno.ECONNREFUSED:  # the daemon died without cleaning up
                    path.unlink(missing_ok=True)
    if denied is not None:
        raise WakeupDenied(denied)
    return reached


def make_listener(reactor, engine, wake: Callable[[], None], node: str):
    """The daemon's listener for this database (with start() and stop()), or None (in-memory SQLite)."""
    from .db import (
        sqlite_path,  # here, not at the top: notifctl add sends without SQLAlchemy
    )

    if engine.dialect.name == "postgresql":
        return PgListener(reactor, engine, wake, node)
    path = sqlite_path(engine.url)
    return DatagramListener(reactor, path, wake) if path is not None else None


class DatagramListener:
    """Calls `wake()` on each wake-up datagram sent for this SQLite database (daemon side)."""

    def __init__(self, reactor, db_path: Path, wake: Callable[[], None]) -> None:
        self.reactor = reactor
        self.db_path = db_path
        self.path = wakeup_dir(db_path) / str(os.getpid())
        self.wake = wake
        self._port = None
        self._poll = None  # poll() of the socket, for pending()

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
        poller = select.poll()
        poller.register(self._port.socket, select.POLLIN)
        self._poll = poller.poll
        if shared:
            for path in (self.path.parent, self.path):
                if path.stat().st_gid != db.st_gid:
                    os.chown(path, -1, db.st_gid)
            self.path.parent.chmod(0o770)  # mkdir's mode is cut by the umask

    def pending(self) -> bool:
        """Whether a wake-up waits in the socket, not read yet (it stays there)."""
        # poll() with no wait, not a MSG_PEEK recv: asked on every query answered from
        # memory, and a recv that finds nothing raises, which cost ~15 % of a `random?`.
        return self._poll is not None and bool(self._poll(0))

    def stop(self) -> None:
        self._poll = None
        if self._port is not None:
            self._port.stopListening()
            self._port = None
        self.path.unlink(missing_ok=True)


class PgListener:
    """Calls `wake()` in the reactor thread on each `NOTIFY notifd`, and after each (re)connection.

    A dedicated thread owns the LISTEN connection: it connects (blocking, with a timeout),
    then waits in poll() on the connection's socket and on a pipe that `stop()` writes
    to, reads the notifications without blocking (libpq's consume_input), and hands one
    `wake()` per batch to the reactor. When the connection breaks it reconnects after
    `first_delay`, doubling up to `max_delay`.
    """

    def __init__(self, reactor, engine, wake: Callable[[], None], node: str,
                 first_delay: float = 0.1, max_delay: float = 10.0) -> None:
        self.reactor = reactor
        self.wake = wake
        self.first_delay = first_delay
        self.max_delay = max_delay
        _, params = engine.dialect.create_connect_args(engine.url)
        params.pop("context", None)  # SQLAlchemy's adapters: not for a raw connection
        # The name lets an operator (or a test) find this connection in pg_stat_activity.
        from .db import pg_connect_args

        self._params = {**params, **pg_connect_args(f"notifd-listen {node}"), "autocommit": True}
        self._stop_r, self._stop_w = os.pipe()
        self._stopping = threading.Event()
        self._pipe_lock = threading.Lock()  # the pipe is closed by the thread, written by stop()
        self._pipe_open = True
        self._thread: threading.Thread | None = None
        self.connected = False  # reactor side: whether the thread listens now
        self._heard = False  # a notification was read and its wake() has not run yet
        self._lost_logged = False
        self._first: Any = None  # Deferred of the first attempt's outcome

    def start(self):
        """Start listening; the Deferred fires after the first attempt (connected or not)."""
        from twisted.internet import defer

        self._first = defer.Deferred()
        self._thread = threading.Thread(target=self._run, name="notifd-listen", daemon=True)
        self._thread.start()
        return self._first

    def stop(self) -> None:
        """Ask the thread to close the connection and end (it does not wait for it)."""
        with self._pipe_lock:
            self._stopping.set()
            if self._pipe_open:
                os.write(self._stop_w, b"!")

    # --- the listening thread -------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    conn = self._connect()
                except Exception as e:
                    self.reactor.callFromThread(self._disconnected, first_line(e))
                    failures += 1
                    self._pause(min(self.max_delay, self.first_delay * 2 ** (failures - 1)))
                    continue
                failures = 0
                self.reactor.callFromThread(self._connected)
                try:
                    self._listen(conn)
                except Exception as e:
                    self.reactor.callFromThread(self._disconnected, first_line(e))
                    self._pause(self.first_delay)
                finally:
                    conn.close()
        finally:
            with self._pipe_lock:
                self._pipe_open = False
                os.close(self._stop_r)
                os.close(self._stop_w)

    def _connect(self):
        import psycopg

        conn = psycopg.connect(**self._params)
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except Exception:
            conn.close()
            raise
        return conn

    def _listen(self, conn) -> None:
        """Hand notifications to the reactor until stopped (returns) or the connection breaks (raises)."""
        pgconn = conn.pgconn
        # poll(), not select(): with thousands of clients the socket's number may be above 1024.
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = [fd for fd, _ in poller.poll()]
            if self._stop_r in ready:
                return
            pgconn.consume_input()  # never blocks; raises when the connection is gone
            heard = False
            while pgconn.notifies() is not None:
                heard = True
            if heard:
                self._heard = True
                self.reactor.callFromThread(self._woken)

    def _pause(self, seconds: float) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        poller.poll(seconds * 1000)  # returns early on stop()

    # --- reactor side -------------------------------------------------------------------

    @property
    def log(self):
        from twisted.logger import (
            Logger,  # here: notifctl imports this module, and not Twisted
        )

        return Logger(namespace="notifd.wakeup")

    def pending(self) -> bool:
        """Whether the hub may be behind: a wake-up on its way to the reactor, or no LISTEN now."""
        return self._heard or not self.connected

    def _woken(self) -> None:
        self._heard = False
        self.wake()

    def _connected(self) -> None:
        self.connected = True
        if self._lost_logged:
            self._lost_logged = False
            self.log.info("wake-ups: listening to PostgreSQL again")
        self._settle()
        self.wake()  # catch up on whatever was committed while we were not listening

    def _disconnected(self, error: str) -> None:
        was = self.connected
        self.connected = False
        if not self._lost_logged and not self._stopping.is_set():
            self._lost_logged = True  # once per outage, not once per attempt
            self.log.warn(
                "wake-ups: {what} the PostgreSQL LISTEN connection ({error}); retrying, "
                "new items are found by the safety poll meanwhile",
                what="lost" if was else "cannot open", error=error,
            )
        self._settle()

    def _settle(self) -> None:
        if self._first is not None and not self._first.called:
            self._first.callback(self.connected)

