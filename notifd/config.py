# The configuration: one TOML file, read with the standard library, checked key by key.
#
# Precedence is command-line flag > environment > file > default. click gives it for free
# for the settings that are also options: `file_defaults()` turns the file into a click
# `default_map`, and click consults flags, then `envvar=`, then `default_map`, then the
# option's default. Settings that are only in the file are read from it here.
#
# Rule: every error names the key (and the file) it is about.
from __future__ import annotations

import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

from .items import ItemType, Notifier, Window

DEFAULT_LISTEN = ("tcp:8789:interface=127.0.0.1",)
DEFAULT_MAX_LINE = 4096


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key."""


_DURATION = re.compile(r"(\d+)\s*([smhdw]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(key: str, value: Any) -> timedelta | None:
    """Seconds as a number, or a string like "90s", "15m", "12h", "7d", "2w"; 0 means no limit."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration such as 3600 or \"7d\", got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ConfigError(f"{key}: expected a duration such as 3600 or \"7d\", got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{key}: must not be negative")
    return None if seconds == 0 else timedelta(seconds=seconds)


def _count(key: str, value: Any) -> int | None:
    """A positive count; 0 means no limit."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: expected a whole number >= 0, got {value!r}")
    return value or None


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}: expected a whole number > 0, got {value!r}")
    return value


def _positive_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key}: expected a number > 0, got {value!r}")
    return float(value)


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _strings(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a string or a list of strings, got {value!r}")
    return [_string(f"{key}[{i}]", v) for i, v in enumerate(value)]


def _seconds(key: str, value: Any) -> float:
    duration = parse_duration(key, value)
    if duration is None:
        raise ConfigError(f"{key}: must be more than 0")
    return duration.total_seconds()


# [notifiers.<name>]: the timeout and retry policy of any notifier, over the plugin's own.
_NOTIFIER_KEYS = {"timeout": _seconds, "max_attempts": _positive_int, "first_delay": _seconds, "max_delay": _seconds}
_WINDOW_KEYS = {"max_age": parse_duration, "max_count": _count}
_TOP_KEYS = {
    "db": _string,
    "listen": _strings,
    "max_line_length": _positive_int,
    "poll_interval": _positive_number,
    "node": _string,
    "plugins_dirs": _strings,
}


@dataclass(frozen=True)
class Config:
    """Every setting of notifd and notifctl, with its default."""

    db: str | None = None  # a SQLite path or an SQLAlchemy URL; None: the default file
    listen: tuple[str, ...] = DEFAULT_LISTEN
    max_line_length: int = DEFAULT_MAX_LINE
    poll_interval: float = 1.0  # seconds between safety checks for new items
    node: str = field(default_factory=socket.gethostname)
    recent: dict[str, Any] = field(default_factory=dict)  # [recent]: window fields for every type
    types: dict[str, dict[str, Any]] = field(default_factory=dict)  # [types.<name>]: per type
    plugins_dirs: tuple[str, ...] = ()  # directories whose *.py files are plugins
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)  # [plugins.<name>]: given to that plugin
    notifiers: dict[str, dict[str, Any]] = field(default_factory=dict)  # [notifiers.<name>]: timeout, retry

    def window(self, item_type: ItemType) -> Window:
        """The recent window of a type: [types.<name>] over [recent] over the plugin's default."""
        own = self.types.get(item_type.name, {})
        default = item_type.window
        return Window(
            max_age=own.get("max_age", self.recent.get("max_age", default.max_age)),
            max_count=own.get("max_count", self.recent.get("max_count", default.max_count)),
        )

    def check_types(self, known: dict[str, ItemType]) -> None:
        """Refuse settings for a type no plugin declares (a typo would silently do nothing)."""
        for name in self.types:
            if name not in known:
                raise ConfigError(f"types.{name}: no plugin declares an item type {name!r}")

    def notifier(self, notifier: Notifier) -> Notifier:
        """A notifier with its [notifiers.<name>] settings applied."""
        own = self.notifiers.get(notifier.name)
        if not own:
            return notifier
        retry_fields = {k: v for k, v in own.items() if k != "timeout"}
        try:
            return replace(
                notifier, timeout=own.get("timeout", notifier.timeout), retry=replace(notifier.retry, **retry_fields)
            )
        except ValueError as e:
            raise ConfigError(f"notifiers.{notifier.name}: {e}") from None

    def check_notifiers(self, known: Iterable[str]) -> None:
        """Refuse settings for a notifier no plugin declares."""
        known = set(known)
        for name in self.notifiers:
            if name not in known:
                raise ConfigError(f"notifiers.{name}: no plugin declares a notifier {name!r}")

    def check_plugins(self, loaded: Iterable[str]) -> None:
        """Refuse a [plugins.<name>] table for a plugin that is not loaded (a typo, or a missing plugin)."""
        loaded = set(loaded)
        for name in self.plugins:
            if name not in loaded:
                raise ConfigError(f"plugins.{name}: no plugin named {name!r} is loaded")


def read_file(path: str | Path) -> dict[str, Any]:
    """Read and check a config file; returns the settings it holds, parsed."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    try:
        settings = _check(raw)
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    if "plugins_dirs" in settings:  # relative to the file, not to wherever notifd starts
        settings["plugins_dirs"] = [str(Path(path).parent / Path(d).expanduser()) for d in settings["plugins_dirs"]]
    return settings


def _check(raw: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _TOP_KEYS:
            settings[key] = _TOP_KEYS[key](key, value)
        elif key == "recent":
            settings["recent"] = _window_table("recent", value)
        elif key == "types":
            if not isinstance(value, dict):
                raise ConfigError("types: expected a table of [types.<name>] tables")
            settings["types"] = {name: _window_table(f"types.{name}", table) for name, table in value.items()}
        elif key == "plugins":
            settings["plugins"] = _plugin_tables(value)
        elif key == "notifiers":
            settings["notifiers"] = _notifier_tables(value)
        else:
            raise ConfigError(f"unknown key {key!r}")
    return settings


def _window_table(key: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: expected a table")
    checked = {}
    for name, value in table.items():
        if name not in _WINDOW_KEYS:
            raise ConfigError(f"unknown key '{key}.{name}'")
        checked[name] = _WINDOW_KEYS[name](f"{key}.{name}", value)
    return checked


def _plugin_tables(value: Any) -> dict[str, dict[str, Any]]:
    # Each plugin checks its own table (register_* hooks get it as `settings`).
    if not isinstance(value, dict) or not all(isinstance(table, dict) for table in value.values()):
        raise ConfigError("plugins: expected a table of [plugins.<name>] tables")
    return value


def _notifier_tables(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise ConfigError("notifiers: expected a table of [notifiers.<name>] tables")
    tables = {}
    for name, table in value.items():
        if not isinstance(table, dict):
            raise ConfigError(f"notifiers.{name}: expected a table")
        for key in table:
            if key not in _NOTIFIER_KEYS:
                raise ConfigError(f"unknown key 'notifiers.{name}.{key}'")
        tables[name] = {key: _NOTIFIER_KEYS[key](f"notifiers.{name}.{key}", v) for key, v in table.items()}
    return tables


def file_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """The click `default_map` for the settings that are also command-line options."""
    defaults = {}
    if "db" in settings:
        defaults["db"] = settings["db"]
    if "listen" in settings:
        defaults["listen"] = settings["listen"]
    if "plugins_dirs" in settings:
        defaults["plugins_dir"] = settings["plugins_dirs"]
    return defaults


def build(settings: dict[str, Any], **options: Any) -> Config:
    """A Config from the file's settings and the command line's final values (None: not given)."""
    values = dict(settings)
    for name, value in options.items():
        if value is not None and value != ():
            values[name] = value
    if "listen" in values:
        values["listen"] = tuple(values["listen"])
    if "plugins_dirs" in values:
        values["plugins_dirs"] = tuple(values["plugins_dirs"])
    return Config(**values)
