# Logging: twisted.logger events, one per line on stderr, as text or JSON, filtered by level.
#
# Rule: whatever an event carries (a client's bytes included), what is written is one line:
# control characters in text output are escaped, and JSON escapes them by itself. Under
# systemd (JOURNAL_STREAM set), text lines carry a `<N>` syslog priority prefix instead of
# a timestamp, which journald understands.
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import provider

from .items import escape

_SYSLOG_PRIORITY = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}


def _parts(event: dict) -> tuple[str, str, str, str | None]:
    level = event.get("log_level", LogLevel.info)
    namespace = event.get("log_namespace", "-")
    message = formatEvent(event) or ""
    failure = event.get("log_failure")
    traceback = failure.getTraceback() if failure is not None else None
    return level.name, namespace, message, traceback


def text_observer(stream: IO[str], journald: bool = False):
    @provider(ILogObserver)
    def observe(event: dict) -> None:
        level, namespace, message, traceback = _parts(event)
        line = f"{namespace}: {escape(message)}"
        if traceback:
            line += " | " + escape(traceback.rstrip())
        if journald:
            prefix = f"<{_SYSLOG_PRIORITY.get(event.get('log_level'), 6)}>"
        else:
            when = datetime.fromtimestamp(event.get("log_time") or 0, timezone.utc)
            prefix = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + f"Z {level} "
        stream.write(f"{prefix}{line}\n")
        stream.flush()

    return observe


def json_observer(stream: IO[str]):
    @provider(ILogObserver)
    def observe(event: dict) -> None:
        level, namespace, message, traceback = _parts(event)
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time") or 0, timezone.utc).isoformat(),
            "level": level,
            "namespace": namespace,
            "message": message,
        }
        for key, value in event.items():
            if not key.startswith("log_") and isinstance(value, (str, int, float, bool, type(None))):
                record.setdefault(key, value)
        if traceback:
            record["traceback"] = traceback
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        stream.flush()

    return observe


class Logging:
    """The daemon's log output; `set_level` changes the level while running (SIGHUP)."""

    def __init__(self, log_format: str, level: str, stream: IO[str] | None = None) -> None:
        stream = stream or sys.stderr
        if log_format == "json":
            observer = json_observer(stream)
        else:
            observer = text_observer(stream, journald=bool(os.environ.get("JOURNAL_STREAM")))
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
        self.set_level(level)
        self.observer = FilteringLogObserver(observer, [self.predicate])

    def start(self) -> None:
        globalLogBeginner.beginLoggingTo([self.observer], redirectStandardIO=False)
        # Libraries that use the standard library's logging (Alembic's "Running upgrade")
        # go to the same place.
        handler = _ToTwisted()
        logging.getLogger().addHandler(handler)
        migrations = logging.getLogger("alembic.runtime.migration")
        migrations.setLevel(logging.INFO)
        migrations.addFilter(lambda record: record.levelno > logging.INFO or record.getMessage().startswith("Running"))

    def set_level(self, level: str) -> None:
        chosen = LogLevel.levelWithName(level)
        self.predicate.setLogLevelForNamespace(None, chosen)
        # Twisted's old-style messages ("Foo starting on 8789", "(Port 8789 Closed)") repeat
        # what notifd logs itself; keep only their warnings and errors.
        self.predicate.setLogLevelForNamespace("log_legacy", max(chosen, LogLevel.warn))


class _ToTwisted(logging.Handler):
    _levels = {
        logging.DEBUG: LogLevel.debug,
        logging.INFO: LogLevel.info,
        logging.WARNING: LogLevel.warn,
        logging.ERROR: LogLevel.error,
        logging.CRITICAL: LogLevel.critical,
    }

    def emit(self, record: logging.LogRecord) -> None:
        from twisted.logger import Logger

        level = self._levels.get(record.levelno, LogLevel.info)
        Logger(namespace=record.name).emit(level, "{message}", message=record.getMessage())
