"""Plugins in a real notifd: a bad plugin stops the start with one line; a plugin failing at
run time (validation, a notifier) leaves the daemon and its clients unaffected."""
from __future__ import annotations

import re
import subprocess
import textwrap

import pytest

from tests.integration.conftest import TIMEOUT, _script

pytestmark = pytest.mark.integration

FRAGILE = """
    from notifd import ItemType, Notifier, hookimpl


    def validate(text):
        if text == "crash":
            raise ZeroDivisionError("division by zero")
        return text


    def notify(item):
        raise RuntimeError(f"cannot notify item {item.id}")


    @hookimpl
    def register_item_types(register):
        register(ItemType("fragile", validate=validate))


    @hookimpl
    def register_notifiers(register):
        register(Notifier("fragile-notifier", notify))
"""


@pytest.fixture
def plugins_dir(tmp_path):
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "fragile.py").write_text(textwrap.dedent(FRAGILE))
    return directory


def test_a_failing_plugin_leaves_the_daemon_and_its_clients_unaffected(daemon, notifctl, plugins_dir):
    server = daemon("--plugins-dir", str(plugins_dir))
    client = server.connect()
    assert client.ask("notif") == "will send notifs"

    crashed = notifctl("--plugins-dir", str(plugins_dir), "add", "fragile", "crash", check=False)
    assert crashed.returncode == 1
    assert crashed.stderr == (
        "notifctl: the fragile plugin failed to validate the text: ZeroDivisionError: division by zero\n"
    )

    item_id = notifctl("--plugins-dir", str(plugins_dir), "add", "fragile", "fine").stdout.strip()
    assert client.read_line() == b"notif: fragile\r\n"  # the raising notifier did not stop the push
    server.wait_for_log(re.compile(
        rf" error notifd\.plugin\.fragile: plugin fragile failed in notifier fragile-notifier: "
        rf"RuntimeError: cannot notify item {item_id}"
    ))
    assert client.ask("stop_notif") == "OK"
    assert client.ask("fragile?") == "fine"


def test_a_plugin_that_cannot_load_stops_the_start_with_one_line(plugins_dir, db_path):
    (plugins_dir / "fragile.py").write_text("import weather_station_driver\n")
    result = subprocess.run(
        [*_script("notifd"), "--db", str(db_path), "--listen", "tcp:0", "--plugins-dir", str(plugins_dir)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert line.endswith(
        f"cannot start: plugin fragile ({plugins_dir / 'fragile.py'}): cannot import: "
        "ModuleNotFoundError: No module named 'weather_station_driver'"
    )
