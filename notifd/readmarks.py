# Named clients' read marks, persisted in groups, so that `classified?` runs at memory speed.
#
# Each answer a named client is sent moves its cursor; the cursor must reach the database
# (so the client continues after a restart or on another node) but the client need not wait
# for it. Marks are written by one call on the writer thread at a time, and calls start at
# most every `interval` seconds: a mark at rest goes at once, and the marks that come
# while a call runs or within `interval` of its start are merged (the furthest per client
# and type) and written together by the next one. Under load that is one transaction per
# interval for every answer sent meanwhile, which leaves the GIL to the reactor thread (a
# transaction costs ~0.1 ms of Python); at rest, one per answer, as soon as it is sent.
#
# Rule: a mark is only ever queued after its answer was handed to the transport
# (protocol.py emits MarkRead after the Send), so the stored state is never ahead of
# what the client was sent. A mark not yet committed when the daemon dies is lost: the
# client is sent that item again (docs/protocol.md, "Delivery").
from __future__ import annotations

from twisted.internet import defer

from . import store

INTERVAL = 0.005  # seconds between the starts of two writes of marks


class ReadMarks:
    """The read marks waiting for the database, written a group per transaction."""

    def __init__(self, db, clock, interval: float = INTERVAL) -> None:
        self.db = db
        self.clock = clock
        self.interval = interval
        self._queued: dict[tuple[int, str], int] = {}  # (client id, type) -> furthest item id
        self._writing: dict[tuple[int, str], int] = {}  # the group being written now
        self._busy = False  # a write is running or scheduled
        self._last_start = float("-inf")
        self._idle_waiters: list[defer.Deferred] = []

    def mark(self, client_id: int, type_name: str, item_id: int) -> None:
        """Persist that a client has been sent every item of a type up to `item_id`."""
        key = (client_id, type_name)
        if item_id > self._queued.get(key, 0):
            self._queued[key] = item_id
        if not self._busy:
            self._busy = True
            self._write_soon()

    def cursors_of(self, client_id: int) -> dict[str, int]:
        """The marks of a client not yet committed (a `hello` merges them with the stored ones)."""
        found: dict[str, int] = {}
        for group in (self._writing, self._queued):
            for (owner, type_name), item_id in group.items():
                if owner == client_id and item_id > found.get(type_name, 0):
                    found[type_name] = item_id
        return found

    def flushed(self) -> defer.Deferred:
        """Fires once every mark made so far is written (or failed): for a graceful stop."""
        if not self._busy:
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def _write_soon(self) -> None:
        wait = self._last_start + self.interval - self.clock.seconds()
        if wait > 0:
            self.clock.callLater(wait, self._write)
        else:
            self._write()

    def _write(self) -> None:
        self._last_start = self.clock.seconds()
        self._writing, self._queued = self._queued, {}
        marks = [(client_id, type_name, item_id) for (client_id, type_name), item_id in self._writing.items()]
        d = self.db.run(store.mark_read, marks)
        # A failure was logged by the database (once per outage); those clients may be
        # sent the items again, never skip one.
        d.addErrback(lambda failure: None)
        d.addCallback(self._written)

    def _written(self, _: object) -> None:
        self._writing = {}
        if self._queued:
            self._write_soon()
            return
        self._busy = False
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)
