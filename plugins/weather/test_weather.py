"""The weather item type: its validation, its discovery both ways (a plugins directory, an
installed package's entry point), and the whole path through a real notifd."""
from __future__ import annotations

from pathlib import Path

import notifd_weather
import pytest

from notifd import InvalidItem, Pick
from notifd.plugins import get_plugin_manager, item_types
from notifd.testing import declare_entry_points

HERE = Path(__file__).parent


@pytest.mark.parametrize(
    "text, stored",
    [
        ("sunny", "sunny"),
        ("  Partly   Cloudy ", "partly cloudy"),
        ("rain 12°C", "rain, 12°C"),
        ("Light rain, 54 F", "light rain, 12°C"),
        ("heavy rain,-3c", "heavy rain, -3°C"),
        ("snow -0.4 C", "snow, 0°C"),
        ("fog 21.6C", "fog, 22°C"),
    ],
)
def test_reports_are_normalised(text, stored):
    assert notifd_weather.validate(text) == stored


@pytest.mark.parametrize(
    "text, reason",
    [
        ("tornado", "unknown condition 'tornado'; known: clear, cloudy, drizzle, fog, hail, heavy rain, "),
        ("sunny 200C", "200°C is not a temperature on Earth"),
        ("rain -140F", "-140°F is not a temperature on Earth"),
        ("rain 12K", 'expected a condition and an optional temperature, like "rain, 12°C"'),
        ("12°C", 'expected a condition and an optional temperature, like "rain, 12°C"'),
    ],
)
def test_bad_reports_are_refused_with_a_reason(text, reason):
    with pytest.raises(InvalidItem) as caught:
        notifd_weather.validate(text)
    assert str(caught.value).startswith(reason)


def test_the_package_entry_point_loads_the_plugin(tmp_path, monkeypatch):
    # The entry point `pip install plugins/weather` declares, from our pyproject.toml.
    for path in declare_entry_points(HERE, tmp_path):
        monkeypatch.syspath_prepend(str(path))
    pm = get_plugin_manager()
    weather = item_types(pm)["weather"]
    assert weather.pick is Pick.NEWEST and weather.validate is notifd_weather.validate
    assert pm.origins["weather"] == "entry point notifd_weather in notifd-weather 0.1.0"


@pytest.mark.integration
@pytest.mark.parametrize("notifd_plugins", [[HERE / "notifd_weather.py"]])
def test_a_dropped_in_plugin_file_is_loaded_too(notifd_harness, notifd_client, notifctl):
    # test_weather_served.py loads the package; here the file alone, from a plugins directory.
    notifd_client.notif("weather")
    notifctl("add", "weather", "Rain, 54F")
    notifd_client.expect("notif: weather")
    path = notifd_harness.plugins_dir / "notifd_weather.py"  # named after the file
    assert f"notifd_weather\t{path}\ttype weather\n" in notifctl("plugins").stdout
