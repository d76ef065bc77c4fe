"""The webhook plugin against a real notifd and a real HTTP server: delivery, back-off,
dead letters, `notifctl outbox retry`, and a daemon killed mid-delivery."""
from __future__ import annotations

import json
import queue
import re
import signal
import socket
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from notifd.testing import TIMEOUT, Harness, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def notifd_plugins():
    return [Path(__file__).parent]  # this package, through its entry point


@pytest.fixture
def notifd_config(http_receiver, request):
    """The plugin aimed at the test's HTTP server, with quick retries (a test may give its
    own retry settings by indirect parametrisation)."""
    retry = getattr(request, "param", {"first_delay": 0.3, "max_attempts": 3})
    return {
        "plugins": {"webhook": {"url": http_receiver.url, "headers": {"Authorization": "Bearer s3cret"}}},
        "notifiers": {"webhook": {"timeout": 5, **retry}},
    }


def test_each_new_item_is_posted_as_json(notifd_daemon, notifctl, http_receiver, notifd_outbox):
    item_id = int(notifctl("add", "classified", "Vélo à vendre").stdout)
    request = http_receiver.next()
    assert request.path == "/hook"
    assert request.json["id"] == item_id
    assert (request.json["type"], request.json["text"]) == ("classified", "Vélo à vendre")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", request.json["created_at"])
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == f"notifd-{item_id}"
    assert request.headers["Authorization"] == "Bearer s3cret"
    eventually(lambda: notifd_outbox() == [])  # delivered: nothing left


# Long delays, so nothing is retried behind the test's back: each retry is made due by hand.
@pytest.mark.parametrize("notifd_config", [{"first_delay": 60, "max_attempts": 4}], indirect=True)
def test_failures_back_off_doubling_then_die_and_retry_delivers(notifd_daemon, notifctl, http_receiver, notifd_outbox):
    http_receiver.status = 500
    http_receiver.hold.clear()  # each request waits for the test to note the time
    notifctl("add", "classified", "ad")
    for attempt, delay in ((1, 60), (2, 120), (3, 240)):
        http_receiver.next()
        answered = time.time()  # the 500 goes back after this
        http_receiver.hold.set()
        [row] = eventually(lambda: [r for r in notifd_outbox() if (r["state"], r["attempts"]) == ("pending", attempt)])
        seen = time.time()
        # The stored next attempt is the failure's time plus the back-off (listed to the second).
        next_at = datetime.fromisoformat(row["next_attempt_at"].rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()
        assert answered + delay - 1 < next_at <= seen + delay
        http_receiver.hold.clear()
        with sqlite3.connect(notifd_daemon.db_path) as conn:  # due now; the outbox polls
            conn.execute("UPDATE outbox SET next_attempt_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (row["id"],))
    http_receiver.next()
    http_receiver.hold.set()
    notifd_daemon.wait_for_log(re.compile(r"delivery \d+ of item \d+ to webhook is dead after 4 attempts: WebhookFailed: HTTP 500"))
    [dead] = notifd_outbox()
    assert (dead["state"], dead["attempts"], dead["last_error"]) == ("dead", 4, "WebhookFailed: HTTP 500 Internal Server Error")

    http_receiver.status = 200
    notifctl("outbox", "retry", str(dead["id"]))
    assert http_receiver.next().json["text"] == "ad"
    eventually(lambda: notifd_outbox() == [])


def test_deliveries_survive_a_kill_and_items_posted_while_down_are_sent(notifd_daemon, notifctl, http_receiver,
                                                                        notifd_outbox):
    http_receiver.hold.clear()  # the endpoint hangs: the daemon dies while delivering
    first = int(notifctl("add", "classified", "in flight").stdout)
    assert http_receiver.next().json["id"] == first
    assert notifd_daemon.kill(signal.SIGKILL) == -signal.SIGKILL
    second = int(notifctl("add", "classified", "posted while down").stdout)
    # Seen while the daemon is down: the interrupted delivery, and the item not queued yet.
    assert [(row["state"], row["item_id"]) for row in notifd_outbox()] == [("delivering", first), ("new", second)]
    assert notifctl("outbox").stdout.splitlines()[-1].startswith(f"-\tnew\twebhook\titem {second} (classified)\t")
    http_receiver.hold.set()

    notifd_daemon.start()
    # The interrupted delivery is resumed at once (not after its lease), the other one found.
    assert sorted(http_receiver.next().json["id"] for _ in range(2)) == [first, second]
    eventually(lambda: notifd_outbox() == [])


@pytest.mark.parametrize("notifd_config", [{"first_delay": 60, "max_attempts": 4, "timeout": 1}], indirect=True)
def test_a_receiver_that_never_answers_is_a_failure_at_the_timeout_not_a_second_post(
    notifd_daemon, notifctl, http_receiver, notifd_outbox
):
    # The notifier's timeout (1 s here) cancels the request: that is a failed attempt, retried
    # after its back-off, not a connection that closed early, to be sent again at once.
    http_receiver.hold.clear()
    item_id = int(notifctl("add", "classified", "to a hung receiver").stdout)
    assert http_receiver.next().json["id"] == item_id
    [row] = eventually(lambda: [r for r in notifd_outbox() if (r["state"], r["attempts"]) == ("pending", 1)])
    assert row["last_error"] == "timed out after 1.0 s"
    assert http_receiver.requests.qsize() == 0  # nothing was sent again behind the back-off


@pytest.mark.parametrize("notifd_config", [{"plugins": {"webhook": {"url": "ftp://127.0.0.1:21/hook"}}}])
def test_bad_settings_stop_the_start_naming_the_plugin_and_key(notifctl):
    result = notifctl("plugins", check=False)
    assert result.returncode == 1
    assert re.fullmatch(r"notifctl: plugin webhook: \[plugins\.webhook\] url: expected an http:// or https:// URL, "
                        r"got 'ftp://127\.0\.0\.1:\d+/hook'\n", result.stderr)


def test_notifctl_plugins_shows_the_durable_notifier(notifctl):
    listed = json.loads(notifctl("plugins", "--json").stdout)
    assert listed[-1]["name"] == "webhook"
    assert listed[-1]["notifiers"] == [{"name": "webhook", "durable": True}]


def test_items_committed_at_once_are_each_delivered(notifd_daemon, notifctl, http_receiver, notifd_outbox):
    # Delivery speed is measured by `python -m bench.webhook`; here, only that a batch
    # (more than the 8 in flight) all arrives and the outbox empties.
    posted = notifctl("add", "--batch", "-", "classified", input="".join(f"ad {n}\n" for n in range(20)))
    expected = {int(line) for line in posted.stdout.split()}
    received: set[int] = set()
    while received != expected:  # a failed attempt is retried: an id may come twice
        received.add(http_receiver.next().json["id"])
        assert received <= expected
    eventually(lambda: notifd_outbox() == [])

class ClosesTheKeptConnection:
    """An HTTP server that answers the first POST on each connection, keeping it alive, and
    closes the connection without an answer when a second POST comes on it: the race of a
    receiver closing an idle connection just as notifd sends on it, made certain."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.answered: queue.Queue[int] = queue.Queue()  # item ids, in the order answered
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            head = b"".join(iter(reader.readline, b"\r\n")).decode("latin-1").lower()
            length = int(re.search(r"content-length: *(\d+)", head).group(1))
            self.answered.put(json.loads(reader.read(length))["id"])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            reader.readline()  # the next request arrives: close instead of answering


def test_a_post_sent_as_the_receiver_closes_the_connection_is_sent_again_at_once(tmp_path):
    receiver = ClosesTheKeptConnection()
    config = {"plugins": {"webhook": {"url": receiver.url}}, "notifiers": {"webhook": {"first_delay": 60}}}
    harness = Harness(tmp_path, config, [Path(__file__).parent])
    try:
        daemon = harness.start()
        # Two items at once: two connections, both kept alive in the pool.
        first = [int(line) for line in harness.notifctl("add", "classified", "--batch", "-", input="ad 1\nad 2\n").stdout.split()]
        assert sorted(receiver.answered.get(timeout=TIMEOUT) for _ in first) == first
        third = int(harness.notifctl("add", "classified", "ad 3").stdout)
        # Sent on a kept connection, which closes: sent again at once, not 60 s later, and on
        # a new connection, not on the other kept one, which would close too.
        assert receiver.answered.get(timeout=TIMEOUT) == third
        eventually(lambda: harness.outbox() == [])
        assert not [line for line in daemon.drained_log() if "failed in notifier webhook" in line]
    finally:
        harness.close()
        receiver.listener.close()
