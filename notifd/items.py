# The vocabulary every layer shares: items, item types, notifiers, and the error a
# plugin raises for bad input. Plain frozen dataclasses; no I/O here, so the protocol
# core, the store, the hub and plugins can all import this module.
from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

TYPE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")


class InvalidItem(ValueError):
    """Posted text or value that an item type refuses; the message says why, in a few words."""


class PluginFailed(InvalidItem):
    """The type's own code raised something other than InvalidItem: a bug in the plugin, not in the post."""


class Pick(enum.Enum):
    """Which unread item a `<type>?` query returns."""

    OLDEST = "oldest"  # like classified ads: read them in order, one per query
    NEWEST = "newest"  # like random numbers: only the latest matters; older ones become read too


@dataclass(frozen=True, slots=True)
class Item:
    """One posted item. `created_at` is naive UTC."""

    id: int
    type: str
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Window:
    """What counts as *recent* for one type: at most `max_count` newest items, none older than `max_age`.

    `None` means no limit on that side.
    """

    max_age: timedelta | None = timedelta(days=7)
    max_count: int | None = 100

    def admits(self, created_at: datetime, now: datetime) -> bool:
        """Whether the newest item of a type, created at `created_at`, is recent at `now`."""
        return self.max_age is None or created_at >= now - self.max_age


def _same(text: str) -> str:
    return text


def _text_of(item: Item) -> str:
    return item.text


@dataclass(frozen=True)
class ItemType:
    """An item type, declared by a plugin through `register_item_types`.

    name:     the protocol name: `<name>?` queries it, `notif: <name>` announces it.
    validate: normalises a posted text and returns it, or raises `InvalidItem`.
    render:   the one line that `<name>?` answers for an item.
    pick:     which unread item a query returns (`Pick.OLDEST` or `Pick.NEWEST`).
    fresh:    when set, draws a value to answer with when nothing is unread (as `random` does),
              and the value `notifctl add <name>` posts when given no text.
    window:   the default recent window; the configuration may override it per type.
    """

    name: str
    validate: Callable[[str], str] = _same
    render: Callable[[Item], str] = _text_of
    pick: Pick = Pick.OLDEST
    fresh: Callable[[], str] | None = None
    window: Window = Window()

    def __post_init__(self) -> None:
        if not TYPE_NAME.match(self.name):
            raise ValueError(
                f"item type name {self.name!r} must match {TYPE_NAME.pattern[:-2]!r}"
            )


NOTIFIER_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")


@dataclass(frozen=True, slots=True)
class Retry:
    """How a durable notifier's failed deliveries are retried: exponential back-off, then dead.

    The n-th failed attempt is retried after `first_delay * 2**(n-1)` seconds, at most
    `max_delay`; after `max_attempts` attempts the delivery is dead (a dead letter that
    `notifctl outbox retry ID` re-queues).
    """

    max_attempts: int = 12
    first_delay: float = 10.0
    max_delay: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.first_delay <= 0 or self.max_delay < self.first_delay:
            raise ValueError("Retry needs max_attempts >= 1 and 0 < first_delay <= max_delay")

    def delay(self, attempts: int) -> float | None:
        """Seconds to wait after `attempts` failed attempts, or None when the delivery is dead."""
        if attempts >= self.max_attempts:
            return None
        return min(self.first_delay * 2 ** (attempts - 1), self.max_delay)


@dataclass(frozen=True)
class Notifier:
    """Something to do with every new item, declared through `register_notifiers`.

    name:    unique among notifiers; lower case letters, digits, `_`, `-` and `.`, at most 64.
    notify:  called as `notify(item)` in the reactor thread, once per new item after it is
             committed. It must not block; it may return a Deferred. The daemon never waits
             for it before telling clients.
    durable: False: called live, at most once, for items committed while the daemon runs.
             True: delivered through the outbox in the database, at least once: an exception,
             a failed Deferred or a timeout is retried with back-off (`retry`), across
             restarts, including items committed while the daemon was down.
    timeout: seconds a returned Deferred may take; then it is cancelled and counts as a failure.
    retry:   the back-off of a durable notifier.
    """

    name: str
    notify: Callable[[Item], Any]
    durable: bool = False
    timeout: float = 30.0
    retry: Retry = Retry()

    def __post_init__(self) -> None:
        if not NOTIFIER_NAME.match(self.name):
            raise ValueError(f"notifier name {self.name!r} must match {NOTIFIER_NAME.pattern[:-2]!r}")
        if not self.timeout > 0:
            raise ValueError(f"notifier {self.name}: timeout must be > 0 seconds")


# Characters that would break the one-line-per-item wire format or a terminal:
# C0/C1 controls and DEL (Cc), the Unicode line and paragraph separators, and lone
# surrogates (what undecodable bytes become on a command line).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})
# Invisible characters that make a text show as another in a terminal or a page ("Trojan
# Source", CVE-2021-42574): the bidirectional embeddings, overrides and isolates, and the
# byte order mark. The marks U+200E/U+200F and the zero-width joiners stay: right-to-left
# scripts and emoji sequences need them.
_DECEPTIVE = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape(text: str) -> str:
    """One line, whatever the text holds: control characters become \\n, \\x1b, ... (logs and
    notifctl's text output: a row another tool wrote must not forge lines or drive a terminal)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def refused_character(text: str) -> str | None:
    """Why `text` cannot be posted for the characters it holds (a text or an idempotency key), or None."""
    for ch in text:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            if ch in "\r\n":
                return "contains a newline"
            if unicodedata.category(ch) == "Cs":
                return "is not valid UTF-8"
            return f"contains a control character (U+{ord(ch):04X})"
        if ch in _DECEPTIVE:
            return f"contains an invisible formatting character (U+{ord(ch):04X})"
    return None


def check_line(text: str, max_bytes: int) -> str:
    """Refuse a text that cannot travel as one protocol line, or is blank; returns it unchanged."""
    if not text.strip():
        # A blank answer to `<type>?` reads as "nothing unread" to a client that trims lines.
        raise InvalidItem("empty text")
    refused = refused_character(text)
    if refused is not None:
        raise InvalidItem(f"text {refused}")
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidItem(f"text is {size} bytes, over the line limit of {max_bytes}")
    return text


def check_post(item_type: ItemType, text: str | None, max_line: int) -> str:
    """The text of a post as `item_type` stores it (generic checks, then the type's own).

    Raises InvalidItem with the whole one-line message every posting path shows: `invalid
    <type>: <reason>`, or `the <type> plugin failed to validate the text: ...` when the
    plugin's `validate` raised something else (a bug in the plugin, reported as such).
    """
    try:
        text = check_line(text or "", max_line)
        return check_line(item_type.validate(text), max_line)
    except InvalidItem as e:
        raise InvalidItem(f"invalid {item_type.name}: {e}") from None
    except Exception as e:
        raise PluginFailed(f"the {item_type.name} plugin failed to validate the text: {type(e).__name__}: {e}") from None
