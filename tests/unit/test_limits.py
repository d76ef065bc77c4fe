"""Per-address limits: failed hellos."""
from __future__ import annotations

from twisted.internet import task

from notifd.limits import FailureLimiter


def test_failures_per_address_in_a_window():
    clock = task.Clock()
    limiter = FailureLimiter(clock, allowed=3, window=60)
    for _ in range(3):
        assert limiter.attempt("10.0.0.1") is not None
    assert limiter.attempt("10.0.0.1") is None
    assert limiter.attempt("10.0.0.2") is not None  # another address is not punished
    clock.advance(59)
    assert limiter.attempt("10.0.0.1") is None
    clock.advance(1)
    assert limiter.attempt("10.0.0.1") is not None  # the window passed: a new one, one attempt in it
    assert limiter.attempt("10.0.0.1") is not None


def test_an_attempt_counts_as_a_failure_until_forgiven():
    clock = task.Clock()
    limiter = FailureLimiter(clock, allowed=2, window=60)
    first, second = limiter.attempt("10.0.0.1"), limiter.attempt("10.0.0.1")
    assert limiter.attempt("10.0.0.1") is None  # both still being checked
    limiter.forgive("10.0.0.1", first)  # it succeeded
    third = limiter.attempt("10.0.0.1")
    assert third is not None and limiter.attempt("10.0.0.1") is None
    clock.advance(60)
    fresh = limiter.attempt("10.0.0.1")
    limiter.forgive("10.0.0.1", second)  # from the window that passed: does not free the new one
    assert limiter.attempt("10.0.0.1") is not None and limiter.attempt("10.0.0.1") is None
    assert fresh is not None


def test_memory_stays_bounded():
    clock = task.Clock()
    limiter = FailureLimiter(clock, allowed=1, window=10, max_addresses=100)
    for i in range(100):
        limiter.attempt(f"10.0.{i // 256}.{i % 256}")
    clock.advance(10)
    for i in range(1000):
        limiter.attempt(f"10.1.{i // 256}.{i % 256}")
        clock.advance(0.1)  # a slow scan: older entries expire as it goes
    assert len(limiter._failures) <= 101

