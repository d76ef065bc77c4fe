# The outbox of durable notifiers, reactor side: at-least-once delivery of every
# item to each notifier declared with `durable=True`, with back-off retries, across
# restarts, ending in a dead letter that `notifctl outbox retry ID` re-queues.
#
# Rules: the database is the truth. A round (on a wake-up, on the safety poll, or after
# deliveries finish) runs one transaction on the database thread that puts new items in
# the outbox (each notifier has its own mark over the items table, so items committed
# while the daemon was down are found) and claims the due deliveries. Each delivery then
# enters plugin code through `call_plugin` (timeout, logging, counting); its outcome is
# written back on the database thread. The reactor never waits for either.
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.exc import DBAPIError
from twisted.internet import defer, task
from twisted.logger import Logger

from . import store
from .items import Notifier
from .plugins import call_plugin

CONCURRENCY = 8  # deliveries in flight per notifier
LEASE_MARGIN = 60.0  # seconds a claim outlives the notifier's timeout, for a daemon that died
STOP_WAIT = 5.0  # seconds a stopping daemon waits for its deliveries in flight before handing them back
COUNT_INTERVAL = 10.0  # seconds between counts of the outbox for the metrics (a count reads every row)


class Outbox:
    """Delivers new items to the durable notifiers through the `outbox` table."""

    log = Logger()

    def __init__(
        self,
        db,
        clock,
        notifiers: list[tuple[str, Notifier]],
        node: str,
        poll_interval: float = 1.0,
        concurrency: int = CONCURRENCY,
        metrics=None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.notifiers = {notifier.name: (plugin_name, notifier) for plugin_name, notifier in notifiers}
        self.node = node
        self.concurrency = concurrency
        self.in_flight: Counter[str] = Counter()
        self._busy = False
        self._again = False
        self._full = False  # the last round hit a notifier's concurrency limit
        self._stopped = False
        self._released = False  # stopped, and this node's claims handed back
        self._delivering: set[defer.Deferred] = set()  # deliveries in flight, until their outcome is recorded
        self._poll = task.LoopingCall(self.wake)
        self._poll.clock = clock
        self._poll_interval = poll_interval
        self.metrics = metrics  # metrics.Metrics: the outbox gauges, updated by rounds
        self._counted_at: float | None = None
        self._shown: set[tuple[str, str]] = set()  # (notifier, state) gauges set so far

    def start(self):
        """Resume deliveries interrupted by a restart of this node, then follow the outbox.

        The Deferred fires once every notifier has its mark: an item committed after that
        (after notifd says it listens) is delivered, even before the first round.
        """

        def released(_: Any) -> None:
            self._poll.start(self._poll_interval, now=True)

        d = self.db.run(_start, self.node, list(self.notifiers), self._now())
        return d.addCallback(released)

    def stop(self) -> defer.Deferred:
        """Stop starting deliveries; fires once the rest is handed back.

        Deliveries in flight get up to STOP_WAIT seconds to finish, and their outcome is
        recorded; then this node's claims still open are released, so that another node
        (or this one's next start) takes them at once rather than after their lease.
        """
        self._stopped = True
        if self._poll.running:
            self._poll.stop()
        done: defer.Deferred = defer.Deferred()
        timer = self.clock.callLater(STOP_WAIT, lambda: done.called or done.callback(None))
        defer.DeferredList(list(self._delivering)).addCallback(lambda _: done.called or done.callback(None))

        def release(_: Any) -> defer.Deferred:
            if timer.active():
                timer.cancel()
            self._released = True  # a delivery finishing later records nothing: another node has it
            d = self.db.run(store.release_claims, self.node, now=self._now())
            return d.addErrback(lambda failure: self.log.failure("outbox: cannot hand back this node's claims", failure))

        return done.addCallback(release)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc).replace(tzinfo=None)

    # --- rounds -------------------------------------------------------------------------------

    def wake(self) -> None:
        """Something may be due: run a round (coalesced with a round in flight)."""
        if self._stopped:
            return
        if self._busy:
            self._again = True
            return
        self._busy = True
        now = self._now()
        limits = {name: self.concurrency - self.in_flight[name] for name in self.notifiers}
        leases = {
            name: now + timedelta(seconds=notifier.timeout + LEASE_MARGIN)
            for name, (_, notifier) in self.notifiers.items()
        }
        # Counted by a round now and then, on the database thread: a scrape never waits
        # for the database, and a busy outbox is not counted at every round.
        count = self.metrics is not None and (
            self._counted_at is None or self.clock.seconds() - self._counted_at >= COUNT_INTERVAL
        )
        if count:
            self._counted_at = self.clock.seconds()
        d = self.db.run(_round, list(self.notifiers), limits, self.node, now, leases, count)
        d.addCallbacks(self._claimed, self._round_failed, callbackArgs=(limits,))
        d.addBoth(self._round_done)

    def _claimed(self, result: tuple[bool, list[store.Delivery], dict | None], limits: dict[str, int]) -> None:
        if self._stopped:
            return  # stopped while the round ran: these claims are released at the next start
        more, deliveries, counts = result
        if counts is not None:
            self._show(counts)
        self._again = self._again or more
        claimed = Counter(delivery.notifier for delivery in deliveries)
        self._full = any(claimed[name] >= limit for name, limit in limits.items())
        for delivery in deliveries:
            self._deliver(delivery)

    def _show(self, counts: dict[tuple[str, str], int]) -> None:
        # Every configured notifier shows both states (0 included), and a gauge once set
        # goes back to 0 rather than keep a stale count.
        configured = {(name, state) for name in self.notifiers for state in (store.PENDING, store.DEAD)}
        shown = self._shown | configured | set(counts)
        for notifier, state in shown:
            self.metrics.outbox.labels(notifier, state).set(counts.get((notifier, state), 0))
        self._shown = shown

    def _round_failed(self, failure) -> None:
        if not failure.check(DBAPIError):  # an outage is logged by the database, once
            self.log.failure("outbox: cannot read the outbox; retrying", failure)

    def _round_done(self, _: Any) -> None:
        self._busy = False
        if self._again:
            self._again = False
            self.wake()

    # --- one delivery ---------------------------------------------------------------------------

    def _deliver(self, delivery: store.Delivery) -> None:
        plugin_name, notifier = self.notifiers[delivery.notifier]
        self.in_flight[notifier.name] += 1
        d = call_plugin(
            plugin_name, f"notifier {notifier.name}", notifier.notify, delivery.item,
            timeout=notifier.timeout, clock=self.clock,
        )
        d.addCallback(self._finished, delivery, notifier)
        self._delivering.add(d)
        d.addBoth(lambda result: (self._delivering.discard(d), result)[1])

    def _finished(self, error: str | None, delivery: store.Delivery, notifier: Notifier):
        self.in_flight[notifier.name] -= 1
        if self._released:
            return None  # handed back at the stop: another node delivers it
        if error is None:
            d = self.db.run(store.delivered, delivery.id)
        else:
            delay = notifier.retry.delay(delivery.attempts)
            retry_at = None if delay is None else self._now() + timedelta(seconds=delay)
            if retry_at is None:
                self._counted_at = None  # an operator watches for dead deliveries: count at the next round
                self.log.warn(
                    "outbox: delivery {id} of item {item} to {notifier} is dead after {attempts} attempts: {error}",
                    id=delivery.id, item=delivery.item.id, notifier=notifier.name, attempts=delivery.attempts,
                    error=error,
                )
            d = self.db.run(store.delivery_failed, delivery.id, error, retry_at)
        d.addErrback(self._record_failed)
        if self._full:
            d.addCallback(lambda _: self.wake())
        return d  # a stop waits for the outcome to be recorded

    def _record_failed(self, failure) -> None:
        # The delivery stays claimed until its lease ends, then is tried again.
        if not failure.check(DBAPIError):  # an outage is logged by the database, once
            self.log.failure("outbox: cannot record a delivery", failure)

@store.writes
def _start(conn, node, notifiers, now) -> None:
    store.release_claims(conn, node, now=now)
    store.add_marks(conn, notifiers)


@store.writes
def _round(conn, notifiers, limits, node, now, leases, count=False) -> tuple[bool, list[store.Delivery], dict | None]:
    more = store.enqueue_new_items(conn, notifiers, now=now)
    claimed = store.claim_deliveries(conn, limits, node=node, now=now, lease_until=leases)
    return more, claimed, store.count_outbox(conn) if count else None
