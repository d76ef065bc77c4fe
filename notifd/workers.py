# `notifd --workers N`: N processes serving the same listening ports over the same
# database, to use every core of one host. The parent reserves the ports, starts the workers,
# tells systemd once all of them are ready, forwards SIGHUP, stops them all on SIGTERM, and
# restarts one that dies; it serves no client and opens no database connection itself.
#
# Under a systemd watchdog (WatchdogSec=), the parent's pings stand for every worker: each
# worker pings the parent (its NOTIFY_SOCKET is a socket of the parent's, one per worker, so
# the socket says who pinged), and the parent pings systemd only while every worker has
# pinged recently. A worker whose reactor hangs thus stops the pings, and systemd restarts
# the whole service, as it would restart a single notifd that hangs.
#
# Ports are shared with SO_REUSEPORT (Linux): each worker binds a listening socket of its
# own to the same address, and the kernel spreads new connections evenly over them. (One
# socket inherited by every worker would let whichever worker wakes first accept a whole
# burst.) The parent keeps a bound socket per port that never listens: it reserves the port
# (and resolves port 0) for workers that restart, without receiving connections itself.
#
# Each worker is an ordinary daemon (service.Daemon) named `<node>/<n>`, with the same
# wake-ups as separate daemons: datagrams with SQLite, LISTEN/NOTIFY with PostgreSQL.
from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.logger import Logger

from . import systemd
from . import tls as tlsmod
from .config import Config, ConfigError, with_backlog
from .errors import first_line

WORKER_ENV = "NOTIFD_WORKER"  # "<n>": this process is worker n (1..N)
PORTS_ENV = "NOTIFD_WORKER_PORTS"  # each listen entry's port, resolved by the parent, comma-separated
PARENT_ENV = "NOTIFD_WORKER_PARENT"  # the parent's pid: a worker stops when its parent is gone
RESTART_DELAY = 1.0  # seconds before a worker that died is started again
_SYSTEMD_ONLY = ("WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class SharedPort:
    """A `listen` entry that workers can share: TCP or TLS over TCP."""

    description: str
    family: int
    interface: str
    port: int
    backlog: int
    tls: tlsmod.ServerTLS | None = None  # of an ssl: entry

    def check_free(self) -> None:
        """Raise OSError (EADDRINUSE) if something listens on this address already.

        SO_REUSEPORT lets any process of the same user join the port: a second `notifd
        --workers` (on another database, even) would silently share its clients. A socket
        without it cannot bind while another listens there, so it tells."""
        if self.port == 0:
            return
        probe = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT are no listener
            probe.bind((self.interface, self.port))
        finally:
            probe.close()

    def socket(self, port: int | None = None, listen: bool = False) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.interface, self.port if port is None else port))
            if listen:
                sock.listen(self.backlog)
                sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock


def shared_port(reactor, description: str, ciphers: str | None = None) -> SharedPort:
    """Parse a `listen` entry for workers (reading an ssl: entry's files); raises ConfigError
    for kinds that cannot be shared."""
    try:
        full = with_backlog(description)  # `description` stays as written: errors quote it
        if tlsmod.is_tls(full):
            entry = tlsmod.parse(full)
            return SharedPort(description, socket.AF_INET, entry.interface, entry.port, entry.backlog,
                              tlsmod.ServerTLS(entry, ciphers))
        endpoint = serverFromString(reactor, full)
    except Exception as e:
        raise ConfigError(f"listen: bad endpoint {description!r}: {e}") from None
    # Twisted's endpoints keep their address in private attributes; this module is the
    # only reader, and tests/integration/test_workers.py covers each kind.
    if isinstance(endpoint, TCP6ServerEndpoint):
        return SharedPort(description, socket.AF_INET6, endpoint._interface, endpoint._port, endpoint._backlog)
    if isinstance(endpoint, TCP4ServerEndpoint):
        return SharedPort(description, socket.AF_INET, endpoint._interface, endpoint._port, endpoint._backlog)
    raise ConfigError(
        f"listen: {description!r} cannot be shared by --workers (only tcp:, tcp6: and ssl: can); "
        "run one notifd per socket instead"
    )


def check_shared(reactor, config: Config) -> list[SharedPort]:
    """What `--workers` needs of the configuration; raises ConfigError naming the key."""
    if config.metrics and "{worker}" not in config.metrics:
        raise ConfigError(
            "metrics: with --workers, each worker serves its own metrics: put {worker} in the "
            "endpoint, e.g. \"tcp:910{worker}:interface=127.0.0.1\""
        )
    if config.metrics:
        try:
            serverFromString(reactor, config.metrics.replace("{worker}", "1"))
        except Exception as e:
            raise ConfigError(f"metrics: bad endpoint {config.metrics!r}: {e}") from None
    # The line protocol's entries, then the HTTP API's: workers listen on each, in this order.
    return [shared_port(reactor, description, config.tls_ciphers) for description in config.listen + config.http_listen]


def listen_shared(reactor, shared: SharedPort, port: int, factory):
    """Worker side: listen on the shared port with a socket of our own; returns the IListeningPort."""
    sock = shared.socket(port, listen=True)
    try:
        if shared.tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(shared.tls, False, factory)
        return reactor.adoptStreamPort(sock.fileno(), shared.family, factory)
    finally:
        sock.close()  # the reactor holds a duplicate


def worker_ports(environ=os.environ) -> tuple[int, list[int]] | None:
    """(worker number, resolved ports) when this process is a worker, else None."""
    number = environ.get(WORKER_ENV)
    if not number:
        return None
    ports = [int(p) for p in environ.get(PORTS_ENV, "").split(",") if p]
    return int(number), ports


def stop_with_parent(environ=os.environ) -> bool:
    """Worker side: be sent SIGTERM when the parent dies (even by SIGKILL), so that no worker
    goes on serving the port alone; False if the parent is gone already."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # The parent may have died before the prctl: then we were re-parented already. (A parent
    # of an older notifd does not say who it is: nothing to compare.)
    parent = environ.get(PARENT_ENV)
    return parent is None or str(os.getppid()) == parent


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: "Supervisor", number: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.ended: defer.Deferred = defer.Deferred()

    def processEnded(self, reason) -> None:
        self.supervisor._ended(self, reason.value.exitCode, getattr(reason.value, "signal", None))
        self.ended.callback(reason.value.exitCode)


class Supervisor:
    """The parent of `--workers N`."""

    log = Logger(namespace="notifd.workers")

    def __init__(self, reactor, config: Config, argv: list[str] | None = None, environ=None) -> None:
        self.reactor = reactor
        self.config = config
        self.argv = argv if argv is not None else [sys.executable, "-m", "notifd", *sys.argv[1:]]
        self.environ = dict(os.environ if environ is None else environ)
        self.shared = check_shared(reactor, config)
        self.reserved: list[socket.socket] = []
        self.ports: list[int] = []
        self.workers: dict[int, _Worker] = {}
        self.transports: dict[int, Any] = {}
        self.ready: set[int] = set()
        self.all_ready = False
        self.stopping = False
        self.failed = False
        self._notify_dir: str | None = None
        self._notify_ports: dict[int, Any] = {}
        # Watchdog: systemd wants a ping every `_watchdog_period` seconds (half its WatchdogSec).
        # Workers ping us twice as often; one that has not pinged for a whole period is late.
        self._watchdog_period: float | None = None
        self._watchdog = None
        self.pinged: dict[int, float] = {}  # worker number -> when it last pinged (running workers only)
        self.late: list[int] = []

    def reserve(self) -> None:
        """Bind (without listening) every shared port, resolving port 0; raises OSError."""
        for shared in self.shared:
            try:
                shared.check_free()
            except OSError as e:
                raise OSError(e.errno, f"cannot listen on {shared.description!r}: {e.strerror}") from None
            sock = shared.socket()
            self.reserved.append(sock)
            self.ports.append(sock.getsockname()[1])

    def start(self) -> None:
        """Start the workers (in the running reactor)."""
        # Workers say READY and ping their watchdog to us, as they would to systemd: one
        # socket per worker, so that we know who spoke.
        self._notify_dir = tempfile.mkdtemp(prefix="notifd-workers-")
        for number in range(1, self.config.workers + 1):
            self._notify_ports[number] = self.reactor.listenUNIXDatagram(
                self._notify_path(number), _Notifications(self, number), mode=0o600
            )
        self._watchdog_period = systemd.watchdog_interval(self.environ)
        if self._watchdog_period:
            from twisted.internet import task

            self._watchdog = task.LoopingCall(self._watchdog_tick)
            self._watchdog.clock = self.reactor
            self._watchdog.start(self._watchdog_period / 2, now=True)
        for number in range(1, self.config.workers + 1):
            self._spawn(number)

    def _notify_path(self, number: int) -> str:
        return str(Path(self._notify_dir) / f"notify-{number}")

    def _spawn(self, number: int) -> None:
        env = {k: v for k, v in self.environ.items() if k not in _SYSTEMD_ONLY}
        env.update({WORKER_ENV: str(number), PORTS_ENV: ",".join(map(str, self.ports)), PARENT_ENV: str(os.getpid()),
                    "NOTIFY_SOCKET": self._notify_path(number)})
        if self._watchdog_period:
            # The worker pings every half of this: twice per period of ours.
            env["WATCHDOG_USEC"] = str(int(self._watchdog_period * 1_000_000))
            # A worker starting gets a whole WatchdogSec for its first ping.
            self.pinged[number] = self.reactor.seconds() + self._watchdog_period
        worker = _Worker(self, number)
        self.workers[number] = worker
        self.transports[number] = self.reactor.spawnProcess(
            worker, self.argv[0], self.argv, env=env, childFDs={0: 0, 1: 1, 2: 2}
        )

    def _watchdog_tick(self) -> None:
        now = self.reactor.seconds()
        late = sorted(n for n, at in self.pinged.items() if now - at > self._watchdog_period)
        if not late:
            if self.late:
                self.log.info("every worker pings its watchdog again")
            systemd.notify("WATCHDOG=1")
        elif late != self.late:
            self.log.error(
                "worker {n} has not pinged its watchdog for {seconds:.1f}s: its event loop is stuck; "
                "not pinging systemd's watchdog, which restarts notifd",
                n=", ".join(map(str, late)), seconds=now - max(self.pinged[n] for n in late),
            )
        self.late = late

    def _notified(self, number: int, message: str) -> None:
        lines = message.splitlines()
        if "WATCHDOG=1" in lines and number in self.pinged:
            self.pinged[number] = self.reactor.seconds()
        if "READY=1" in lines and not self.all_ready:
            self.ready.add(number)
            if len(self.ready) == self.config.workers:
                self.all_ready = True
                listening = " ".join(f"{'TLS' if s.tls else s.description.split(':')[0].upper()} {s.interface or '*'}:{p}"
                                     for s, p in zip(self.shared, self.ports))
                self.log.info("notifd: {n} workers ready, sharing {listening}", n=self.config.workers, listening=listening)
                systemd.notify(f"READY=1\nSTATUS={self.config.workers} workers on {listening}")

    def _ended(self, worker: _Worker, code: int | None, sig: int | None) -> None:
        self.transports.pop(worker.number, None)
        self.pinged.pop(worker.number, None)  # not stuck: gone, and started again below
        if self.stopping:
            if code != 0:
                self.failed = True
            return
        how = f"exit code {code}" if code is not None else f"signal {sig}"
        if not self.all_ready:
            # A worker that cannot start (a bad setting, the database unreachable) would
            # fail again: stop, as a single notifd would.
            self.log.critical("worker {n} failed to start ({how}); stopping", n=worker.number, how=how)
            self.failed = True
            self.reactor.stop()
            return
        self.log.error("worker {n} ended ({how}); starting it again", n=worker.number, how=how)
        self.reactor.callLater(RESTART_DELAY, self._restart, worker.number)

    def _restart(self, number: int) -> None:
        if not self.stopping:
            self._spawn(number)

    def reload(self) -> None:
        for transport in list(self.transports.values()):
            transport.signalProcess("HUP")

    def stop(self):
        """SIGTERM every worker; fires once all have exited."""
        self.stopping = True
        systemd.notify("STOPPING=1")
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()  # workers stop pinging as they stop; TimeoutStopSec= applies now
        waiting = []
        for number, transport in list(self.transports.items()):
            try:
                transport.signalProcess("TERM")
            except Exception:
                continue  # already gone
            waiting.append(self.workers[number].ended)

        def done(_):
            for sock in self.reserved:
                sock.close()
            for number, port in self._notify_ports.items():
                port.stopListening()
                Path(self._notify_path(number)).unlink(missing_ok=True)
            if self._notify_dir is not None:
                os.rmdir(self._notify_dir)

        return defer.DeferredList(waiting).addCallback(done)


class _Notifications(protocol.DatagramProtocol):
    noisy = False

    def __init__(self, supervisor: Supervisor, number: int) -> None:
        self.supervisor = supervisor
        self.number = number

    def datagramReceived(self, datagram, addr) -> None:
        self.supervisor._notified(self.number, datagram.decode("utf-8", "replace"))


def supervise(config: Config, logging) -> int:
    """Run the parent of `--workers N` until SIGTERM or SIGINT; returns the exit code."""
    from sqlalchemy.exc import SQLAlchemyError
    from twisted.internet import reactor

    from . import db as dbmod

    log = Logger(namespace="notifd")
    try:
        # The configuration is checked (and the ports reserved) first, so that a mistake in it
        # leaves no database behind; then the schema is created or upgraded once, here,
        # before any worker opens it.
        supervisor = Supervisor(reactor, config)
        supervisor.reserve()
        dbmod.open_engine(dbmod.database_url(config.db)).dispose()
    except (dbmod.UnusableDatabase, ConfigError, OSError, SQLAlchemyError) as e:
        log.critical("cannot start: {error}", error=first_line(e))
        return 1
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(supervisor.reload))
    reactor.callWhenRunning(supervisor.start)
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    reactor.run()
    return 1 if supervisor.failed else 0
