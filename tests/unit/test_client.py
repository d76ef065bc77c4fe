"""The client library against the real server protocol, connected in memory (twisted.test.iosim)."""
from __future__ import annotations

import pytest
from twisted.test.iosim import connectedServerAndClient

from notifd import store
from notifd.client import NotifClient, NotifdError
from notifd.watch import follow
from tests import transcript
from tests.unit.test_wire import Rig


class RecordingClient(NotifClient):
    """Remembers every line from the server, to check what the library sent back."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def lineReceived(self, raw):
        self.lines.append(raw.rstrip(b"\r").decode())
        super().lineReceived(raw)


@pytest.fixture
def rig(database, item_types):
    return Rig(database, item_types)


@pytest.fixture
def pair(rig):
    client, server, pump = connectedServerAndClient(lambda: rig.factory.buildProtocol(None), RecordingClient)
    return client, server, pump


def result(d, pump):
    pump.flush()
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred did not fire"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def test_the_tutorial_session_through_the_library(rig, pair):
    client, server, pump = pair
    for type_name, text in transcript.POSTS_BEFORE:
        rig.post(type_name, text)
    assert result(client.random(), pump) == 456902234
    assert result(client.classified(), pump) == "Nice appart in the 11e."
    heard = []
    assert result(client.notif(heard.append), pump) is None
    rig.post("classified", "Flat share in the 20e.")
    pump.flush()
    rig.post("random", "89765234756")
    pump.flush()
    assert heard == ["classified", "random"]  # the library sent the OK in between
    result(client.stop_notif(), pump)
    assert result(client.random(), pump) == 89765234756
    result(client.notif(heard.append), pump)
    assert heard == ["classified", "random", "classified"]
    assert not [line for line in client.lines if line.startswith("ERR")]


def test_requests_made_together_are_queued_and_answered_in_order(rig, pair):
    client, server, pump = pair
    rig.post("classified", "a")
    rig.post("classified", "b")
    first, second, third = client.classified(), client.classified(), client.classified()
    assert [result(d, pump) for d in (first, second, third)] == ["a", "b", ""]


def test_err_fails_the_request_and_the_next_one_still_works(pair):
    client, server, pump = pair
    with pytest.raises(NotifdError, match="^unknown type$"):
        result(client.query("nosuchtype"), pump)
    assert isinstance(result(client.random(), pump), int)


def test_hello(rig, pair):
    client, server, pump = pair
    token = rig.database.call(store.add_client, "kiosk")
    with pytest.raises(NotifdError, match="wrong token"):
        result(client.hello("kiosk", "nope"), pump)
    assert result(client.hello("kiosk", token), pump) is None


def test_stop_notif_from_the_callback_sends_no_ok(rig, pair):
    client, server, pump = pair
    stops = []
    result(client.notif(lambda type_name: stops.append(client.stop_notif())), pump)
    rig.post("classified", "ad")
    pump.flush()
    assert len(stops) == 1 and result(stops[0], pump) is None
    assert client.lines == ["will send notifs", "notif: classified", "OK"]


def test_subscription_filter(rig, pair):
    client, server, pump = pair
    heard = []
    result(client.notif(heard.append, types=["random"]), pump)
    rig.post("classified", "ad")
    rig.post("random", "1")
    pump.flush()
    assert heard == ["random"]


def test_pending_requests_fail_when_the_connection_is_lost(pair):
    client, server, pump = pair
    d = client.random()
    client.transport.loseConnection()
    pump.flush()
    with pytest.raises(Exception):
        result(d, pump)


def test_the_watch_loop_prints_each_new_item_once(rig, pair):
    client, server, pump = pair
    rig.post("classified", "already there")
    printed = []
    follow(client, (), printed.append)
    pump.flush()
    assert printed == ["classified: already there"]
    rig.post("classified", "new ad")
    pump.flush()
    rig.post("random", "42")
    pump.flush()
    rig.post("classified", "x")
    rig.post("classified", "y")
    pump.flush()
    assert printed == ["classified: already there", "classified: new ad", "random: 42", "classified: x", "classified: y"]
    assert not [line for line in client.lines if line.startswith("ERR")]
