# The configuration: one TOML file, read with the standard library, checked key by key.
#
# Precedence is command-line flag > environment > file > default. click gives it for free
# for the settings that are also options: `file_defaults()` turns the file into a click
# `default_map`, and click consults flags, then `envvar=`, then `default_map`, then the
# option's default. Settings that are only in the file are read from it here.
#
# Rule: every error names the key (and the file) it is about. `KEYS` below is the one list
# of what the file may hold; docs/operations.md and contrib/notifd.toml describe the same.
from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

from . import strictmodes
from .items import ItemType, Notifier, Window
from .posting import SQLITE_BUSY_TIMEOUT_MS

SYSTEM_CONFIG = Path("/etc/notifd/notifd.toml")  # read when no --config or NOTIFD_CONFIG is given
DEFAULT_LISTEN = ("tcp:8789:interface=127.0.0.1",)
DEFAULT_HTTP = ("tcp:8788:interface=127.0.0.1",)  # the HTTP API and the live page; () turns HTTP off
# Connections the kernel queues for a listening socket until notifd accepts them (it caps
# this at net.core.somaxconn). Twisted's default, 50, makes the clients of a reconnect
# storm after a restart wait for their SYN to be retried, a second or more.
LISTEN_BACKLOG = 1024
DEFAULT_MAX_LINE = 4096
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key."""


# --- value parsers: each takes the key (for the message) and the raw TOML value -------------

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


def _interval(key: str, value: Any) -> float:
    """A duration that must not be 0, in seconds."""
    duration = parse_duration(key, value)
    if duration is None:
        raise ConfigError(f"{key}: must be more than 0")
    return duration.total_seconds()


def _seconds_or_none(key: str, value: Any) -> float | None:
    """A duration in seconds; 0 means never."""
    duration = parse_duration(key, value)
    return None if duration is None else duration.total_seconds()


def _keepalive(key: str, value: Any) -> float | None:
    """Seconds of silence before TCP keep-alive probes (the kernel's range); 0: the kernel's default."""
    seconds = _seconds_or_none(key, value)
    if seconds is not None and not 1 <= seconds <= 32767:
        raise ConfigError(f"{key}: expected 1s to 32767s, or 0 for the system's default, got {value!r}")
    return seconds


def _count(key: str, value: Any) -> int | None:
    """A count; 0 means no limit."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: expected a whole number >= 0, got {value!r}")
    return value or None


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}: expected a whole number > 0, got {value!r}")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _strings_or_none(key: str, value: Any) -> tuple[str, ...]:
    """A list of strings that may be empty (to turn something off)."""
    if value == []:
        return ()
    return _strings(key, value)


_ORIGIN = re.compile(r"https?://[^/\s?#*]+/?\Z", re.IGNORECASE)


def _origins(key: str, value: Any) -> tuple[str, ...]:
    """Web origins, each `scheme://host[:port]`, as a browser sends them in `Origin:`."""
    origins = _strings_or_none(key, value)
    for i, origin in enumerate(origins):
        if origin == "*":
            raise ConfigError(f"{key}[{i}]: \"*\" is not supported: list each origin whose pages may post "
                              "and read with your tokens, e.g. \"https://shop.example\"")
        if not _ORIGIN.match(origin):
            raise ConfigError(f"{key}[{i}]: expected an origin like \"https://shop.example\" or "
                              f"\"http://127.0.0.1:8080\" (scheme, host, port; no path), got {origin!r}")
    return origins


_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?\Z")


def _host_names(key: str, value: Any) -> tuple[str, ...]:
    """Host names as a client writes them in its URL (no scheme, no port), or "*" for any."""
    names = tuple(name.lower().rstrip(".") or name for name in _strings_or_none(key, value))
    for i, name in enumerate(names):
        if name != "*" and not _HOST_NAME.match(name):
            raise ConfigError(f"{key}[{i}]: expected a host name like \"notifd.example.com\" (no scheme, no port) "
                              f"or \"*\", got {name!r}")
    return names


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a string or a list of strings, got {value!r}")
    return tuple(_string(f"{key}[{i}]", v) for i, v in enumerate(value))


_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,189}\Z")


def _node(key: str, value: Any) -> str:
    # Stored in `nodes`/`presence` (200 characters); `--workers` appends "/<n>".
    if not isinstance(value, str) or not _NODE.match(value):
        raise ConfigError(f"{key}: expected a name of letters, digits, '_.:@-', at most 190, got {value!r}")
    return value


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


# Where each kind of listen entry that has a backlog takes it as a positional argument
# (tcp:PORT:INTERFACE:BACKLOG), counting the kind.
_BACKLOG_POSITION = {"tcp": 3, "tcp6": 2, "ssl": 6}


def with_backlog(description: str) -> str:
    """A listen entry with LISTEN_BACKLOG added, when it is tcp:, tcp6: or ssl: and sets no backlog itself."""
    from twisted.internet.endpoints import (
        _parse,  # Twisted's own grammar, escaped colons included
    )

    try:
        args, kwargs = _parse(description)
    except Exception:
        return description  # serverFromString will say what is wrong with it
    position = _BACKLOG_POSITION.get(str(args[0]).lower()) if args else None
    if position is None or "backlog" in kwargs or len(args) > position:
        return description
    return f"{description}:backlog={LISTEN_BACKLOG}"


# --- the settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Every setting of notifd and notifctl, with its default."""

    db: str | None = None  # a SQLite path or an SQLAlchemy URL; None: the default file
    listen: tuple[str, ...] = DEFAULT_LISTEN
    node: str = field(default_factory=socket.gethostname)
    workers: int = 1  # processes serving the same listening ports
    max_line_length: int = DEFAULT_MAX_LINE
    poll_interval: float = 1.0  # seconds between safety checks for new items
    sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT_MS / 1000  # seconds a SQLite writer waits for another's lock
    log_format: str = "text"
    log_level: str = "info"
    metrics: str | None = None  # endpoint serving /metrics and /healthz
    http_listen: tuple[str, ...] = DEFAULT_HTTP  # endpoints of the HTTP API; (): no HTTP
    cors_origins: tuple[str, ...] = ()  # origins whose pages may call the HTTP API; (): none
    http_hosts: tuple[str, ...] = ()  # host names the HTTP API answers to, besides IP addresses and localhost
    http_request_timeout: float = 10.0  # seconds to receive a whole request (headers and body)
    http_max_requests: int = 1000  # requests on one keep-alive connection before it is closed
    tls_ciphers: str | None = None  # OpenSSL cipher string for TLS 1.2 on ssl: entries; None: tls.DEFAULT_CIPHERS
    anonymous: bool = True  # clients may use the protocol without `hello`
    hello_failures: int = 5  # failed hellos allowed per source address ...
    hello_window: float = 60.0  # ... in this many seconds
    max_connections: int | None = 20_000  # None: no limit
    max_connections_per_address: int | None = 1_000
    # When anonymous clients are refused: connections from one address before their hello,
    # and seconds from connect to a successful hello. None: no limit.
    max_unidentified_per_address: int | None = 32
    hello_timeout: float | None = 10.0
    idle_timeout: float | None = 600.0  # seconds of silence in normal mode; None: never
    max_unsent_bytes: int | None = 1 << 20  # unread bytes before a client is dropped
    keepalive: float | None = 60.0  # seconds of silence before TCP keep-alive probes; None: the kernel's
    recent_max_age: timedelta | None = None  # None here: the item type's own default
    recent_max_count: int | None = None
    retention: timedelta | None = timedelta(days=30)  # None: keep items forever
    prune_interval: float = 3600.0
    prune_batch: int = 500
    # [types.<name>]: per-type settings, keys as in TYPE_KEYS
    types: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugins_dirs: tuple[str, ...] = ()  # directories whose *.py files are plugins
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)  # [plugins.<name>]: given to that plugin
    notifiers: dict[str, dict[str, Any]] = field(default_factory=dict)  # [notifiers.<name>]: timeout, retry
    config_dir: str | None = None  # the configuration file's directory; relative paths in it start there
    # keys given explicitly somewhere (file, environment, flag): "unset" differs from "0"
    given: frozenset[str] = frozenset()

    def window(self, item_type: ItemType) -> Window:
        """The recent window of a type: [types.<name>] over [recent] over the plugin's default.

        An item past its retention is not recent, even before the pruner deletes it: what
        a query may return does not depend on when the pruner last ran.
        """
        own = self.types.get(item_type.name, {})
        default = item_type.window
        max_age = own["recent_max_age"] if "recent_max_age" in own else (
            self.recent_max_age if "recent_max_age" in self.given else default.max_age
        )
        max_count = own["recent_max_count"] if "recent_max_count" in own else (
            self.recent_max_count if "recent_max_count" in self.given else default.max_count
        )
        retention = own["retention"] if "retention" in own else self.retention
        if retention is not None and (max_age is None or retention < max_age):
            max_age = retention
        return Window(max_age=max_age, max_count=max_count)

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
        loaded = list(loaded)
        for name in self.plugins:
            if name not in loaded:
                raise ConfigError(f"plugins.{name}: no plugin named {name!r} is loaded "
                                  f"(loaded: {', '.join(sorted(loaded)) or 'none'})")


# Every key the file may hold: dotted path -> (Config field, parser).
KEYS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "db": ("db", _string),
    "listen": ("listen", _strings),
    "plugins_dirs": ("plugins_dirs", _strings),
    "node": ("node", _node),
    "workers": ("workers", _positive_int),
    "limits.max_line_length": ("max_line_length", _positive_int),
    "limits.hello_failures": ("hello_failures", _positive_int),
    "limits.hello_window": ("hello_window", _interval),
    "limits.max_connections": ("max_connections", _count),
    "limits.max_connections_per_address": ("max_connections_per_address", _count),
    "limits.max_unidentified_per_address": ("max_unidentified_per_address", _count),
    "limits.hello_timeout": ("hello_timeout", _seconds_or_none),
    "limits.idle_timeout": ("idle_timeout", _seconds_or_none),
    "limits.max_unsent_bytes": ("max_unsent_bytes", _count),
    "limits.keepalive": ("keepalive", _keepalive),
    "auth.anonymous": ("anonymous", _bool),
    "poll_interval": ("poll_interval", _interval),
    "sqlite_busy_timeout": ("sqlite_busy_timeout", _interval),
    "metrics": ("metrics", _string),
    "log.format": ("log_format", _choice(*LOG_FORMATS)),
    "log.level": ("log_level", _choice(*LOG_LEVELS)),
    "recent.max_age": ("recent_max_age", parse_duration),
    "recent.max_count": ("recent_max_count", _count),
    "retention.max_age": ("retention", parse_duration),
    "retention.interval": ("prune_interval", _interval),
    "retention.batch": ("prune_batch", _positive_int),
    "http.listen": ("http_listen", _strings_or_none),
    "http.cors_origins": ("cors_origins", _origins),
    "http.hosts": ("http_hosts", _host_names),
    "http.request_timeout": ("http_request_timeout", _interval),
    "http.max_requests_per_connection": ("http_max_requests", _positive_int),
    "tls.ciphers": ("tls_ciphers", _string),  # checked against OpenSSL by the daemon (tls.check_ciphers)
}
# Keys of a [types.<name>] table.
TYPE_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "recent_max_age": parse_duration,
    "recent_max_count": _count,
    "retention": parse_duration,
}
# [notifiers.<name>]: the timeout and retry policy of any notifier, over the plugin's own.
NOTIFIER_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "timeout": _interval,
    "max_attempts": _positive_int,
    "first_delay": _interval,
    "max_delay": _interval,
}
# Settings that are also command-line options (and environment variables): field -> option.
OPTIONS = {
    "db": "db",
    "listen": "listen",
    "node": "node",
    "workers": "workers",
    "metrics": "metrics",
    "http_listen": "http",
    "log_format": "log_format",
    "log_level": "log_level",
    "plugins_dirs": "plugins_dir",
}


def read_file(path: str | Path) -> dict[str, Any]:
    """Read and check a config file; returns {Config field: parsed value} for what it sets."""
    try:
        with open(path, "rb") as f:
            # It names the database and the plugins to run: only root or we may be able to change it.
            strictmodes.check_path(path)
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except strictmodes.Untrusted as e:
        raise ConfigError(f"config file {path}: refused: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    try:
        settings = _check(raw)
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    # Paths are relative to the file, not to wherever notifd starts.
    directory = Path(os.path.abspath(path)).parent
    settings["config_dir"] = str(directory)
    if "db" in settings and "://" not in settings["db"]:  # a SQLite file; a URL is taken as written
        settings["db"] = str(directory / Path(settings["db"]).expanduser())
    if "plugins_dirs" in settings:
        settings["plugins_dirs"] = tuple(str(directory / Path(d).expanduser()) for d in settings["plugins_dirs"])
    if "plugins" in settings:
        settings["plugins"] = {name: resolve_paths(table, directory) for name, table in settings["plugins"].items()}
    return settings


# A plugin setting whose key says it is a path: "path", "log_file", "state_dir", "cert_files",
# "directories"...
PATH_KEY = re.compile(r"(?:\A|_)(?:paths?|files?|dirs?|directory|directories)\Z")


def resolve_paths(table: dict[str, Any], directory: Path) -> dict[str, Any]:
    """A plugin's table with the values of path-like keys (PATH_KEY; a string or a list of
    strings) made absolute against `directory`, after expanding `~`, at any depth: in
    sub-tables and in arrays of tables too."""

    def resolved(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return resolve_paths(value, directory)
        if isinstance(value, list):
            return [resolved(key, v) for v in value]
        if isinstance(value, str) and value and PATH_KEY.search(key):
            return str(directory / Path(value).expanduser())
        return value

    return {key: resolved(key, value) for key, value in table.items()}


def _check(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        path = prefix + key
        if path == "types":
            settings["types"] = _check_types(value)
        elif path == "plugins":
            settings["plugins"] = _plugin_tables(value)
        elif path == "notifiers":
            settings["notifiers"] = _notifier_tables(value)
        elif path in KEYS:
            name, parse = KEYS[path]
            settings[name] = parse(path, value)
        elif isinstance(value, dict) and any(k.startswith(path + ".") for k in KEYS):
            settings.update(_check(value, path + "."))
        else:
            raise ConfigError(f"unknown key '{path}'")
    return settings


def _check_types(tables: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(tables, dict):
        raise ConfigError("types: expected [types.<name>] tables")
    checked = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"types.{name}: expected a table")
        for key in table:
            if key not in TYPE_KEYS:
                raise ConfigError(f"unknown key 'types.{name}.{key}'")
        checked[name] = {key: TYPE_KEYS[key](f"types.{name}.{key}", value) for key, value in table.items()}
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
            if key not in NOTIFIER_KEYS and isinstance(table[key], dict):
                # [notifiers.mail.ops] is the table "ops" inside "mail" for TOML.
                raise ConfigError(
                    f"notifiers.{name}.{key}: a notifier name with dots is written in quotes: "
                    f'[notifiers."{name}.{key}"]'
                )
            if key not in NOTIFIER_KEYS:
                raise ConfigError(f"unknown key 'notifiers.{name}.{key}'")
        tables[name] = {key: NOTIFIER_KEYS[key](f"notifiers.{name}.{key}", v) for key, v in table.items()}
    return tables


def file_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """The click `default_map` for the settings that are also command-line options."""
    return {option: settings[name] for name, option in OPTIONS.items() if name in settings}


def fields_of(options: dict[str, Any]) -> dict[str, Any]:
    """Command-line option values by Config field (`--plugins-dir` fills `plugins_dirs`)."""
    return {name: options[option] for name, option in OPTIONS.items() if option in options}


def build(settings: dict[str, Any], **options: Any) -> Config:
    """A Config from the file's settings and the command line's final values (None: not given)."""
    values = dict(settings)
    for name, value in options.items():
        if value is not None and value != ():
            values[name] = value
    for name in ("listen", "plugins_dirs", "http_listen", "cors_origins", "http_hosts"):
        if name in values:
            values[name] = tuple(values[name])
    return Config(**values, given=frozenset(values))


# --- showing it -----------------------------------------------------------------------------------

def effective(config: Config) -> dict[str, Any]:
    """The configuration as it would be written in the file (every key, defaults included)."""
    out: dict[str, Any] = {}
    for path, (name, _) in KEYS.items():
        value = getattr(config, name)
        if value is None and (name in config.given or name == "retention"):
            value = 0  # explicitly unlimited, which the file writes as 0
        elif _ in (parse_duration, _interval, _seconds_or_none, _keepalive):
            value = format_duration(value)
        elif value == ():
            value = None  # an empty list: not set
        node = out
        *tables, key = path.split(".")
        for table in tables:
            node = node.setdefault(table, {})
        node[key] = value
    out["plugins"] = {name: dict(table) for name, table in config.plugins.items()}
    out["notifiers"] = {
        name: {key: format_duration(v) if NOTIFIER_KEYS[key] is _interval else v for key, v in table.items()}
        for name, table in config.notifiers.items()
    }
    out["types"] = {
        name: {key: format_duration(v) if TYPE_KEYS[key] is parse_duration else v for key, v in table.items()}
        for name, table in config.types.items()
    }
    return out


def format_duration(value: timedelta | float | None) -> str | int | None:
    """A duration as the file would say it: "30d", "1h", "90s"; 0 for no limit."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if seconds == 0:
        return 0
    if seconds != int(seconds):
        return seconds
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds) // _UNITS[unit]}{unit}"
    return f"{int(seconds)}s"


def to_toml(settings: dict[str, Any], mask: bool = True) -> str:
    """Render settings as a TOML file; with `mask`, secrets are hidden (see `masked`).

    TOML has no null: settings that are None are named in a comment at the top.
    """
    import tomli_w  # only --check-config writes TOML

    unset: list[str] = []

    def present(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        kept = {}
        for key, value in table.items():
            if value is None:
                unset.append(prefix + key)
            else:
                kept[key] = present(value, f"{prefix}{key}.") if isinstance(value, dict) else value
        return kept

    text = tomli_w.dumps(masked(present(settings)) if mask else present(settings))
    return (f"# not set: {', '.join(unset)}\n\n" if unset else "") + text


MASK = "********"
# A value is secret when its key, or a key above it, looks secret: it contains one of
# SECRET_PARTS anywhere ("sslpassword", "refresh_token", "accessToken"), or one of its words
# is in SECRET_WORDS, which are too short to match inside a word ("api_key" and "X-Api-Key",
# not "monkey"). Words are split at "_", "-", ".", spaces and camelCase. So "max_attempts"
# is not secret; a key that only seems so ("tokens_per_minute") is masked, which hides
# nothing but a setting from --check-config.
SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "token", "authorization", "apikey", "credential", "cookie")
SECRET_WORDS = frozenset({"key", "keys", "pass", "pwd", "signature"})
_WORD_BREAK = re.compile(r"[\W_]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_URL_PASSWORD = re.compile(r"\A([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^@]*@")  # scheme://user:password@
_URL_PARAMETER = re.compile(r"([?&;#])([^=&;#]*)=([^&;#]*)")


def secret_key(key: str) -> bool:
    """Whether the value of `key` is a secret (see SECRET_PARTS and SECRET_WORDS)."""
    if any(part in key.lower() for part in SECRET_PARTS):
        return True
    return any(word.lower() in SECRET_WORDS for word in _WORD_BREAK.split(key))


def masked(value: Any, secret: bool = False) -> Any:
    """`value` with its secrets replaced by MASK, at any depth of tables and lists.

    Secret: every value (but true and false) under a secret-looking key, and in any URL the
    password of its user info and the value of each query or fragment parameter whose name
    looks secret (`?access_token=...`).
    """
    if isinstance(value, dict):
        return {key: masked(v, secret or secret_key(key)) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(v, secret) for v in value]
    if secret and not isinstance(value, bool):
        return MASK
    if isinstance(value, str) and "://" in value:
        return _masked_url(value)
    return value


def _masked_url(text: str) -> str:
    cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=len(text))
    address, parameters = text[:cut], text[cut:]
    address = _URL_PASSWORD.sub(rf"\1:{MASK}@", address)
    parameters = _URL_PARAMETER.sub(
        lambda m: f"{m[1]}{m[2]}={MASK}" if secret_key(m[2]) else m[0], parameters
    )
    return address + parameters


def changed(old: Config, new: Config) -> list[str]:
    """The fields that differ between two configurations."""
    return [f.name for f in dataclasses.fields(Config) if f.name != "given" and getattr(old, f.name) != getattr(new, f.name)]
