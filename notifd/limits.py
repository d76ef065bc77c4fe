# Limits that protect the daemon from one source address: failed `hello`s per address
# (guessing tokens), and the log of connections refused by a limit. Pure bookkeeping with
# an injected clock, used by wire.py.
from __future__ import annotations

from typing import Hashable


class FailureLimiter:
    """At most `allowed` failures per address in any `window` seconds; then refuse until it passes.

    An attempt counts as a failure from the moment it starts (`attempt`) until it is
    forgiven (`forgive`, once it succeeded): attempts checked in parallel, each waiting
    for its answer, cannot get past the limit.

    Memory stays bounded: addresses whose window has passed are forgotten whenever more
    than `max_addresses` are remembered.
    """

    def __init__(self, clock, allowed: int, window: float, max_addresses: int = 10_000) -> None:
        self.clock = clock
        self.allowed = allowed
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, window start)

    def attempt(self, address: str) -> float | None:
        """Start an attempt, counted as a failure until forgiven.

        Returns a ticket for `forgive`, or None when the address is over its limit: the
        attempt must then not be checked at all.
        """
        now = self.clock.seconds()
        count, start = self._failures.get(address, (0, now))
        if now - start >= self.window:
            count, start = 0, now
        if count >= self.allowed:
            return None
        self._failures[address] = (count + 1, start)
        if len(self._failures) > self.max_addresses:
            self._forget_old(now)
        return start

    def refuses(self, address: str) -> bool:
        """Whether `address` is over its limit now; counts nothing."""
        now = self.clock.seconds()
        count, start = self._failures.get(address, (0, now))
        return now - start < self.window and count >= self.allowed

    def failed(self, address: str) -> None:
        """Count a failure that was not announced by `attempt` (HTTP tokens, checked first)."""
        self.attempt(address)

    def forgive(self, address: str, ticket: float) -> None:
        """The attempt that got `ticket` was no failure (it succeeded, or could not be checked)."""
        count, start = self._failures.get(address, (0, None))
        if start != ticket:
            return  # counted in a window that has passed: nothing to undo
        if count > 1:
            self._failures[address] = (count - 1, start)
        else:
            del self._failures[address]

    def _forget_old(self, now: float) -> None:
        self._failures = {a: (c, s) for a, (c, s) in self._failures.items() if now - s < self.window}


class RefusalLog:
    """Which refused connections to log, so that a flood makes a few lines, not one per connection.

    Refusals are grouped by key (a limit and an address). The first refusal of a key is
    reported at once; later ones at most once every `every` seconds, with how many were
    refused since the last report. `due()`, called now and then, reports the refusals of
    a key that went quiet, and forgets the keys with nothing left to report, so memory
    holds only the keys refused in the last `every` seconds.
    """

    def __init__(self, clock, every: float = 60.0) -> None:
        self.clock = clock
        self.every = every
        self._keys: dict[Hashable, tuple[float, int]] = {}  # key -> (last report, refused since)

    def refused(self, key: Hashable) -> int:
        """Count a refusal; returns how many refusals to report now (0: none, stay quiet)."""
        now = self.clock.seconds()
        last, count = self._keys.get(key, (None, 0))
        if last is not None and now - last < self.every:
            self._keys[key] = (last, count + 1)
            return 0
        self._keys[key] = (now, 0)
        return count + 1

    def due(self) -> list[tuple[Hashable, int]]:
        """The keys whose unreported refusals are due for a report, with their counts."""
        now = self.clock.seconds()
        reports = []
        for key, (last, count) in list(self._keys.items()):
            if now - last < self.every:
                continue
            if count:
                reports.append((key, count))
                self._keys[key] = (now, 0)
            else:
                del self._keys[key]
        return reports
