# The daemon put together: database, plugins, hub, wake-ups and listening endpoints, with
# their start and stop order. `Daemon` takes its reactor as a parameter (tests pass a
# memory reactor); `run()` owns the global reactor, logging and the process's exit code.
from __future__ import annotations

import gc
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from . import db as dbmod
from . import plugins, store
from .config import Config, ConfigError
from .hub import Hub
from .wakeup import WakeupListener
from .wire import ConnectionFactory, Server


class StartError(Exception):
    """The daemon cannot start; the message says why."""


class Daemon:
    """Every part of a running notifd."""

    log = Logger()

    def __init__(self, config: Config, reactor: Any, engine=None, plugin_manager=None) -> None:
        self.config = config
        self.reactor = reactor
        url = dbmod.database_url(config.db)
        self.engine = engine if engine is not None else dbmod.open_engine(url)
        self.db = dbmod.Database.threaded(self.engine, reactor)
        pm = plugin_manager if plugin_manager is not None else plugins.get_plugin_manager()
        types = plugins.item_types(pm)
        config.check_types(types)
        windows = {name: config.window(item_type) for name, item_type in types.items()}
        self.hub = Hub(self.db, reactor, windows, config.poll_interval)
        pm.register(self.hub, name="notifd.hub")
        self.hub.notifiers = plugins.notifiers(pm)
        self.server = Server(
            db=self.db,
            hub=self.hub,
            types=types,
            windows=windows,
            clock=reactor,
            max_line=config.max_line_length,
            node=config.node,
        )
        self.factory = ConnectionFactory(self.server)
        db_path = dbmod.sqlite_path(url)
        self.wakeups = WakeupListener(reactor, db_path, self.hub.wake) if db_path is not None else None
        if self.wakeups is not None:
            self.hub.wakeup_pending = self.wakeups.pending
        self.ports: list = []

    @defer.inlineCallbacks
    def start(self):
        """Start everything; the Deferred fires once every endpoint listens."""
        self.db.start()
        yield self.db.run(store.clear_presence, self.config.node)
        yield self.hub.start()
        if self.wakeups is not None:
            self.wakeups.start()
        for description in self.config.listen:
            try:
                endpoint = serverFromString(self.reactor, description)
                port = yield endpoint.listen(self.factory)
            except Exception as e:
                raise StartError(f"cannot listen on {description!r}: {e}") from e
            self.ports.append(port)
            self.log.info("notifd listening on {address}", address=_describe(port.getHost()))
        # Items committed between loading the hub's state and listening are found here.
        self.hub.wake()

    @defer.inlineCallbacks
    def stop(self):
        """Stop accepting, close connections, let queued database work finish, release it."""
        yield defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in self.ports])
        self.ports = []
        if self.wakeups is not None:
            self.wakeups.stop()
        self.hub.stop()
        # The pool runs jobs in order: once this one is done, everything queued before is.
        yield self.db.run(store.max_item_id)
        yield self.db.run(store.clear_presence, self.config.node)
        self.db.stop()


def _describe(address) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"{address.type} {host}:{port}"
    return str(address)


def run(config: Config) -> int:
    """Run notifd in the foreground until SIGTERM or SIGINT; returns the exit code."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    log = Logger(namespace="notifd")
    try:
        daemon = Daemon(config, reactor)
    except (dbmod.UnusableDatabase, plugins.PluginError, ConfigError, SQLAlchemyError, OSError) as e:
        log.critical("cannot start: {error}", error=str(e).splitlines()[0])
        return 1
    exit_code = [0]

    def started_or_failed():
        d = daemon.start()

        def failed(failure):
            log.critical("cannot start: {error}", error=failure.getErrorMessage())
            exit_code[0] = 1
            reactor.stop()

        # What start-up built (SQLAlchemy, Twisted, plugins) lives as long as the process:
        # out of the collector's sight, a full collection during a fan-out is shorter (issue 6).
        d.addCallback(lambda _: gc.freeze())
        d.addErrback(failed)

    reactor.callWhenRunning(started_or_failed)
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stop)
    reactor.run()
    return exit_code[0]
