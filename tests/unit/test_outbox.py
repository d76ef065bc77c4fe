"""The outbox of durable notifiers: at-least-once delivery, back-off, dead letters, restarts.

A real SQLite database run inline and a task.Clock: no reactor, thread or sleep.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from twisted.internet import defer
from sqlalchemy.exc import OperationalError
from twisted.logger import LogLevel, formatEvent

from notifd import Notifier, Retry, store
from notifd.outbox import Outbox
from notifd.plugins import errors
from tests.harness import HeldDatabase, clock_at_now
from tests.posts import add_item

RETRY = Retry(max_attempts=3, first_delay=10.0, max_delay=15.0)

@pytest.fixture
def engine(engine_on_each_database):
    """Each test here on the test database runs twice, as test_x[sqlite] and test_x[postgresql]."""
    return engine_on_each_database


class Endpoint:
    """A durable notifier whose answers the test decides: ok, raise, or hold the Deferred."""

    def __init__(self, mode="ok"):
        self.mode = mode
        self.calls = []
        self.held = []

    def notify(self, item):
        self.calls.append(item.text)
        if self.mode == "raise":
            raise ConnectionRefusedError("nobody listens")
        if self.mode == "hold":
            d = defer.Deferred()
            self.held.append(d)
            return d
        return None


@pytest.fixture
def clock():
    return clock_at_now()


def make_outbox(database, clock, endpoint, name="hook", node="node-a", timeout=5.0, concurrency=8):
    notifier = Notifier(name, endpoint.notify, durable=True, timeout=timeout, retry=RETRY)
    outbox = Outbox(database, clock, [("test-plugin", notifier)], node, poll_interval=1.0, concurrency=concurrency)
    outbox.start()
    return outbox


def post(database, text):
    return database.call(add_item, "classified", text)[0]


def rows(database):
    return [(d.item.text, d.state, d.attempts) for d in database.call(store.list_outbox)]


def test_delivers_new_items_and_forgets_them(database, clock):
    endpoint = Endpoint()
    post(database, "history")  # before the notifier first ran: not its business
    outbox = make_outbox(database, clock, endpoint)
    post(database, "one")
    post(database, "two")
    outbox.wake()
    assert endpoint.calls == ["one", "two"]
    assert rows(database) == []  # delivered rows are deleted


def test_the_safety_poll_finds_items_without_a_wakeup(database, clock):
    endpoint = Endpoint()
    make_outbox(database, clock, endpoint)
    post(database, "quiet")
    assert endpoint.calls == []
    clock.advance(1.0)
    assert endpoint.calls == ["quiet"]


def test_items_committed_while_the_daemon_is_down_are_delivered_at_start(database, clock):
    endpoint = Endpoint()
    make_outbox(database, clock, endpoint).stop()  # it ran once: it has a mark
    post(database, "while down")
    make_outbox(database, clock, endpoint)
    assert endpoint.calls == ["while down"]


def test_failures_back_off_then_die_and_retry_requeues(database, clock):
    endpoint = Endpoint("raise")
    outbox = make_outbox(database, clock, endpoint)
    before = errors["test-plugin"]
    post(database, "x")
    outbox.wake()
    assert rows(database) == [("x", "pending", 1)]
    clock.advance(9.0)  # first_delay is 10 s
    assert endpoint.calls == ["x"]
    clock.advance(1.0)
    assert endpoint.calls == ["x", "x"]
    clock.advance(15.0)  # 20 s, capped by max_delay
    assert endpoint.calls == ["x", "x", "x"]
    [dead] = database.call(store.list_outbox)
    assert (dead.state, dead.attempts, dead.next_attempt_at) == ("dead", 3, None)
    assert dead.last_error == "ConnectionRefusedError: nobody listens"
    assert errors["test-plugin"] == before + 3
    clock.advance(3600)
    assert len(endpoint.calls) == 3  # dead letters stay dead

    endpoint.mode = "ok"
    assert database.call(store.retry_delivery, dead.id, now=store.utcnow()) == ("requeued", None)
    outbox.wake()
    assert endpoint.calls[-1] == "x" and rows(database) == []
    assert database.call(store.retry_delivery, dead.id) == ("unknown", None)  # delivered: nothing left to retry


def test_a_notifier_that_never_answers_times_out_and_is_retried(database, clock):
    endpoint = Endpoint("hold")
    outbox = make_outbox(database, clock, endpoint, timeout=5.0)
    post(database, "slow")
    outbox.wake()
    assert len(endpoint.held) == 1
    clock.advance(5.0)
    [row] = database.call(store.list_outbox)
    assert row.last_error == "timed out after 5.0 s" and row.state == "pending"
    endpoint.mode = "ok"
    clock.advance(10.0)
    assert rows(database) == []


def test_concurrency_is_limited_per_notifier(database, clock):
    endpoint = Endpoint("hold")
    outbox = make_outbox(database, clock, endpoint, concurrency=2)
    for text in "abcde":
        post(database, text)
    outbox.wake()
    assert endpoint.calls == ["a", "b"]
    endpoint.mode = "ok"
    endpoint.held[0].callback(None)  # one finishes: the next round takes the rest it may
    assert endpoint.calls == ["a", "b", "c", "d", "e"]


def test_deliveries_start_by_due_time_then_id_and_a_retry_does_not_hold_later_items(database, clock):
    # The order docs/plugins.md promises a durable notifier: oldest first; a failed delivery
    # waits for its back-off while items posted after it go on.
    endpoint = Endpoint()
    failing = {"b"}

    def notify(item):
        endpoint.calls.append(item.text)
        if item.text in failing:
            failing.discard(item.text)
            raise ConnectionRefusedError("nobody listens")

    endpoint.notify = notify
    outbox = make_outbox(database, clock, endpoint)
    for text in "abc":
        post(database, text)
    outbox.wake()
    assert endpoint.calls == ["a", "b", "c"]
    clock.advance(RETRY.first_delay / 2)
    post(database, "d")  # due now, before b's retry
    outbox.wake()
    assert endpoint.calls == ["a", "b", "c", "d"]
    clock.advance(RETRY.first_delay / 2)
    assert endpoint.calls == ["a", "b", "c", "d", "b"]
    assert rows(database) == []


def test_a_restarted_node_resumes_its_interrupted_deliveries(database, clock):
    endpoint = Endpoint("hold")
    make_outbox(database, clock, endpoint, timeout=300.0)
    post(database, "in flight")
    clock.advance(1.0)
    assert endpoint.calls == ["in flight"]
    # The daemon dies here, the delivery unfinished; its lease would hold for minutes.
    again = Endpoint()
    make_outbox(database, clock, again, node="node-a")
    assert again.calls == ["in flight"]
    assert rows(database) == []


def one_in_flight(database, clock, text):
    """An outbox of node-a whose endpoint holds the delivery of one new item: (endpoint, outbox)."""
    endpoint = Endpoint("hold")
    outbox = make_outbox(database, clock, endpoint, timeout=300.0)
    post(database, text)
    clock.advance(1.0)
    assert endpoint.calls == [text]
    return endpoint, outbox


def test_a_stop_waits_for_deliveries_in_flight_and_records_them(database, clock):
    endpoint, outbox = one_in_flight(database, clock, "in flight")
    stopped = outbox.stop()
    assert not stopped.called
    endpoint.held[0].callback(None)  # delivered while the daemon stops
    assert stopped.called
    assert rows(database) == []  # recorded: no other node sends it again


def test_a_stop_hands_back_what_does_not_finish_so_another_node_takes_it_at_once(database, clock):
    from notifd.outbox import STOP_WAIT

    endpoint, outbox = one_in_flight(database, clock, "slow")
    stopped = outbox.stop()
    clock.advance(STOP_WAIT)
    assert stopped.called
    other = Endpoint()
    make_outbox(database, clock, other, node="node-b", timeout=300.0)
    assert other.calls == ["slow"]  # not after the stopped node's lease (300 s + 60 s)
    assert rows(database) == []
    endpoint.held[0].callback(None)  # the first attempt ends after all: nothing more to record
    assert rows(database) == []


def test_a_delivery_in_flight_is_not_retried_beside_itself(database, clock):
    endpoint, _ = one_in_flight(database, clock, "on its way")
    (delivery,) = database.call(store.list_outbox)
    now = datetime.fromtimestamp(clock.seconds(), timezone.utc).replace(tzinfo=None)
    assert database.call(store.retry_delivery, delivery.id, now=now) == ("in flight", "node-a")
    assert endpoint.calls == ["on its way"]  # once
    # Its lease over (the node died): it can be retried.
    assert database.call(store.retry_delivery, delivery.id, now=now + timedelta(seconds=400)) == ("requeued", None)


def test_another_node_waits_for_the_lease_of_a_node_that_died(database, clock):
    make_outbox(database, clock, Endpoint("hold")).stop()  # creates the mark
    post(database, "leased")
    now = datetime.fromtimestamp(clock.seconds(), timezone.utc).replace(tzinfo=None)
    database.call(store.enqueue_new_items, ["hook"], now=now)
    lease = {"hook": now + timedelta(seconds=65)}
    database.call(store.claim_deliveries, {"hook": 8}, node="dead-node", now=now, lease_until=lease)
    other = Endpoint()
    make_outbox(database, clock, other, node="node-b")
    assert other.calls == []
    clock.advance(70.0)
    assert other.calls == ["leased"]


def test_two_daemons_enqueue_each_item_once(database, clock):
    first, second = Endpoint("hold"), Endpoint("hold")
    a = make_outbox(database, clock, first, node="a")
    b = make_outbox(database, clock, second, node="b")
    post(database, "once")
    a.wake()
    b.wake()
    assert first.calls + second.calls == ["once"]


def test_removing_an_item_removes_its_deliveries(database, engine, clock):
    endpoint = Endpoint("raise")
    outbox = make_outbox(database, clock, endpoint)
    item_id = post(database, "gone soon")
    outbox.wake()
    with engine.begin() as conn:  # what retention will do with old items
        conn.execute(store.items.delete().where(store.items.c.id == item_id))
    assert rows(database) == []


def test_a_round_answered_after_stop_starts_no_delivery(database, clock):
    held = HeldDatabase(database)
    endpoint = Endpoint()
    outbox = make_outbox(held, clock, endpoint)
    held.release()  # the start
    post(database, "late")
    outbox.wake()
    outbox.stop()
    held.release()  # the round comes back after the stop
    assert endpoint.calls == []
    # The next start of this node delivers it.
    make_outbox(database, clock, endpoint)
    assert endpoint.calls == ["late"]


def test_the_outbox_gauges_follow_its_rounds(database, clock):
    from notifd.metrics import Metrics

    metrics = Metrics()
    notifier = Notifier("hook", Endpoint("raise").notify, durable=True, timeout=5.0, retry=RETRY)
    outbox = Outbox(database, clock, [("test-plugin", notifier)], "node-a", poll_interval=1.0, metrics=metrics)

    def gauges():
        sample = metrics.registry.get_sample_value
        return {state: sample("notifd_outbox_deliveries", {"notifier": "hook", "state": state})
                for state in ("pending", "dead")}

    outbox.start()  # its first round counts
    assert gauges() == {"pending": 0, "dead": 0}
    post(database, "x")
    post(database, "y")
    outbox.wake()  # both tried and failed: retried in 10 s
    assert gauges() == {"pending": 0, "dead": 0}  # counted every 10 s only
    clock.advance(10)
    assert gauges() == {"pending": 2, "dead": 0}
    for _ in range(16):  # to 26 s: the third attempts failed at 25 s, dead
        clock.advance(1)
    assert gauges() == {"pending": 0, "dead": 2}  # counted by the round after, not at 30 s
    database.call(store.retry_delivery, database.call(store.list_outbox)[0].id, now=store.utcnow())
    clock.advance(10)
    assert gauges() == {"pending": 1, "dead": 1}


@pytest.mark.parametrize(
    "attempts, delay",
    [
        (1, 10.0),
        (2, 20.0),
        (3, 40.0),  # doubling, not 10 s more each time
        (4, 80.0),
        (5, 100.0),  # 160 s, capped by max_delay
        (6, 100.0),
        (7, None),  # the max_attempts-th failure is dead
        (8, None),
    ],
)
def test_the_back_off_doubles_up_to_its_cap_then_the_delivery_is_dead(attempts, delay):
    assert Retry(max_attempts=7, first_delay=10.0, max_delay=100.0).delay(attempts) == delay


@pytest.mark.parametrize(
    "fields", [{"max_attempts": 0}, {"first_delay": 0.0}, {"first_delay": 10.0, "max_delay": 9.0}]
)
def test_a_back_off_needs_one_attempt_a_positive_delay_and_a_cap_above_it(fields):
    with pytest.raises(ValueError):
        Retry(**fields)
    assert Retry(max_attempts=1, first_delay=0.5, max_delay=0.5).delay(1) is None  # the smallest of each


def test_a_dead_delivery_is_logged_once_with_what_happened(database, clock, logged):
    outbox = make_outbox(database, clock, Endpoint("raise"))
    item_id = post(database, "x")
    outbox.wake()
    clock.advance(10.0)
    clock.advance(15.0)  # the third failure: dead
    [dead] = database.call(store.list_outbox)
    said = [formatEvent(event) for event in logged if event.get("log_level") == LogLevel.warn]
    assert said == [
        f"outbox: delivery {dead.id} of item {item_id} to hook is dead after 3 attempts: "
        "ConnectionRefusedError: nobody listens"
    ]
    assert outbox.in_flight["hook"] == 0  # every delivery finished


class FailingToRecord:
    """The database, except that recording a delivery fails with the given error."""

    def __init__(self, database, error):
        self.database, self.error = database, error

    def run(self, f, *args, **kwargs):
        if f is store.delivered:
            return defer.fail(self.error)
        return self.database.run(f, *args, **kwargs)


@pytest.mark.parametrize("error, said", [
    (RuntimeError("a bug"), ["outbox: cannot record a delivery"]),
    # An outage: the database logs it, once for all its callers.
    (OperationalError("UPDATE", {}, Exception("disk I/O error")), []),
])
def test_a_delivery_that_cannot_be_recorded_is_logged_unless_the_database_is_down(database, clock, logged,
                                                                                   error, said):
    outbox = Outbox(FailingToRecord(database, error), clock, [("test-plugin", Notifier(
        "hook", Endpoint().notify, durable=True, timeout=5.0, retry=RETRY))], "node-a", poll_interval=1.0)
    outbox.start()
    post(database, "x")
    outbox.wake()
    assert [formatEvent(event) for event in logged if event.get("log_namespace", "").startswith("notifd.outbox")
            and event.get("log_level") >= LogLevel.warn] == said
    assert outbox.in_flight["hook"] == 0
