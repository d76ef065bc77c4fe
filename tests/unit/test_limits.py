"""Per-address limits: failed hellos, and the log of refused connections."""
from __future__ import annotations

from twisted.internet import task

from notifd.limits import FailureLimiter, RefusalLog


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


def test_refusals_are_reported_at_most_once_a_minute_per_key_with_their_count():
    clock = task.Clock()
    log = RefusalLog(clock, every=60)
    assert log.refused("a") == 1  # the first is reported at once
    assert [log.refused("a") for _ in range(10)] == [0] * 10
    assert log.refused("b") == 1  # another key has its own minute
    clock.advance(30)
    assert log.due() == []
    clock.advance(30)
    assert log.refused("a") == 11  # the ten held back, and this one
    clock.advance(60)
    assert log.due() == []  # nothing held back: "a" and "b" are forgotten
    assert log._keys == {}


def test_refusals_of_a_key_that_went_quiet_are_reported_by_due():
    clock = task.Clock()
    log = RefusalLog(clock, every=60)
    log.refused("a")
    for _ in range(5):
        log.refused("a")
    clock.advance(61)
    assert log.due() == [("a", 5)]
    assert log.due() == []
    clock.advance(60)
    log.due()
    assert log._keys == {}
