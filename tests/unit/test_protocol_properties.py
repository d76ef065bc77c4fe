"""Property-based tests of the protocol core against a small model of the expected replies.

Random sequences of valid and invalid commands, random bytes, NULs, invalid UTF-8 and
over-long lines are fed to a `Session` split at random byte boundaries, with new items
announced between the pieces. The model below is written independently of
notifd/protocol.py, as the spec reads (docs/protocol.md). Runs are seeded
(`derandomize`) and bounded, so CI sees the same examples every time.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifd.protocol import (
    Fetch,
    Identify,
    MarkRead,
    Send,
    Session,
    Subscribe,
    Unsubscribe,
)

TYPES = ("classified", "random", "weather")
MAX_LINE = 24
SETTINGS = settings(
    derandomize=True, max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class Model:
    """What a client should see, from docs/protocol.md alone."""

    def __init__(self, anonymous: bool, hello_ok: bool) -> None:
        self.anonymous = anonymous
        self.hello_ok = hello_ok
        self.identified = False
        self.notif = False
        self.subscription: set[str] = set()
        self.outstanding: str | None = None
        self.pending: list[str] = []
        self.partial = b""
        self.skipping = False  # inside a line already answered "too long"
        self.out: list[bytes] = []
        self.served = 0  # items handed out by queries

    def feed(self, data: bytes) -> None:
        self.partial += data
        while b"\n" in self.partial:
            line, self.partial = self.partial.split(b"\n", 1)
            if self.skipping:
                self.skipping = False
            else:
                self.line(line)
        if len(self.partial) > MAX_LINE + 1:
            if not self.skipping:
                self.say("ERR line too long")
                self.skipping = True
            self.partial = b""

    def say(self, text: str) -> None:
        self.out.append(text.encode() + b"\r\n")

    def line(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > MAX_LINE:
            return self.say("ERR line too long")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self.say("ERR invalid UTF-8")
        words = text.split()
        if not words:
            return self.say("ERR empty line")
        verb, args = words[0], words[1:]
        if not self.anonymous and not self.identified and verb != "hello":
            return self.say("ERR hello first")
        if self.notif:
            if verb == "OK":
                if args:
                    return self.say("ERR this command takes no arguments")
                if self.outstanding is None:
                    return self.say("ERR no notification to acknowledge")
                self.outstanding = None
                if self.pending:
                    self.outstanding = self.pending.pop(0)
                    self.say(f"notif: {self.outstanding}")
                return
            if verb == "stop_notif":
                if args:
                    return self.say("ERR this command takes no arguments")
                self.notif, self.outstanding, self.pending = False, None, []
                return self.say("OK")
            return self.say("ERR in notification mode: send OK or stop_notif")
        if verb in ("notif", "_notif_"):
            if any(a not in TYPES for a in args):
                return self.say("ERR unknown type")
            self.notif = True
            self.subscription = set(args or TYPES)
            return self.say("will send notifs")
        if verb == "hello":
            if len(args) != 2:
                return self.say("ERR usage: hello <name> <token>")
            if self.identified:
                return self.say("ERR already identified")
            if self.hello_ok:
                self.identified = True
                return self.say("OK")
            return self.say("ERR unknown client or wrong token")
        if verb in ("OK", "stop_notif"):
            return self.say("ERR not in notification mode")
        if verb.endswith("?"):
            if verb[:-1] not in TYPES:
                return self.say("ERR unknown type")
            if args:
                return self.say("ERR this command takes no arguments")
            self.served += 1
            return self.say(f"item {self.served}")
        return self.say("ERR unknown command")

    def item_added(self, type_name: str) -> None:
        if not self.notif or type_name not in self.subscription:
            return
        if type_name == self.outstanding or type_name in self.pending:
            return
        if self.outstanding is None:
            self.outstanding = type_name
            self.say(f"notif: {type_name}")
        else:
            self.pending.append(type_name)


VALID = [
    b"random?", b"classified?", b"weather?", b"notif", b"_notif_", b"notif weather", b"notif random classified",
    b"OK", b"stop_notif", b"hello kiosk t0k3n", b"  random?  ", b"random?\r",
]
INVALID = [
    b"", b"bogus", b"RANDOM?", b"nosuch?", b"random? x", b"OK now", b"hello", b"notif nosuch",
    b"\x00", b"\xff\xfe", b"\xc3", b"x" * (MAX_LINE + 1), b"y" * (MAX_LINE * 3), b"stop_notif x", b"\tOK",
]
# Mostly valid commands, so that long exchanges (notification mode, queues) happen often.
valid, invalid = st.sampled_from(VALID), st.sampled_from(INVALID)
line = st.one_of(valid, valid, valid, valid, invalid, st.binary(max_size=MAX_LINE * 2))
# A script: client lines, each possibly followed by new items of some types.
script = st.lists(st.tuples(line, st.lists(st.sampled_from(TYPES), max_size=3)), max_size=40)


def carry_out(session: Session, actions, hello_ok: bool = False) -> bytes:
    """Answer the session's requests at once, as a fast database would; returns the bytes sent."""
    out = b""
    actions = list(actions)
    while actions:
        action = actions.pop(0)
        if isinstance(action, Send):
            out += action.data
        elif isinstance(action, Fetch):
            carry_out.served += 1
            actions = session.fetched(f"item {carry_out.served}", carry_out.served) + actions
        elif isinstance(action, Identify):
            actions = session.identified(1 if hello_ok else None, {}) + actions
        elif isinstance(action, Subscribe):
            actions = session.subscribed({}) + actions
        else:
            assert isinstance(action, (Unsubscribe, MarkRead))
    return out


def drive(session: Session, model: Model, chunks, events, hello_ok: bool) -> bytes:
    out = b""
    carry_out.served = 0
    for chunk, new_types in zip(chunks, events):
        out += carry_out(session, session.receive(chunk), hello_ok)
        model.feed(chunk)
        assert not session.waiting
        assert len(session._buffer) <= MAX_LINE + 1  # memory does not grow with input
        for type_name in new_types:
            out += carry_out(session, session.item_added(type_name))
            model.item_added(type_name)
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points + [len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@SETTINGS
@given(script=script, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
       anonymous=st.booleans(), hello_ok=st.booleans())
def test_replies_match_the_model_whatever_the_input_and_its_splitting(script, cuts, anonymous, hello_ok):
    session = Session(TYPES, max_line=MAX_LINE, anonymous=anonymous)
    model = Model(anonymous, hello_ok)
    # Each line's bytes are split at random points; new items come after the line's last piece.
    chunks, events = [], []
    for raw, new_types in script:
        pieces = split(raw + b"\n", cuts)
        chunks += pieces
        events += [[]] * (len(pieces) - 1) + [new_types]
    out = drive(session, model, chunks, events, hello_ok)
    assert out == b"".join(model.out)
    for reply in out.split(b"\r\n")[:-1]:
        assert reply.startswith((b"ERR ", b"notif: ", b"item ")) or reply in (b"OK", b"will send notifs")


# Notification mode in depth: entering, acknowledging, leaving, with items arriving all along.
NOTIF_LINES = [b"notif", b"_notif_", b"notif weather random", b"OK", b"OK", b"OK", b"stop_notif", b"random?"]
notif_script = st.lists(
    st.tuples(st.sampled_from(NOTIF_LINES), st.lists(st.sampled_from(TYPES), max_size=4)), min_size=1, max_size=30
)


@SETTINGS
@given(script=notif_script, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
def test_notification_queues_match_the_model(script, cuts):
    test_replies_match_the_model_whatever_the_input_and_its_splitting.hypothesis.inner_test(
        script=script, cuts=cuts, anonymous=True, hello_ok=True
    )


@SETTINGS
@given(garbage=st.binary(max_size=2000), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20))
def test_random_bytes_never_raise_and_always_get_err_or_nothing(garbage, cuts):
    session = Session(TYPES, max_line=MAX_LINE)
    carry_out.served = 0
    out = b""
    for piece in split(garbage, cuts):
        out += carry_out(session, session.receive(piece))
        assert len(session._buffer) <= MAX_LINE + 1
    assert out == b"" or out.endswith(b"\r\n")
