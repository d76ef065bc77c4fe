"""The parcels plugin end to end, with notifd.testing only (the kit's goal: within 40 lines)."""
import json
from pathlib import Path

import pytest

from notifd.testing import eventually


@pytest.fixture
def notifd_plugins():
    return [Path(__file__).parent]


@pytest.fixture
def notifd_config(http_receiver):
    return {"plugins": {"parcels": {"url": http_receiver.url, "log_file": "parcels.log"}},
            "notifiers": {"parcels-hook": {"first_delay": 0.2}}}


def test_parcels(notifd_daemon, notifd_client, notifctl, http_receiver, tmp_path):
    notifd_client.notif("parcel")
    refused = notifctl("add", "parcel", "1z9 lost", check=False)
    assert refused.stderr.startswith("notifctl: invalid parcel: expected a tracking number then one of: ")
    http_receiver.statuses.append(503)  # the first POST fails: retried from the outbox
    item_id = int(notifctl("add", "parcel", " 1z999aa10123  Delivered").stdout)
    notifd_client.expect("notif: parcel")
    notifd_client.stop_notif()
    assert notifd_client.ask("parcel?") == "parcel 1Z999AA10123: delivered"
    assert [http_receiver.next().json for _ in range(2)] == [{"id": item_id, "tracking": "1Z999AA10123"}] * 2
    log = tmp_path / "parcels.log"  # log_file, relative to the configuration file
    assert eventually(lambda: log.exists() and log.read_text()) == "[x] 1Z999AA10123 delivered\n"
    notifctl("add", "parcel", "1z999aa10123 returned")  # the log notifier raises on it
    notifd_daemon.logged("plugin parcels failed in notifier parcels-log: KeyError: 'returned'")
    assert notifd_client.ask("parcel?") == "parcel 1Z999AA10123: returned"
    eventually(lambda: json.loads(notifctl("outbox", "--json").stdout) == [])
