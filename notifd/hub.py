# Reactor-side fan-out. The hub learns that items were added, reads them from the database
# (the single source of truth), and hands each to every notifier. Pushing `notif: <type>`
# to connections in notification mode is one of those notifiers: the hub registers itself
# as a plugin implementing `register_notifiers`.
#
# Rules: wake-ups carry no data. On a wake-up or a safety poll the hub asks the store for
# items above its high-water mark, so a lost wake-up costs latency, never an item. The push
# does no per-client database work: the hub knows in memory who is subscribed and the
# newest items of each type (recent.py), from which it also answers most queries.
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Callable, Mapping, Protocol

from twisted.internet import defer, task
from twisted.logger import Logger

from . import hookimpl, store
from .items import Item, Notifier, Pick, Window
from .metrics import Metrics
from .plugins import call_plugin
from .recent import RecentItems, cap_for


class Subscriber(Protocol):
    def item_added(self, type_name: str) -> bool:
        """Take the news; returns whether a notification went out."""


class Hub:
    """Who is in notification mode, what is new, and who must hear about it."""

    log = Logger()

    def __init__(self, db, clock, windows: Mapping[str, Window], poll_interval: float = 1.0, metrics=None) -> None:
        self.db = db
        self.metrics = metrics if metrics is not None else Metrics()
        self.clock = clock
        self.windows: dict[str, Window] = dict(windows)  # the recent window of each type served
        self.poll_interval = poll_interval
        self.notifiers: list[tuple[str, Notifier]] = []  # set by the service, after registration
        self.subscribers: set[Subscriber] = set()
        self.recent: dict[str, RecentItems] = {}  # the newest items of each type served
        self.high_water = 0  # the id of the last item handed to notifiers
        self.change_mark = 0  # the id of the last change (store.changes) acted on
        # Called with each revocation (a client removed or its token rotated), so that its
        # open connections close; set by the service.
        self.revoked: Callable[[store.Change], None] = lambda change: None
        self._checking = False
        self._check_again = False
        # Wake-ups heard, and how many of them the last complete check began after: while
        # the second is behind, the hub may not know an item that was announced to it.
        self._woken = 0
        self._caught_up = 0
        self._waiting: list[tuple[int, defer.Deferred]] = []  # (wake-ups to cover, fired when covered)
        self._pushed: set[str] = set()  # types pushed in this reactor turn's batch
        self._poll = task.LoopingCall(self._check)
        self._poll.clock = clock
        # Whether a wake-up waits unread (set by the service to the listener's check); a
        # hub without wake-ups relies on its checks alone.
        self.wakeup_pending: Callable[[], bool] = lambda: False

    # --- life cycle ---------------------------------------------------------------------

    def start(self):
        """Load where the store stands, then follow it. Returns a Deferred."""

        def loaded(state: tuple[int, int, dict[str, RecentItems]]) -> None:
            self.high_water, self.change_mark, self.recent = state
            self._poll.start(self.poll_interval, now=False)

        caps = {name: cap_for(window) for name, window in self.windows.items()}
        return self.db.run(_load_state, caps).addCallback(loaded)

    def set_windows(self, windows: Mapping[str, Window]) -> None:
        """New recent windows (SIGHUP)."""
        self.windows = dict(windows)
        for name, window in self.windows.items():
            memory = self.recent.get(name)
            if memory is not None:
                memory.resize(cap_for(window))
                memory.window_changed()

    def stop(self) -> None:
        if self._poll.running:
            self._poll.stop()

    # --- learning about new items -----------------------------------------------------------

    def wake(self) -> None:
        """Something was added (a wake-up): check the store; until then queries ask the database."""
        self._woken += 1
        self._check()

    def posted(self, items: list[Item]) -> None:
        """Items this daemon has just committed (a group of HTTP posts), in id order.

        When they are exactly the ids after the last one the hub has (nothing committed by
        anyone else in between: ids are drawn in commit order, see posting.py) and no check
        is in flight (it could bring them a second time), they are added as a check would
        add them, without reading them back: that read cost as much database work as the
        group's own transaction. Otherwise this is a wake-up like any other.
        """
        if (
            items
            and not self._checking
            and items[0].id == self.high_water + 1
            and items[-1].id - items[0].id == len(items) - 1
        ):
            self._add(items)
        else:
            self.wake()

    def _check(self) -> None:
        # Also the safety poll, which announces nothing: memory keeps answering meanwhile.
        if self._checking:
            self._check_again = True  # coalesced with the check in flight
            return
        self._checking = True
        d = self.db.run(store.news_after, self.high_water, self.change_mark)
        # A failure was logged by the database (once per outage); the next poll retries.
        d.addCallbacks(self._dispatch, self._check_failed, callbackArgs=(self._woken,))
        d.addBoth(self._checked)

    def _check_failed(self, failure) -> None:
        # Queries waiting for this check ask the database themselves (and say so if it fails).
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(failure)

    def _checked(self, _: object) -> None:
        self._checking = False
        if self._check_again:
            self._check_again = False
            self._check()

    def _dispatch(self, news: tuple[list[Item], list[store.Change]], woken: int) -> None:
        items, changes = news
        if len(items) < store.ITEMS_BATCH:
            self._caught_up = max(self._caught_up, woken)  # every item committed before it began
        if items:
            self._add(items)
        for change in changes:
            self.change_mark = change.id
            if change.kind == store.ITEM_REMOVED:
                for memory in self.recent.values():
                    memory.remove(change.subject)
            else:
                self.revoked(change)
        if self._waiting:  # memory now holds what those queries must see: answer them
            ready = [d for target, d in self._waiting if target <= self._caught_up]
            self._waiting = [(target, d) for target, d in self._waiting if target > self._caught_up]
            for d in ready:
                d.callback(None)

    def _add(self, items: list[Item]) -> None:
        recent = self.recent
        for item in items:
            self.high_water = item.id
            memory = recent.get(item.type)
            if memory is not None:
                memory.add(item)
        # A labels() look-up per type and batch, not per item.
        for type_name, count in Counter(item.type for item in items).items():
            self.metrics.items.labels(type_name).inc(count)
        if len(items) == store.ITEMS_BATCH:
            self._check_again = True  # there may be more
        notifiers = [(plugin_name, f"notifier {notifier.name}", notifier) for plugin_name, notifier in self.notifiers]
        for item in items:
            for plugin_name, what, notifier in notifiers:
                call_plugin(plugin_name, what, notifier.notify, item, timeout=notifier.timeout, clock=self.clock)

    # --- the push to clients in notification mode --------------------------------------------

    @hookimpl
    def register_notifiers(self, register) -> None:
        register(Notifier("clients", self._push_later))

    def _push_later(self, item: Item) -> None:
        # Notifiers are called once per item; clients need one push per type and batch.
        # A type is pushed at its first item in the batch, at once: waiting for the end of
        # the reactor turn cost a turn before the first client heard. The types
        # pushed are forgotten at the end of the turn, when the batch is done.
        type_name = item.type
        if type_name in self._pushed:
            return
        if not self._pushed:
            self.clock.callLater(0, self._pushed.clear)
        self._pushed.add(type_name)
        self._push(type_name)

    def _push(self, type_name: str) -> None:
        # The hot loop of a fan-out: one method call per subscriber, whose session decides
        # (coalescing, one outstanding) and whose connection writes the shared bytes.
        sent = 0
        for subscriber in list(self.subscribers):
            sent += subscriber.item_added(type_name)
        self.metrics.notifications.labels(type_name).inc(sent)

    def subscribe(self, subscriber: Subscriber) -> dict[str, int]:
        """Add a connection in notification mode; returns the id of the newest recent item of each type."""
        self.subscribers.add(subscriber)
        now = datetime.fromtimestamp(self.clock.seconds(), timezone.utc).replace(tzinfo=None)
        latest = {}
        for name, memory in self.recent.items():
            item = memory.newest()
            if item is not None and self.windows[name].admits(item.created_at, now):
                latest[name] = item.id
        return latest

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    # --- answering from memory ---------------------------------------------------------------

    def behind(self) -> bool:
        """Whether memory may lack an item announced to this daemon: a wake-up not read
        yet, or read and not yet followed by a complete check."""
        return self._caught_up < self._woken or self.wakeup_pending()

    def caught_up(self) -> defer.Deferred:
        """Fires once every wake-up this daemon has heard (or has waiting in its socket) is
        followed by a complete check: then memory holds every item they announced.

        A query that finds the hub behind waits for this instead of asking the database:
        under steady posting, the queries that came during a catch-up would otherwise all
        go to the database, and the catch-up behind them. It fails when the check does.
        """
        pending = self.wakeup_pending()
        target = self._woken + pending  # a wake-up waiting in the socket: its check starts now
        if self._caught_up >= target:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiting.append((target, d))  # before the check: it may answer at once
        if pending:
            self.wake()
        elif not self._checking:
            self._check()  # the last check failed: try again now, not at the next poll
        return d

    def unread(
        self, type_name: str, after: int, pick: Pick, now: datetime, checked: bool = False
    ) -> tuple[bool, Item | None]:
        """The recent item of a type above cursor `after` that a query returns, if the hub is sure of it.

        Returns (False, None) when the hub may be behind the store (see `behind`; unless
        `checked`: the caller waited for `caught_up` since the query came, so wake-ups
        heard after it need not be seen) or the answer may be older than what it holds:
        the caller asks the database. Otherwise (True, item), item None when nothing is
        unread. A post whose wake-up reached this daemon before the query is therefore
        always seen, and most queries need no database round trip.
        """
        if not checked and self.behind():
            return False, None
        memory = self.recent.get(type_name)
        if memory is None:
            return False, None
        return memory.unread(after, pick, self.windows[type_name], now)


def _load_state(conn, caps: Mapping[str, int]) -> tuple[int, int, dict[str, RecentItems]]:
    # The marks first, then memory, and memory only up to the item mark. On PostgreSQL each
    # statement sees its own snapshot. Read the other way round, an item committed between
    # two reads would be above the memory yet below the mark, never loaded nor caught up;
    # an item removed between them would stay in memory while its change is below the
    # change mark, never applied. Every id up to a visible one is committed (posters take
    # turns, posting.py), and the catch-up brings what comes after either mark.
    change_top = store.max_change_id(conn)
    top = store.max_item_id(conn)
    recent = {}
    for name, cap in caps.items():
        newest = store.newest_items(conn, name, cap, up_to=top)
        recent[name] = RecentItems(cap, newest, complete=len(newest) < cap)
    return top, change_top, recent
