# The notifd line protocol, sans I/O: one `Session` per client connection.
#
# Rule 1: everything that shapes one connection's behaviour lives in this file: framing,
#         line limits, modes, the notification queue and its coalescing, the client's read
#         cursors, and every string the server sends.
# Rule 2: this file does no I/O. It imports nothing from Twisted, SQLAlchemy or pluggy,
#         and reads no clock and no randomness. It takes bytes and events and returns
#         actions (frozen dataclasses below); `wire.py` carries them out.
#
# Theory of operation
# -------------------
# `receive(data)` frames lines (`\n` or `\r\n` in, always `\r\n` out) and runs each one
# through the command table of the current mode. A command that needs the database
# (`<type>?`, `hello`) returns an action and puts the session in WAITING: later lines stay
# buffered, unread, until the answer comes back through `fetched()`, `identified()` or
# `failed()`. Replies therefore always come in the order of the requests, and a client
# may pipeline. In NOTIF mode the session holds at most one outstanding notification and
# an ordered set of pending types; a type that is already outstanding or pending is not
# queued again (coalescing). A notification marks nothing read: the session only moves a
# cursor when a query's answer is handed to it, and asks for it to be persisted
# (`MarkRead`) *after* the `Send`, so a named client's stored state is never ahead of what
# was written to it.
from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

CRLF = b"\r\n"
DEFAULT_MAX_LINE = 4096  # bytes in a line, not counting its line ending


class Mode(enum.Enum):
    HELLO = "hello"  # anonymous clients refused: only `hello` is accepted until one succeeds
    NORMAL = "normal"  # requests and replies
    WAITING = "waiting"  # a request is with the database; later lines wait in the buffer
    NOTIF = "notif"  # the server pushes `notif: <type>`, the client answers `OK`


# --- actions: what the session asks its carrier (wire.py) to do -------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the client."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Fetch:
    """Find the unread item of `type` after cursor `after`; answer with `fetched()` or `failed()`."""

    type: str
    after: int


@dataclass(frozen=True, slots=True)
class Identify:
    """Check a `hello`; answer with `identified()` or `failed()`."""

    name: str
    token: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """The session entered notification mode; answer with `subscribed(latest)`."""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """The session left notification mode; stop calling `item_added()`."""


@dataclass(frozen=True, slots=True)
class MarkRead:
    """Persist a named client's cursor: it has been sent every item of `type` up to `item_id`."""

    client_id: int
    type: str
    item_id: int


Action = Send | Fetch | Identify | Subscribe | Unsubscribe | MarkRead


# --- every line the server sends -----------------------------------------------------


def _line(text: str) -> bytes:
    return text.encode("utf-8") + CRLF


WILL_SEND_NOTIFS = Send(_line("will send notifs"))
OK = Send(_line("OK"))


class Err:
    """The `ERR <reason>` replies, one constant each; documented in docs/protocol.md."""

    EMPTY_LINE = Send(_line("ERR empty line"))
    LINE_TOO_LONG = Send(_line("ERR line too long"))
    INVALID_UTF8 = Send(_line("ERR invalid UTF-8"))
    UNKNOWN_COMMAND = Send(_line("ERR unknown command"))
    UNKNOWN_TYPE = Send(_line("ERR unknown type"))
    NOT_ALLOWED = Send(_line("ERR not allowed"))
    NO_ARGUMENTS = Send(_line("ERR this command takes no arguments"))
    HELLO_USAGE = Send(_line("ERR usage: hello <name> <token>"))
    HELLO_REFUSED = Send(_line("ERR unknown client or wrong token"))
    HELLO_FIRST = Send(_line("ERR hello first"))
    HELLO_THROTTLED = Send(_line("ERR too many failed hellos; try again later"))
    ALREADY_IDENTIFIED = Send(_line("ERR already identified"))
    NOT_IN_NOTIF = Send(_line("ERR not in notification mode"))
    IN_NOTIF = Send(_line("ERR in notification mode: send OK or stop_notif"))
    NOTHING_TO_ACK = Send(_line("ERR no notification to acknowledge"))
    UNAVAILABLE = Send(_line("ERR temporarily unavailable"))
    # Sent by wire.py as it closes a connection (limits, docs/security.md).
    TOO_MANY_CONNECTIONS = Send(_line("ERR too many connections"))
    TOO_MANY_FROM_ADDRESS = Send(_line("ERR too many connections from your address"))
    TOO_MANY_WAITING_FOR_HELLO = Send(_line("ERR too many connections waiting for hello from your address"))
    NO_HELLO_IN_TIME = Send(_line("ERR no hello in time"))
    IDLE = Send(_line("ERR idle for too long"))
    # Sent by wire.py as it closes a connection whose right to be served was revoked.
    CLIENT_REMOVED = Send(_line("ERR client removed"))
    TOKEN_CHANGED = Send(_line("ERR token changed; hello again with the new one"))
    ANONYMOUS_REFUSED = Send(_line("ERR anonymous clients are no longer served; hello first"))
    BAD_VALUE = Send(_line("ERR value cannot be sent"))


# What cannot travel in one line, or would drive a terminal: C0 and C1 controls and DEL
# (CR and LF among them), the Unicode line and paragraph separators, lone surrogates. The
# same characters `items.check_line` refuses at posting; a row written by another tool
# may still hold them.
_UNSENDABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def sendable(line: str) -> bool:
    """Whether `line` can be sent as one protocol line."""
    return _UNSENDABLE.search(line) is None


_notif_sends: dict[str, Send] = {}


def _notif(type_name: str) -> Send:
    # Built once per type and shared by every session: fan-out writes the same bytes.
    send = _notif_sends.get(type_name)
    if send is None:
        send = _notif_sends[type_name] = Send(_line(f"notif: {type_name}"))
    return send


class Session:
    """The protocol state of one client connection.

    Feed it what the client sent with `receive(data)` and what the rest of the daemon
    learned with the event methods (`fetched`, `identified`, `failed`, `subscribed`,
    `item_added`); each returns the list of actions to carry out, in order.

    Args:
        types: the names of the item types the daemon serves.
        max_line: the longest line accepted, in bytes, not counting its line ending.
        anonymous: whether a client may use the protocol without a `hello`.
    """

    __slots__ = (
        "types",
        "max_line",
        "anonymous",
        "mode",
        "client_id",
        "allowed",
        "cursors",
        "subscription",
        "outstanding",
        "pending",
        "_buffer",
        "_discarding",
        "_waiting_for",
    )

    def __init__(self, types: Iterable[str], max_line: int = DEFAULT_MAX_LINE, anonymous: bool = True) -> None:
        self.types = frozenset(types)
        self.max_line = max_line
        self.anonymous = anonymous
        self.mode = Mode.NORMAL if anonymous else Mode.HELLO
        self.client_id: int | None = None  # set by a successful hello; None = anonymous
        self.allowed: frozenset[str] | None = None  # the types a named client may read; None: all
        self.cursors: dict[str, int] = {}  # type -> id of the last item sent; 0 = none
        self.subscription: frozenset[str] = frozenset()  # types notified in NOTIF mode
        self.outstanding: str | None = None  # the notification sent and not yet OK'd
        self.pending: dict[str, None] = {}  # types to notify next, in order (a set)
        self._buffer = bytearray()
        self._discarding = False  # skipping the rest of an over-long line
        self._waiting_for: str | None = None  # the type a Fetch is for

    # --- input from the client --------------------------------------------------------

    def receive(self, data: bytes) -> list[Action]:
        """Take bytes from the client; returns what to do about the lines they complete."""
        actions: list[Action] = []
        if not self._buffer and not self._discarding and self.mode is not Mode.WAITING:
            # One whole line, nothing before it: the common request, without the buffer;
            # and the commonest, `<type>?` and `OK`, without decoding and splitting.
            if self.mode is Mode.NORMAL:
                type_name = _query_lines(self.types, self.max_line).get(data)
                if type_name is not None and (self.allowed is None or type_name in self.allowed):
                    self._fetch(type_name, actions)
                    return actions
            elif self.mode is Mode.NOTIF and data in _ACK_LINES and self.max_line >= 2:  # after each notif
                self._ack("OK", [], actions)
                return actions
            if data.find(b"\n") == len(data) - 1 >= 0:
                self._run_raw_line(data[:-1], actions)
                return actions
        self._buffer += data
        self._run_lines(actions)
        return actions

    def queued(self) -> int:
        """Notifications sent and not acknowledged, plus those waiting to be sent."""
        return len(self.pending) + (self.outstanding is not None)

    @property
    def waiting(self) -> bool:
        """True while a request is with the database; the carrier may stop reading."""
        return self.mode is Mode.WAITING

    def _run_lines(self, actions: list[Action]) -> None:
        buffer = self._buffer
        if not buffer:
            return
        start = 0
        while self.mode is not Mode.WAITING:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if self._discarding:  # the tail of a line already refused
                self._discarding = False
            else:
                self._run_raw_line(bytes(buffer[start:end]), actions)
            start = end + 1
        del buffer[:start]
        if self.mode is not Mode.WAITING and len(buffer) > self.max_line + 1:
            # A line longer than the limit, its end not even received: refuse it now and
            # drop it as it comes, so memory does not grow with what the client sends.
            if not self._discarding:
                actions.append(Err.LINE_TOO_LONG)
                self._discarding = True
            buffer.clear()

    def _run_raw_line(self, raw: bytes, actions: list[Action]) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self.max_line:
            actions.append(Err.LINE_TOO_LONG)
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            actions.append(Err.INVALID_UTF8)
            return
        words = line.split()
        if not words:
            actions.append(Err.EMPTY_LINE)
            return
        verb, args = words[0], words[1:]
        command = _COMMANDS[self.mode].get(verb)
        if command is None:
            if self.mode is Mode.HELLO:
                command = Session._hello_first
            elif self.mode is Mode.NOTIF:
                command = Session._refuse_in_notif
            elif verb.endswith("?"):
                command = Session._query
            else:
                command = Session._unknown
        command(self, verb, args, actions)

    # --- commands (one method per row of _COMMANDS) ------------------------------------

    def _query(self, verb: str, args: list[str], actions: list[Action]) -> None:
        type_name = verb[:-1]
        if type_name not in self.types:
            actions.append(Err.UNKNOWN_TYPE)
        elif self.allowed is not None and type_name not in self.allowed:
            actions.append(Err.NOT_ALLOWED)
        elif args:
            actions.append(Err.NO_ARGUMENTS)
        else:
            self._fetch(type_name, actions)

    def _fetch(self, type_name: str, actions: list[Action]) -> None:
        self.mode = Mode.WAITING
        self._waiting_for = type_name
        actions.append(Fetch(type_name, self.cursors.get(type_name, 0)))

    def _hello(self, verb: str, args: list[str], actions: list[Action]) -> None:
        if len(args) != 2:
            actions.append(Err.HELLO_USAGE)
        elif self.client_id is not None:
            actions.append(Err.ALREADY_IDENTIFIED)
        else:
            self.mode = Mode.WAITING
            actions.append(Identify(args[0], args[1]))

    def _start_notif(self, verb: str, args: list[str], actions: list[Action]) -> None:
        unknown = [name for name in args if name not in self.types]
        if unknown:
            actions.append(Err.UNKNOWN_TYPE)
            return
        if self.allowed is not None and not self.allowed.issuperset(args):
            actions.append(Err.NOT_ALLOWED)
            return
        # Lines after this one wait for `subscribed`: an `OK` pipelined behind `notif` must
        # find the notifications of the items already unread sent, as it would if read later.
        self.mode = Mode.WAITING
        served = self.types if self.allowed is None else self.types & self.allowed
        self.subscription = frozenset(args) if args else served
        actions.append(WILL_SEND_NOTIFS)
        actions.append(Subscribe())

    def _ack(self, verb: str, args: list[str], actions: list[Action]) -> None:
        if args:
            actions.append(Err.NO_ARGUMENTS)
        elif self.outstanding is None:
            actions.append(Err.NOTHING_TO_ACK)
        else:
            self.outstanding = None
            self._send_next(actions)

    def _stop_notif(self, verb: str, args: list[str], actions: list[Action]) -> None:
        if args:
            actions.append(Err.NO_ARGUMENTS)
            return
        self.mode = Mode.NORMAL
        self.subscription = frozenset()
        self.outstanding = None
        self.pending.clear()
        actions.append(Unsubscribe())
        actions.append(OK)

    def _not_in_notif(self, verb: str, args: list[str], actions: list[Action]) -> None:
        actions.append(Err.NOT_IN_NOTIF)

    def _refuse_in_notif(self, verb: str, args: list[str], actions: list[Action]) -> None:
        actions.append(Err.IN_NOTIF)

    def _unknown(self, verb: str, args: list[str], actions: list[Action]) -> None:
        actions.append(Err.UNKNOWN_COMMAND)

    def _hello_first(self, verb: str, args: list[str], actions: list[Action]) -> None:
        actions.append(Err.HELLO_FIRST)

    def _at_rest(self) -> Mode:
        """The mode to return to after a request: HELLO until an anonymous-refusing session is identified."""
        return Mode.NORMAL if self.anonymous or self.client_id is not None else Mode.HELLO

    # --- events from the rest of the daemon --------------------------------------------

    def fetched(self, line: str | None, item_id: int | None) -> list[Action]:
        """The answer to the last `Fetch`.

        Args:
            line: the line to send, `sendable`; None when no item was found and the type's
                plugin failed to draw a fresh value.
            item_id: the item sent, or None for a fresh value or an empty answer.
        """
        assert self.mode is Mode.WAITING and self._waiting_for is not None
        type_name, self._waiting_for = self._waiting_for, None
        self.mode = Mode.NORMAL
        if line is None:
            actions: list[Action] = [Err.BAD_VALUE]
        else:
            actions = [Send(_line(line))]
            self._move_cursor(type_name, item_id, actions)
        self._run_lines(actions)
        return actions

    def skipped(self, item_id: int) -> list[Action]:
        """The item the last `Fetch` found cannot be sent (its plugin failed, or it is not one line).

        The cursor moves past it, as if it had been sent, and the same request looks again:
        one bad item never blocks the ones behind it.
        """
        assert self.mode is Mode.WAITING and self._waiting_for is not None
        type_name = self._waiting_for
        actions: list[Action] = []
        self._move_cursor(type_name, item_id, actions)
        actions.append(Fetch(type_name, self.cursors.get(type_name, 0)))
        return actions

    def _move_cursor(self, type_name: str, item_id: int | None, actions: list[Action]) -> None:
        if item_id is not None and item_id > self.cursors.get(type_name, 0):
            self.cursors[type_name] = item_id
            if self.client_id is not None:
                actions.append(MarkRead(self.client_id, type_name, item_id))

    def identified(
        self, client_id: int | None, cursors: Mapping[str, int], allowed: frozenset[str] | None = None
    ) -> list[Action]:
        """The answer to the last `Identify`: the client's id, stored cursors and the types it
        may read (None: all), or a client_id of None if refused."""
        assert self.mode is Mode.WAITING
        if client_id is None:
            actions: list[Action] = [Err.HELLO_REFUSED]
        else:
            self.client_id = client_id
            self.allowed = allowed
            self.cursors = dict(cursors)
            actions = [OK]
        self.mode = self._at_rest()
        self._run_lines(actions)
        return actions

    def throttled(self) -> list[Action]:
        """The last `Identify` was not even checked: too many failed hellos from this address."""
        assert self.mode is Mode.WAITING
        self.mode = self._at_rest()
        actions: list[Action] = [Err.HELLO_THROTTLED]
        self._run_lines(actions)
        return actions

    def failed(self) -> list[Action]:
        """The last `Fetch` or `Identify` could not be answered (the database failed)."""
        assert self.mode is Mode.WAITING
        self.mode = self._at_rest()
        self._waiting_for = None
        actions: list[Action] = [Err.UNAVAILABLE]
        self._run_lines(actions)
        return actions

    def subscribed(self, latest: Mapping[str, int]) -> list[Action]:
        """After `Subscribe`: the id of the newest *recent* item of each type.

        Every subscribed type with a recent item beyond this session's cursor is
        notified, oldest news first; then the lines that came after `notif` are read.
        """
        assert self.mode is Mode.WAITING and self._waiting_for is None
        self.mode = Mode.NOTIF
        actions: list[Action] = []
        unread = [
            (item_id, type_name)
            for type_name, item_id in latest.items()
            if type_name in self.subscription and item_id > self.cursors.get(type_name, 0)
        ]
        for _, type_name in sorted(unread):
            actions.extend(self.item_added(type_name))
        self._run_lines(actions)
        return actions

    def item_added(self, type_name: str) -> list[Action]:
        """A new item of `type_name` was committed."""
        if self.mode is not Mode.NOTIF or type_name not in self.subscription:
            return []
        if type_name == self.outstanding or type_name in self.pending:
            return []  # coalesced: the client already has or will get this news
        if self.outstanding is None:
            self.outstanding = type_name
            return [_notif(type_name)]
        self.pending[type_name] = None
        return []

    def _send_next(self, actions: list[Action]) -> None:
        if self.pending:
            type_name = next(iter(self.pending))
            del self.pending[type_name]
            self.outstanding = type_name
            actions.append(_notif(type_name))


_ACK_LINES = frozenset({b"OK\n", b"OK\r\n"})


@functools.lru_cache(maxsize=8)
def _query_lines(types: frozenset[str], max_line: int) -> dict[bytes, str]:
    """The exact bytes of each valid `<type>?` line, with either line ending -> the type."""
    lines = {}
    for name in types:
        query = f"{name}?".encode("utf-8")
        if len(query) <= max_line:
            lines[query + b"\n"] = lines[query + CRLF] = name
    return lines


_Command = Callable[[Session, str, list, list], None]

# The command table: mode -> verb -> handler. In NORMAL mode a verb not listed here is a
# query if it ends in "?", and unknown otherwise; in NOTIF and HELLO modes it is refused.
# WAITING has no row: no line is read while a request is with the database.
_COMMANDS: dict[Mode, dict[str, _Command]] = {
    Mode.HELLO: {"hello": Session._hello},
    Mode.NORMAL: {
        "notif": Session._start_notif,
        "_notif_": Session._start_notif,  # the tutorial spells it both ways
        "hello": Session._hello,
        "OK": Session._not_in_notif,
        "stop_notif": Session._not_in_notif,
    },
    Mode.NOTIF: {
        "OK": Session._ack,
        "stop_notif": Session._stop_notif,
    },
}
