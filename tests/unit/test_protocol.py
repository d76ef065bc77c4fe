"""The protocol core (notifd.protocol.Session) driven directly: chat tables, no I/O."""
from __future__ import annotations

import pytest

from notifd.protocol import (
    Err,
    Fetch,
    Identify,
    MarkRead,
    Mode,
    Send,
    Session,
    Subscribe,
    Unsubscribe,
    sendable,
)

TYPES = ("classified", "random", "weather")


def sent(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def others(actions) -> list:
    return [a for a in actions if not isinstance(a, Send)]


@pytest.fixture
def session():
    return Session(TYPES, max_line=64)


# (client line, bytes the server sends, other actions) in NORMAL mode; nothing here waits.
NORMAL_CHAT = [
    (b"bogus", b"ERR unknown command\r\n", []),
    (b"", b"ERR empty line\r\n", []),
    (b"   ", b"ERR empty line\r\n", []),
    (b"OK", b"ERR not in notification mode\r\n", []),
    (b"stop_notif", b"ERR not in notification mode\r\n", []),
    (b"nosuchtype?", b"ERR unknown type\r\n", []),
    (b"?", b"ERR unknown type\r\n", []),
    (b"random? now", b"ERR this command takes no arguments\r\n", []),
    (b"hello", b"ERR usage: hello <name> <token>\r\n", []),
    (b"hello kiosk", b"ERR usage: hello <name> <token>\r\n", []),
    (b"hello a b c", b"ERR usage: hello <name> <token>\r\n", []),
    (b"notif nosuchtype", b"ERR unknown type\r\n", []),
    (b"\xff\xfe?", b"ERR invalid UTF-8\r\n", []),
    (b"RANDOM?", b"ERR unknown type\r\n", []),
]


@pytest.mark.parametrize("line, reply, rest", NORMAL_CHAT)
def test_normal_mode_chat(session, line, reply, rest):
    for ending in (b"\n", b"\r\n"):
        actions = session.receive(line + ending)
        assert sent(actions) == reply
        assert others(actions) == rest
        assert session.mode is Mode.NORMAL


def test_no_bytes_and_partial_lines_answer_nothing_until_the_line_ends(session):
    assert session.receive(b"") == []  # not an empty line
    assert session.receive(b"stop") == []
    assert session.receive(b"") == []
    assert sent(session.receive(b"_notif\r\n")) == b"ERR not in notification mode\r\n"


def test_query_waits_for_the_database_and_answers_in_order(session):
    actions = session.receive(b"classified?\r\nrandom?\n")
    assert actions == [Fetch("classified", 0)]
    assert session.waiting
    actions = session.fetched("Nice appart in the 11e.", 7)
    # The answer, then the buffered second request, in order.
    assert actions == [Send(b"Nice appart in the 11e.\r\n"), Fetch("random", 0)]
    assert session.cursors == {"classified": 7}
    actions = session.fetched("456902234", None)  # a fresh draw moves no cursor
    assert actions == [Send(b"456902234\r\n")]
    assert session.cursors == {"classified": 7}
    assert not session.waiting


def test_a_query_carries_the_cursor(session):
    session.receive(b"classified?\n")
    session.fetched("first", 3)
    assert session.receive(b"classified?\n") == [Fetch("classified", 3)]
    assert session.fetched("", None) == [Send(b"\r\n")]  # nothing unread: an empty line


def test_cursor_never_moves_back(session):
    session.receive(b"random?\n")
    session.fetched("5", 9)
    session.receive(b"random?\n")
    session.fetched("4", 4)
    assert session.cursors["random"] == 9


def test_named_client_cursor_is_persisted_after_the_send(session):
    assert session.receive(b"hello kiosk s3cret\n") == [Identify("kiosk", "s3cret")]
    assert session.identified(12, {"classified": 4}) == [Send(b"OK\r\n")]
    assert session.receive(b"classified?\n") == [Fetch("classified", 4)]
    assert session.fetched("ad", 5) == [Send(b"ad\r\n"), MarkRead(12, "classified", 5)]


def test_hello_refused_then_anonymous(session):
    session.receive(b"hello kiosk wrong\n")
    assert session.identified(None, {}) == [Err.HELLO_REFUSED]
    assert session.client_id is None
    session.receive(b"classified?\n")
    assert session.fetched("ad", 5) == [Send(b"ad\r\n")]  # no MarkRead for anonymous


def test_hello_only_once(session):
    session.receive(b"hello kiosk t\n")
    session.identified(1, {})
    assert session.receive(b"hello other t\n") == [Err.ALREADY_IDENTIFIED]


def test_database_failure_is_an_err_and_the_session_goes_on(session):
    session.receive(b"classified?\nrandom?\n")
    assert session.failed() == [Err.UNAVAILABLE, Fetch("random", 0)]


def test_an_item_that_cannot_be_sent_is_skipped_and_the_same_request_looks_again(session):
    session.receive(b"classified?\n")
    assert session.skipped(3) == [Fetch("classified", 3)]
    assert session.cursors["classified"] == 3 and session.waiting
    assert session.fetched("next ad", 4) == [Send(b"next ad\r\n")]
    assert session.cursors["classified"] == 4 and not session.waiting


def test_a_named_client_skipping_an_item_stores_its_cursor_past_it(session):
    session.receive(b"hello kiosk t\n")
    session.identified(7, {"classified": 2})
    session.receive(b"classified?\n")
    assert session.skipped(3) == [MarkRead(7, "classified", 3), Fetch("classified", 3)]
    assert session.fetched("", None) == [Send(b"\r\n")]


def test_no_fresh_value_is_an_error_and_moves_nothing(session):
    session.receive(b"random?\n")
    assert session.fetched(None, None) == [Err.BAD_VALUE]
    assert "random" not in session.cursors and not session.waiting


@pytest.mark.parametrize("line", ["two\nlines", "cr\r", "tab\t", "esc\x1b", "del\x7f", "c1\x85", "ls\u2028", "ps\u2029", "\ud800"])
def test_what_cannot_be_sent_as_one_line(line):
    assert not sendable(line)
    assert sendable("Vélo à vendre, 3 € ✓")


# --- notification mode ----------------------------------------------------------------------


def enter(session, line=b"notif\n", latest=None):
    actions = session.receive(line)
    assert actions[:2] == [Send(b"will send notifs\r\n"), Subscribe()]
    return session.subscribed(latest or {})


@pytest.mark.parametrize("verb", [b"notif", b"_notif_"])
def test_both_spellings_enter_notification_mode(session, verb):
    assert enter(session, verb + b"\r\n") == []
    assert session.mode is Mode.NOTIF


def test_entering_announces_types_with_unread_recent_items(session):
    session.cursors = {"classified": 5, "random": 2}
    actions = enter(session, latest={"classified": 5, "random": 8, "weather": 3})
    # classified: nothing beyond the cursor. weather (3) is older news than random (8).
    assert sent(actions) == b"notif: weather\r\n"
    assert session.receive(b"OK\n") == [Send(b"notif: random\r\n")]
    assert session.receive(b"OK\n") == []
    assert session.outstanding is None


def test_one_notification_outstanding_and_coalescing(session):
    enter(session)
    assert session.queued() == 0
    assert sent(session.item_added("classified")) == b"notif: classified\r\n"
    for _ in range(10_000):
        assert session.item_added("classified") == []  # already outstanding
    assert session.queued() == 1  # the metrics' pending gauge: one, however many items
    assert session.item_added("random") == []  # queued behind the outstanding one
    assert session.item_added("random") == []  # already pending
    assert session.queued() == 2
    assert sent(session.receive(b"OK\r\n")) == b"notif: random\r\n"
    assert session.queued() == 1
    assert session.receive(b"OK\r\n") == []
    assert session.queued() == 0
    # After the OK, a newer item of the type notifies again.
    assert sent(session.item_added("classified")) == b"notif: classified\r\n"


NOTIF_CHAT = [
    (b"random?", b"ERR in notification mode: send OK or stop_notif\r\n"),
    (b"hello a b", b"ERR in notification mode: send OK or stop_notif\r\n"),
    (b"notif", b"ERR in notification mode: send OK or stop_notif\r\n"),
    (b"OK", b"ERR no notification to acknowledge\r\n"),
    (b"OK now", b"ERR this command takes no arguments\r\n"),
    (b"", b"ERR empty line\r\n"),
]


@pytest.mark.parametrize("line, reply", NOTIF_CHAT)
def test_notification_mode_chat(session, line, reply):
    enter(session)
    assert sent(session.receive(line + b"\n")) == reply
    assert session.mode is Mode.NOTIF


def test_stop_notif_with_a_notification_outstanding(session):
    enter(session)
    session.item_added("classified")
    session.item_added("random")
    assert session.receive(b"stop_notif\r\n") == [Unsubscribe(), Send(b"OK\r\n")]
    assert session.mode is Mode.NORMAL
    assert session.item_added("random") == []  # not subscribed any more
    assert session.cursors == {}  # a notification marks nothing read
    # Re-entering starts clean: the pending queue was dropped.
    enter(session)
    assert session.outstanding is None and not session.pending


def test_lines_pipelined_behind_notif_are_read_after_the_unread_news_is_sent(session):
    session.cursors = {"random": 2}
    actions = session.receive(b"notif\r\nOK\r\nrandom?\r\n")
    assert actions == [Send(b"will send notifs\r\n"), Subscribe()]  # the rest waits for the hub
    assert session.waiting
    # The OK acknowledges the notification sent on entering; the query is refused in this mode.
    assert sent(session.subscribed({"random": 8, "classified": 1})) == (
        b"notif: classified\r\n" b"notif: random\r\n" b"ERR in notification mode: send OK or stop_notif\r\n"
    )
    assert session.outstanding == "random" and session.mode is Mode.NOTIF


def test_subscription_filter(session):
    enter(session, b"notif weather\n", latest={"classified": 4, "weather": 2})
    assert session.subscription == {"weather"}
    assert session.outstanding == "weather"
    assert session.receive(b"OK\n") == []
    assert session.item_added("classified") == []
    assert sent(session.item_added("weather")) == b"notif: weather\r\n"


def test_the_filter_lasts_until_stop_notif_and_bare_notif_means_every_type(session):
    enter(session, b"_notif_ weather weather\n")
    assert session.subscription == {"weather"}
    session.receive(b"stop_notif\n")
    enter(session, b"notif\n")
    assert session.subscription == session.types
    session.receive(b"stop_notif\n")
    assert sent(session.receive(b"notif weather nosuchtype\n")) == b"ERR unknown type\r\n"
    assert session.mode is Mode.NORMAL


def test_items_of_unknown_types_are_ignored(session):
    enter(session, latest={"gone": 9})
    assert session.item_added("gone") == []
    assert session.outstanding is None


# --- framing -----------------------------------------------------------------------------------


def test_lines_split_at_every_byte(session):
    data = b"bogus\r\nOK\nrandom?\r\n"
    actions = []
    for i in range(len(data)):
        actions += session.receive(data[i : i + 1])
    assert sent(actions) == b"ERR unknown command\r\nERR not in notification mode\r\n"
    assert others(actions) == [Fetch("random", 0)]


def test_line_at_the_limit_is_accepted_one_over_is_not(session):
    assert sent(session.receive(b"x" * 64 + b"\r\n")) == b"ERR unknown command\r\n"
    assert sent(session.receive(b"x" * 65 + b"\n")) == b"ERR line too long\r\n"


def test_endless_line_is_refused_once_and_memory_stays_bounded(session):
    replies = b""
    for _ in range(1000):
        replies += sent(session.receive(b"y" * 1000))
        assert len(session._buffer) <= 65
    assert replies == b"ERR line too long\r\n"
    # The rest of that line is dropped; the next line is served.
    assert sent(session.receive(b"tail\nbogus\n")) == b"ERR unknown command\r\n"


def test_lines_wait_while_a_request_is_with_the_database(session):
    session.receive(b"random?\n" + b"bogus\n" * 3)
    assert session.waiting
    actions = session.fetched("1", None)
    assert sent(actions) == b"1\r\n" + b"ERR unknown command\r\n" * 3


def test_notification_bytes_are_built_once():
    a, b = Session(TYPES), Session(TYPES)
    for s in (a, b):
        s.receive(b"notif\n")
        s.subscribed({})
    assert a.item_added("random")[0] is b.item_added("random")[0]


# --- anonymous clients refused -----------------------------------------------------------------


def test_without_anonymous_only_hello_is_accepted_until_one_succeeds():
    session = Session(TYPES, anonymous=False)
    assert session.mode is Mode.HELLO
    for line in (b"random?", b"notif", b"OK", b"bogus"):
        assert session.receive(line + b"\n") == [Err.HELLO_FIRST]
    assert session.receive(b"hello kiosk wrong\n") == [Identify("kiosk", "wrong")]
    assert session.identified(None, {}) == [Err.HELLO_REFUSED]
    assert session.mode is Mode.HELLO
    session.receive(b"hello kiosk bad\n")
    assert session.throttled() == [Err.HELLO_THROTTLED]
    assert session.mode is Mode.HELLO
    session.receive(b"hello kiosk right\nrandom?\n")
    assert session.identified(3, {}) == [Send(b"OK\r\n"), Fetch("random", 0)]


# A named client that may read classified only: (line, bytes sent, other actions, subscription).
RESTRICTED_CHAT = [
    (b"classified?", b"", [Fetch("classified", 0)], frozenset()),
    (b"random?", b"ERR not allowed\r\n", [], frozenset()),
    (b"notif random", b"ERR not allowed\r\n", [], frozenset()),
    (b"notif classified random", b"ERR not allowed\r\n", [], frozenset()),
    (b"notif classified", b"will send notifs\r\n", [Subscribe()], frozenset({"classified"})),
    (b"notif", b"will send notifs\r\n", [Subscribe()], frozenset({"classified"})),  # all it may read
]


@pytest.mark.parametrize("line, reply, rest, subscription", RESTRICTED_CHAT)
def test_a_client_restricted_to_some_types_is_refused_the_others(session, line, reply, rest, subscription):
    session.receive(b"hello kiosk t\n")
    session.identified(1, {}, allowed=frozenset({"classified"}))
    actions = session.receive(line + b"\n")
    assert (sent(actions), others(actions), session.subscription) == (reply, rest, subscription)


def test_entering_announces_the_very_first_item_to_a_new_client(session):
    assert sent(enter(session, latest={"classified": 1})) == b"notif: classified\r\n"  # no cursor yet: 0


def test_lines_sent_while_the_database_answers_wait_their_turn(session):
    assert session.receive(b"classified?\n") == [Fetch("classified", 0)]
    assert session.receive(b"random?\n") == []  # one request at a time: this one waits
    assert session.failed() == [Err.UNAVAILABLE, Fetch("random", 0)]


def test_lines_sent_behind_a_throttled_hello_are_answered_after_it(session):
    session.receive(b"hello kiosk bad\nrandom?\n")
    assert session.throttled() == [Err.HELLO_THROTTLED, Fetch("random", 0)]


def test_a_line_of_max_line_bytes_may_arrive_before_its_crlf_ending():
    session = Session(TYPES, max_line=8)
    assert session.receive(b"classifi") == []  # 8 bytes: the longest line allowed
    assert session.receive(b"\r") == []
    assert sent(session.receive(b"\n")) == b"ERR unknown command\r\n"  # read as a line, not refused as too long


def test_unicode_whitespace_around_and_between_words_is_whitespace(session):
    # docs/protocol.md: as str.split() reads it, a no-break space and U+2028 included.
    assert session.receive(" \u00a0random?\t\u2028\r\n".encode()) == [Fetch("random", 0)]
    session.fetched("7", None)
    assert sent(session.receive("notif\u00a0classified\n".encode()))[:18] == b"will send notifs\r\n"
