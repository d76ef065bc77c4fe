# Limits that protect the daemon from one source address: failed `hello`s per address
# (guessing tokens). Pure bookkeeping with an injected clock, used by wire.py.
from __future__ import annotations


class FailureLimiter:
    """At most `allowed` failures per address in any `window` seconds; then refuse until it passes.

    Memory stays bounded: addresses whose window has passed are forgotten whenever more
    than `max_addresses` are remembered.
    """

    def __init__(self, clock, allowed: int, window: float, max_addresses: int = 10_000) -> None:
        self.clock = clock
        self.allowed = allowed
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, window start)

    def blocked(self, address: str) -> bool:
        count, start = self._failures.get(address, (0, 0.0))
        if self.clock.seconds() - start >= self.window:
            return False
        return count >= self.allowed

    def failed(self, address: str) -> None:
        now = self.clock.seconds()
        count, start = self._failures.get(address, (0, now))
        if now - start >= self.window:
            count, start = 0, now
        self._failures[address] = (count + 1, start)
        if len(self._failures) > self.max_addresses:
            self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        self._failures = {a: (c, s) for a, (c, s) in self._failures.items() if now - s < self.window}
