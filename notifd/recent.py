# The newest items of one type, in memory: how the hub answers `<type>?` without a
# database round trip. No I/O and no clock: the hub feeds it the items it reads
# from the store, in id order, and the time of each question.
#
# Rule: an answer from memory is the one `store.next_unread` gives for the same cursor,
# window and time, or there is none and the caller asks the database. Memory holds the
# newest `cap` items of a type and knows below which id it stops being complete
# (`complete_after`), so it is sure exactly when every item that could be the answer is
# here: the cursor is at or above `complete_after`, or the count window ends inside memory.
# Items past the age window are forgotten as questions find them: time only moves on, so
# they can never be an answer again, and forgetting them keeps memory complete. Only a
# window that changes (SIGHUP) can bring them back: `window_changed()` then gives up that
# part of memory's completeness.
from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import datetime

from .items import Item, Pick, Window

IN_MEMORY_MAX = 10_000  # items of one type kept in memory, whatever its window (docs/architecture.md)


def cap_for(window: Window) -> int:
    """How many items of a type memory keeps: its count window, at most IN_MEMORY_MAX."""
    return IN_MEMORY_MAX if window.max_count is None else min(window.max_count, IN_MEMORY_MAX)


class RecentItems:
    """The newest items of one type, oldest first.

    Every item of the type above `complete_after` is here, or was forgotten as expired.

    Args:
        cap: the most items kept; older ones are forgotten as newer ones come.
        newest: the type's newest items from the store, oldest first, at most `cap`.
        complete: whether `newest` holds every item of the type the store has.
    """

    __slots__ = ("cap", "complete_after", "_items", "_ids", "_head", "_forgotten")

    def __init__(self, cap: int, newest: list[Item] = (), complete: bool = True) -> None:
        self.cap = cap
        self._items = list(newest)
        self._ids = [item.id for item in self._items]  # beside the items: bisect in C, no key calls
        self._head = 0  # the items before it are forgotten (dropped in bulk, not one by one)
        self.complete_after = 0 if complete or not self._items else self._items[0].id - 1
        self._forgotten = self.complete_after  # the id of the newest item forgotten
        self.resize(cap)

    def __len__(self) -> int:
        return len(self._items) - self._head

    def newest(self) -> Item | None:
        return self._items[-1] if len(self._items) > self._head else None

    def newest_items(self, count: int) -> list[Item]:
        """The newest `count` items held, oldest first (what the live page shows)."""
        return self._items[max(self._head, len(self._items) - count):]

    def after(self, item_id: int) -> list[Item] | None:
        """Every item held above `item_id`, oldest first; None when memory may lack some of them."""
        if item_id < self.complete_after:
            return None
        return self._items[max(self._head, bisect_right(self._ids, item_id, lo=self._head)):]

    def add(self, item: Item) -> None:
        """A new item of this type (ids only grow)."""
        self._items.append(item)
        self._ids.append(item.id)
        if len(self) > self.cap:
            self._forget(1, expired=False)

    def remove(self, item_id: int) -> None:
        """Forget an item deleted from the store (`notifctl rm`); nothing if it is not here."""
        index = bisect_left(self._ids, item_id, lo=self._head)
        if index < len(self._ids) and self._ids[index] == item_id:
            del self._items[index]
            del self._ids[index]

    def resize(self, cap: int) -> None:
        """Keep at most `cap` items from now on."""
        self.cap = cap
        if len(self) > cap:
            self._forget(len(self) - cap, expired=False)

    def window_changed(self) -> None:
        """The type's window changed: items forgotten as expired may be recent again."""
        self.complete_after = self._forgotten

    def _forget(self, count: int, expired: bool) -> None:
        self._head += count
        self._forgotten = self._items[self._head - 1].id
        if not expired:
            self.complete_after = self._forgotten
        if self._head > len(self._items) // 2:
            del self._items[: self._head]
            del self._ids[: self._head]
            self._head = 0

    def unread(self, after: int, pick: Pick, window: Window, now: datetime) -> tuple[bool, Item | None]:
        """The recent item above cursor `after` that a query returns, if memory is sure of it.

        Returns (True, item) with item None when nothing is unread, or (False, None) when
        the answer may be an item memory does not hold.
        """
        items = self._items
        cutoff = None if window.max_age is None else now - window.max_age
        if cutoff is not None:
            # Expired items are never an answer again: forget them, oldest first.
            expired = 0
            while self._head + expired < len(items) and items[self._head + expired].created_at < cutoff:
                expired += 1
            if expired:
                self._forget(expired, expired=True)
                items = self._items
        head = self._head
        if window.max_count is not None and len(items) - head >= window.max_count:
            floor, sure = len(items) - window.max_count, True  # older items are not recent
        else:
            floor, sure = head, after >= self.complete_after
        start = max(floor, bisect_right(self._ids, after, lo=head))
        if pick is Pick.OLDEST:
            if not sure:
                return False, None
            for index in range(start, len(items)):
                if cutoff is None or items[index].created_at >= cutoff:
                    return True, items[index]
            return True, None
        for index in range(len(items) - 1, start - 1, -1):
            if cutoff is None or items[index].created_at >= cutoff:
                return True, items[index]
        return sure, None
