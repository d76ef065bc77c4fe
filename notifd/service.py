# The daemon put together: database, plugins, hub, wake-ups, listening endpoints, metrics,
# retention, heartbeat and systemd notifications, with their start and stop order.
# `Daemon` takes its reactor as a parameter (tests pass a memory reactor); `run()` owns the
# global reactor, logging, signals and the process's exit code.
from __future__ import annotations

import dataclasses
import gc
import os
import signal
from typing import Any, Callable

from sqlalchemy.exc import SQLAlchemyError
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from . import __version__, plugins, store, systemd, tls
from . import db as dbmod
from .config import Config, ConfigError, changed, with_backlog
from .errors import first_line
from .hub import Hub
from .items import Notifier
from .limits import FailureLimiter
from .logs import Logging
from .metrics import Metrics, site
from .outbox import Outbox
from .posting import HEARTBEAT_SECONDS
from .retention import Pruner
from .wakeup import make_listener
from .wire import ConnectionFactory, Server

CLOSE_TIMEOUT = 3.0  # how long stopping waits for connections to flush and close
IDLE_SWEEP_SECONDS = 15.0  # how often, at most, idle connections are looked for
# What SIGHUP can change without a restart (docs/operations.md says the same).
RELOADABLE = frozenset(
    {"log_level", "recent_max_age", "recent_max_count", "types", "retention", "prune_interval",
     "prune_batch", "max_line_length", "anonymous", "hello_failures", "hello_window", "max_connections",
     "max_connections_per_address", "idle_timeout", "max_unsent_bytes", "max_unidentified_per_address",
     "hello_timeout", "keepalive", "tls_ciphers", "cors_origins", "http_hosts", "http_request_timeout",
     "http_max_requests"}
)


class StartError(Exception):
    """The daemon cannot start; the message says why."""


class Daemon:
    """Every part of a running notifd."""

    log = Logger()

    def __init__(
        self, config: Config, reactor: Any, engine=None, plugin_manager=None, logging: Logging | None = None,
        shared_ports: list[int] | None = None,
    ) -> None:
        self.config = config
        self.started_with = config  # what a restart-only setting stays at until the restart
        self.reactor = reactor
        self.logging = logging
        self.shared_ports = shared_ports  # a --workers worker: listen on these ports, shared (workers.py)
        self.metrics = Metrics()
        url = dbmod.database_url(config.db)
        self.engine = engine if engine is not None else dbmod.open_engine(
            url, f"notifd {config.node}", busy_timeout=config.sqlite_busy_timeout
        )
        self.db = dbmod.Database.threaded(
            self.engine, reactor, observe=self.metrics.database_seconds.observe,
            on_error=lambda kind: self.metrics.database_errors[kind].inc(),
        )
        pm = plugin_manager if plugin_manager is not None else plugins.get_plugin_manager(dirs=config.plugins_dirs)
        config.check_plugins(pm.origins)
        owned = plugins.owned_item_types(pm, config.plugins)
        self.types = {item_type.name: item_type for _, item_type in owned}
        config.check_types(self.types)
        tls.check_ciphers(config.tls_ciphers)
        windows = self._windows(config)
        self.hub = Hub(self.db, reactor, windows, config.poll_interval, metrics=self.metrics)
        pm.register(self.hub, name="notifd.hub")
        found = plugins.notifiers(pm, config.plugins, reactor)
        config.check_notifiers(n.name for _, n in found)
        found = [(plugin, config.notifier(n)) for plugin, n in found]
        # Live notifiers are called by the hub; durable ones through the outbox.
        self.hub.notifiers = [(plugin, n) for plugin, n in found if not n.durable]
        durable = [(plugin, n) for plugin, n in found if n.durable]
        self.outbox = (
            Outbox(self.db, reactor, durable, config.node, config.poll_interval, metrics=self.metrics)
            if durable else None
        )
        self.server = Server(
            db=self.db,
            hub=self.hub,
            types=self.types,
            clock=reactor,
            max_line=config.max_line_length,
            node=config.node,
            metrics=self.metrics,
            type_plugins={item_type.name: plugin_name for plugin_name, item_type in owned},
            hello_limiter=FailureLimiter(reactor, config.hello_failures, config.hello_window),
        )
        self._apply_limits(config)
        for warning in pm.warnings:
            self.log.warn("{warning}", warning=warning)
        self.lifecycle = plugins.Lifecycle(
            pm, config.plugins, config.config_dir, plugins.state_directory(config.db), reactor
        )
        self.factory = ConnectionFactory(self.server)
        self.web = None
        if config.http_listen:
            from .web import Web

            self.web = Web(self.server, config, self.factory, self._posted_over_http)
            # Event streams hear of each new item as the client push does: from the hub.
            self.hub.notifiers.append(("notifd.web", Notifier("events", self.web.events.feed)))
        self.hub.revoked = self._revoked
        self.metrics.follow(lambda: self.hub.subscribers, lambda: len(self.server.connections))
        self.wakeups = make_listener(reactor, self.engine, self._wake, config.node)
        self.pruner = Pruner(self.db, reactor, config, on_pruned=self.metrics.pruned.inc)
        if self.wakeups is not None:
            self.hub.wakeup_pending = self.wakeups.pending
        self.ports: list = []
        self.http_ports: list = []
        self.tls: list[tls.ServerTLS] = []  # of the ssl: endpoints, reloaded on SIGHUP
        self.listening = ""  # the endpoints, as `notifctl status` shows them
        self.started_at = store.utcnow()
        self.metrics_port = None
        self._heartbeat = task.LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._watchdog = task.LoopingCall(systemd.notify, "WATCHDOG=1")
        self._watchdog.clock = reactor
        self._idle_sweep = task.LoopingCall(self.server.sweep)
        self._idle_sweep.clock = reactor

    def _apply_limits(self, config: Config) -> None:
        server = self.server
        server.max_line = config.max_line_length
        server.anonymous = config.anonymous
        server.hello_limiter.allowed = config.hello_failures
        server.hello_limiter.window = config.hello_window
        server.max_connections = config.max_connections
        server.max_per_address = config.max_connections_per_address
        server.max_unidentified_per_address = config.max_unidentified_per_address
        server.hello_timeout = config.hello_timeout
        server.idle_timeout = config.idle_timeout
        server.max_unsent = config.max_unsent_bytes
        server.keepalive = config.keepalive

    def _windows(self, config: Config) -> dict:
        return {name: config.window(item_type) for name, item_type in self.types.items()}

    # --- start and stop -----------------------------------------------------------------------

    def _wake(self) -> None:
        self.hub.wake()
        if self.outbox is not None:
            self.outbox.wake()

    def _posted_over_http(self, items: list) -> None:
        """A group of HTTP posts stored new `items` (in id order): tell this daemon now, wake the others."""
        self.hub.posted(items)
        if self.outbox is not None:
            self.outbox.wake()
        path = dbmod.sqlite_path(self.engine.url)
        if path is not None:  # PostgreSQL: the NOTIFY was part of the posting transaction
            from .wakeup import send_datagrams

            # Not to our own socket: the hub was woken above, and a second check would find nothing.
            own = self.wakeups.path.name if self.wakeups is not None else None
            self.db.run_blocking(send_datagrams, path, own).addErrback(lambda failure: None)  # a hint

    def _revoked(self, change) -> None:
        self.server.revoke(change)
        if self.web is not None:
            self.web.revoke(change)

    @defer.inlineCallbacks
    def start(self):
        """Start everything; the Deferred fires once every endpoint listens (and systemd knows)."""
        watchdog = systemd.watchdog_interval()
        if watchdog:
            self._watchdog.start(watchdog, now=True)  # also during a slow start
        self.db.start()
        yield self._check_node_name()
        yield self.db.run(store.clear_presence, self.config.node)
        yield self.hub.start()
        if self.outbox is not None:
            yield self.outbox.start()
        if self.wakeups is not None:
            yield defer.maybeDeferred(self.wakeups.start)
        yield self.lifecycle.start()  # before listening: a plugin that cannot start stops the daemon
        addresses = []
        for index, description in enumerate(self.config.listen):
            if self.shared_ports is not None:
                port = yield self._listen_shared(description, self.shared_ports[index], self.factory)
            else:
                port = yield self._listen(description, self.factory)
            self.ports.append(port)
            addresses.append(_describe(port.getHost(), tls.is_tls(description)))
            self.log.info("notifd listening on {address}", address=addresses[-1])
        if self.web is not None:
            from .web import site as web_site

            http_site = web_site(self.web, self._health_check)
            for offset, description in enumerate(self.config.http_listen):
                if self.shared_ports is not None:
                    index = len(self.config.listen) + offset
                    port = yield self._listen_shared(description, self.shared_ports[index], http_site)
                else:
                    port = yield self._listen(description, http_site)
                self.http_ports.append(port)
                secure = tls.is_tls(description)
                host = port.getHost()
                addresses.append(f"HTTP{'S' if secure else ''} {host.host}:{host.port}")
                self.log.info("HTTP API and live page on {url}", url=f"http{'s' if secure else ''}://{host.host}:{host.port}/")
            self.web.events.start()
        if self.config.metrics:
            self.metrics_port = yield self._listen(
                self.config.metrics, site(self.metrics, self._health_check, self.reactor)
            )
            self.log.info("metrics on http {address}", address=_describe(
                self.metrics_port.getHost(), tls.is_tls(self.config.metrics)))
        self.listening = " ".join(addresses)
        self._heartbeat.start(HEARTBEAT_SECONDS, now=True)
        # Often enough that a connection is closed at most half its timeout late.
        self._idle_sweep.start(min(IDLE_SWEEP_SECONDS, (self.config.idle_timeout or IDLE_SWEEP_SECONDS) / 2), now=False)
        self.pruner.start()
        # Items committed between loading the hub's state and listening are found here.
        self.hub.wake()
        systemd.notify(f"READY=1\nSTATUS=listening on {self.listening}")

    @defer.inlineCallbacks
    def _check_node_name(self):
        """Warn when another daemon seems to run under our node name (their rows would mix)."""
        now = store.utcnow()
        for node in (yield self.db.run(store.list_nodes)):
            if (node.node == self.config.node and node.stopped_at is None and node.pid != os.getpid()
                    and (now - node.heartbeat_at).total_seconds() < 3 * HEARTBEAT_SECONDS):
                self.log.warn(
                    "a daemon named {node} (pid {pid}) was alive {ago:.0f}s ago: if it still runs, give "
                    "each daemon on this database its own `node` name",
                    node=node.node, pid=node.pid, ago=(now - node.heartbeat_at).total_seconds(),
                )

    def _listen_shared(self, description: str, port: int, factory):
        from .workers import listen_shared, shared_port

        try:
            shared = shared_port(self.reactor, description, self.config.tls_ciphers)
            listening = listen_shared(self.reactor, shared, port, factory)
        except (OSError, ConfigError) as e:
            return defer.fail(StartError(f"cannot listen on {description!r}: {e}"))
        if shared.tls is not None:
            self.tls.append(shared.tls)
        return defer.succeed(listening)

    def _listen(self, description: str, factory):
        try:
            full = with_backlog(description)  # errors name the entry as the operator wrote it
            if tls.is_tls(full):
                endpoint, server_tls = tls.server_endpoint(self.reactor, full, self.config.tls_ciphers)
                self.tls.append(server_tls)
            else:
                endpoint = serverFromString(self.reactor, full)
        except Exception as e:
            return defer.fail(StartError(f"cannot listen on {description!r}: {e}"))
        d = endpoint.listen(factory)

        def failed(failure):
            raise StartError(f"cannot listen on {description!r}: {failure.getErrorMessage()}")

        return d.addErrback(failed)

    @defer.inlineCallbacks
    def stop(self):
        """Stop accepting, close connections, let database work in flight finish, release it."""
        systemd.notify("STOPPING=1")
        self.log.info("notifd stopping")
        yield defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in self.ports + self.http_ports])
        self.ports, self.http_ports = [], []
        if self.web is not None:
            self.web.events.stop()
        for loop in (self._heartbeat, self._watchdog, self._idle_sweep):
            if loop.running:
                loop.stop()
        self.pruner.stop()
        self.hub.stop()
        if self.wakeups is not None:
            self.wakeups.stop()
        outbox_stopped = self.outbox.stop() if self.outbox is not None else None
        yield self._close_connections()
        if self.metrics_port is not None:
            yield self.metrics_port.stopListening()
        if outbox_stopped is not None:
            yield outbox_stopped  # bounded (outbox.STOP_WAIT), before the plugins that notify stop
        yield self.lifecycle.stop()  # bounded: a plugin cannot hold the stop
        # Each pool runs jobs in order: once these are done, everything queued before is.
        try:
            yield self.server.read_marks.flushed()
            yield self.db.run(store.max_item_id)
            yield self.db.run(store.node_stopped, self.config.node)
            yield self.db.run(store.clear_presence, self.config.node)
        except Exception:
            self.log.failure("cannot record the stop in the database")
        self.db.stop()

    def _close_connections(self):
        """Close every client connection, letting written bytes flush; abort the stragglers."""
        connections = list(self.server.connections)
        if not connections:
            return defer.succeed(None)
        closed = defer.Deferred()
        remaining = set(connections)

        def gone(connection):
            remaining.discard(connection)
            if not remaining and not closed.called:
                closed.callback(None)

        def too_slow():
            for connection in list(remaining):
                connection.transport.abortConnection()

        for connection in connections:
            connection.on_close = gone
            connection.transport.loseConnection()
        timer = self.reactor.callLater(CLOSE_TIMEOUT, too_slow)
        closed.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return closed

    # --- while running ------------------------------------------------------------------------

    def _beat(self):
        # Every beat writes the whole row: one that failed (a locked database) is healed by the next.
        d = self.db.run(
            store.node_alive, self.config.node, version=__version__, pid=os.getpid(), listen=self.listening,
            started_at=self.started_at, connections=len(self.server.connections),
            subscribers=len(self.hub.subscribers), types=sorted(self.types),
        )
        d.addErrback(lambda failure: None)  # the database logs an outage, once
        return d

    def _health_check(self):
        return self.db.run(store.max_item_id)

    def reload(self, new: Config) -> list[str]:
        """Apply what can change without a restart (SIGHUP); returns the fields that need a restart."""
        new.check_types(self.types)
        tls.check_ciphers(new.tls_ciphers)
        # Against the start, not the last reload: a setting put back as it was needs no restart.
        needs_restart = [name for name in changed(self.started_with, new) if name not in RELOADABLE]
        if self.logging is not None:
            self.logging.set_level(new.log_level)
        windows = self._windows(new)
        self.hub.set_windows(windows)
        self._apply_limits(new)
        if self.web is not None:
            self.web.config = new
        if self.config.anonymous and not new.anonymous:
            if self.web is not None:
                self.web.refuse_anonymous()
            closed = self.server.refuse_anonymous()
            self.log.info("anonymous clients are no longer served: closed {n} connection(s)", n=closed)
        self.pruner.configure(new)
        for server_tls in self.tls:
            server_tls.reload(self.reactor, new.tls_ciphers)  # logs its outcome
        self.config = new
        return needs_restart


def _describe(address, is_tls: bool = False) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        # A TLS port's address says TCP: name what a client must speak.
        return f"{'TLS' if is_tls else address.type} {host}:{port}"
    name = getattr(address, "name", None)
    return f"unix {name.decode() if isinstance(name, bytes) else name}" if name else str(address)


def run(config: Config, reread: Callable[[], Config] | None = None) -> int:
    """Run notifd in the foreground until SIGTERM or SIGINT; returns the exit code.

    `reread()` builds the configuration again (flags, environment, file) for SIGHUP.
    """
    from twisted.internet import reactor

    from . import workers

    logging = Logging(config.log_format, config.log_level)
    logging.start()
    log = Logger(namespace="notifd")
    worker = workers.worker_ports()
    if worker is None and config.workers > 1:
        return workers.supervise(config, logging)
    shared_ports = None
    if worker is not None:
        number, shared_ports = worker
        if not workers.stop_with_parent():
            log.critical("cannot start: the notifd that started this worker is gone")
            return 1
        given, reread_given = config, reread or (lambda: given)
        config = _as_worker(given, number)
        reread = lambda: _as_worker(reread_given(), number)  # noqa: E731
    try:
        daemon = Daemon(config, reactor, logging=logging, shared_ports=shared_ports)
    except (dbmod.UnusableDatabase, plugins.PluginError, ConfigError, SQLAlchemyError, OSError) as e:
        log.critical("cannot start: {error}", error=first_line(e))
        return 1
    exit_code = [0]

    def start():
        def failed(failure):
            log.critical("cannot start: {error}", error=first_line(failure.value))
            exit_code[0] = 1
            reactor.stop()

        d = daemon.start()
        # What start-up built (SQLAlchemy, Twisted, plugins) lives as long as the process:
        # out of the collector's sight, a full collection during a fan-out is shorter.
        d.addCallback(lambda _: gc.freeze())
        d.addErrback(failed)

    def reload():
        try:
            new = reread() if reread else daemon.config
            needs_restart = daemon.reload(new)
        except (ConfigError, plugins.PluginError) as e:
            log.error("SIGHUP: configuration not reloaded: {error}", error=str(e))
            return
        log.info("SIGHUP: configuration reloaded")
        if needs_restart:
            log.warn("SIGHUP: restart notifd to apply {settings}", settings=", ".join(needs_restart))

    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(reload))
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stop)
    reactor.run()
    return exit_code[0]


def _as_worker(config: Config, number: int) -> Config:
    """Worker `number` of `--workers`: its own node name (and metrics port)."""
    metrics = config.metrics.replace("{worker}", str(number)) if config.metrics else config.metrics
    return dataclasses.replace(config, node=f"{config.node}/{number}", metrics=metrics)


def check(config: Config) -> str:
    """`notifd --check-config`: validate everything that can be checked without starting."""
    from twisted.internet import reactor

    from .config import effective, to_toml

    pm = plugins.get_plugin_manager(dirs=config.plugins_dirs)
    config.check_plugins(pm.origins)
    types = plugins.item_types(pm, config.plugins)
    config.check_types(types)
    tls.check_ciphers(config.tls_ciphers)
    found = plugins.notifiers(pm, config.plugins, reactor)
    config.check_notifiers(n.name for _, n in found)
    for _, notifier in found:
        config.notifier(notifier)
    config = dataclasses.replace(config, db=dbmod.database_url(config.db).render_as_string(hide_password=False))
    if config.workers > 1:
        from .workers import check_shared

        check_shared(reactor, config)
    endpoints = [("listen", d) for d in config.listen] + [("http.listen", d) for d in config.http_listen]
    for key, description in endpoints + [("metrics", config.metrics)]:
        if description and not (key == "metrics" and config.workers > 1):
            try:
                if tls.is_tls(description):
                    endpoint, _ = tls.server_endpoint(reactor, description, config.tls_ciphers)  # reads its files
                else:
                    endpoint = serverFromString(reactor, description)
            except Exception as e:
                raise ConfigError(f"{key}: bad endpoint {description!r}: {e}") from None
            port = getattr(endpoint, "_port", None)  # TCP and TLS endpoints; systemd: and unix: have none
            if isinstance(port, int) and not 0 <= port <= 65535:
                raise ConfigError(f"{key}: bad endpoint {description!r}: port {port} is not in 0-65535")
    return to_toml(effective(config))
