"""A `weather` item type for notifd: a condition, then an optional temperature.

`notifctl add weather "Light rain, 54 F"` stores "light rain, 12°C"; `weather?` answers
the newest report; a report is recent for 6 hours.
"""
import re
from datetime import timedelta

from notifd import InvalidItem, ItemType, Pick, Window, hookimpl

CONDITIONS = {
    "sunny", "clear", "cloudy", "partly cloudy", "fog", "drizzle",
    "rain", "light rain", "heavy rain", "snow", "sleet", "hail", "thunderstorm",
}
REPORT = re.compile(r"(?P<condition>[a-z ]+?)(?:,? *(?P<degrees>[+-]?\d+(?:\.\d+)?) *°? *(?P<unit>[cf]))?")


def validate(text: str) -> str:
    report = REPORT.fullmatch(" ".join(text.lower().split()))
    if report is None:
        raise InvalidItem('expected a condition and an optional temperature, like "rain, 12°C"')
    condition = report["condition"]
    if condition not in CONDITIONS:
        raise InvalidItem(f"unknown condition {condition!r}; known: {', '.join(sorted(CONDITIONS))}")
    if report["degrees"] is None:
        return condition
    celsius = float(report["degrees"])
    if report["unit"] == "f":
        celsius = (celsius - 32) * 5 / 9
    if not -90 <= celsius <= 60:
        raise InvalidItem(f"{report['degrees']}°{report['unit'].upper()} is not a temperature on Earth")
    return f"{condition}, {round(celsius)}°C"


@hookimpl
def register_item_types(register):
    register(
        ItemType(
            name="weather",
            validate=validate,
            pick=Pick.NEWEST,  # only the latest report matters
            window=Window(max_age=timedelta(hours=6), max_count=10),
        )
    )
