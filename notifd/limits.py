# Limits that protect the daemon from one source address: failed `hello`s per address
# (guessing tokens). Pure bookkeeping with an injected clock, used by wire.py.
from __future__ import annotations


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

