# Retention: which items expire, and the daemon's periodic pruning.
#
# Rule: pruning never holds the database for long. Each batch of `prune_batch` deletions is
# its own call on the database thread, so client queries queued meanwhile run between
# batches; a pass still running when the next is due is not doubled.
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

from sqlalchemy.exc import DBAPIError
from twisted.internet import defer, task
from twisted.logger import Logger

from . import store
from .config import Config
from .db import transaction

# How long the changes daemons follow (store.changes) are kept: far longer than any
# running daemon takes to read them; a daemon that starts reads the current state.
CHANGES_KEPT = timedelta(days=1)


@dataclass(frozen=True)
class Rule:
    """Items of `type_name` older than `max_age` expire; `type_name` None means every type not in `others`."""

    type_name: str | None
    max_age: timedelta
    others: tuple[str, ...] = ()

    def cutoff(self, now: datetime) -> datetime:
        return now - self.max_age


def rules(config: Config) -> list[Rule]:
    """The retention rules of a configuration: per-type ones, then the default for the rest."""
    own = tuple(name for name, table in config.types.items() if "retention" in table)
    found = [Rule(name, config.types[name]["retention"]) for name in own if config.types[name]["retention"]]
    if config.retention is not None:
        found.append(Rule(None, config.retention, own))
    return found


def prune_now(engine, found: Iterable[Rule], now: datetime, batch: int) -> dict[str, int]:
    """Prune synchronously (notifctl), a transaction per batch; returns counts by type."""
    pruned = expired(engine, found, now)
    for rule in found:
        while True:
            with transaction(engine, write=True) as conn:
                if store.prune_batch(conn, rule.type_name, rule.others, rule.cutoff(now), batch) < batch:
                    break
    return pruned


def expired(engine, found: Iterable[Rule], now: datetime) -> dict[str, int]:
    """What `prune_now` would remove, by type (`--dry-run`)."""
    counts: dict[str, int] = {}
    with transaction(engine) as conn:
        for rule in found:
            for name, count in store.count_expired(conn, rule.type_name, rule.others, rule.cutoff(now)).items():
                counts[name] = counts.get(name, 0) + count
    return counts


class Pruner:
    """Prunes expired items every `interval` seconds, in batches, on the database thread."""

    log = Logger()

    def __init__(self, db, clock, config: Config, on_pruned=lambda n: None) -> None:
        self.db = db
        self.clock = clock
        self.on_pruned = on_pruned
        self.configure(config)
        self._loop = task.LoopingCall(self.run)
        self._loop.clock = clock
        self._running = False

    def configure(self, config: Config) -> None:
        """Take new rules (SIGHUP); a changed interval applies from the next start."""
        self.rules = rules(config)
        self.interval = config.prune_interval
        self.batch = config.prune_batch

    def start(self) -> None:
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    @defer.inlineCallbacks
    def run(self):
        """One pass over every rule; returns a Deferred of the number of items removed."""
        if self._running:
            return 0
        self._running = True
        total = 0
        try:
            now = datetime.fromtimestamp(self.clock.seconds(), timezone.utc).replace(tzinfo=None)
            for rule in self.rules:
                while True:
                    n = yield self.db.run(store.prune_batch, rule.type_name, rule.others, rule.cutoff(now), self.batch)
                    total += n
                    self.on_pruned(n)
                    if n < self.batch:
                        break
            if total:
                self.log.info("pruned {count} expired items", count=total)
            yield self.db.run(store.prune_changes, now - CHANGES_KEPT)
        except DBAPIError:
            pass  # the database logged the outage, once; the next interval retries
        except Exception:
            self.log.failure("pruning failed; retrying at the next interval")
        finally:
            self._running = False
        return total
