"""notifd-weather end to end: validated by notifctl, announced and served by a real notifd."""
from pathlib import Path

import pytest


@pytest.fixture
def notifd_plugins():
    return [Path(__file__).parent]  # this package, through its entry point


def test_a_report_is_validated_announced_and_served(notifd_client, notifctl):
    notifd_client.notif("weather")
    refused = notifctl("add", "weather", "tornado", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("notifctl: invalid weather: unknown condition")
    notifctl("add", "classified", "not subscribed to this one")
    notifctl("add", "weather", "Rain, 54F")
    notifd_client.expect("notif: weather")
    notifd_client.stop_notif()
    assert notifd_client.ask("weather?") == "rain, 12°C"
    assert notifd_client.ask("weather?") == ""  # read; nothing newer
