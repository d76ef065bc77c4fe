"""Per-address limits."""
from __future__ import annotations

from twisted.internet import task

from notifd.limits import FailureLimiter


def test_failures_per_address_in_a_window():
    clock = task.Clock()
    limiter = FailureLimiter(clock, allowed=3, window=60)
    for _ in range(3):
        assert not limiter.blocked("10.0.0.1")
        limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1")
    assert not limiter.blocked("10.0.0.2")  # another address is not punished
    clock.advance(59)
    assert limiter.blocked("10.0.0.1")
    clock.advance(1)
    assert not limiter.blocked("10.0.0.1")  # the window passed
    limiter.failed("10.0.0.1")
    assert not limiter.blocked("10.0.0.1")  # a new window, one failure in it


def test_memory_stays_bounded():
    clock = task.Clock()
    limiter = FailureLimiter(clock, allowed=1, window=10, max_addresses=100)
    for i in range(100):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    clock.advance(10)
    for i in range(1000):
        limiter.failed(f"10.1.{i // 256}.{i % 256}")
        clock.advance(0.1)  # a slow scan: older entries expire as it goes
    assert len(limiter._failures) <= 101
