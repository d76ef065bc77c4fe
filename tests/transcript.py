"""The tutorial's example session, as data, and the posts that make it happen.

`tests/transcripts/tutorial.txt` is the session exactly as the tutorial prints it (C: for
the client, S: for the server). The server side of it depends on what was posted: the
first ad and random number before the client connects, a second ad and a random number
while it is in notification mode. `POSTS_BEFORE` and `POSTS_AFTER_LINE` say when.
"""
from __future__ import annotations

from pathlib import Path

TUTORIAL = Path(__file__).parent / "transcripts" / "tutorial.txt"

POSTS_BEFORE = [("classified", "Nice appart in the 11e."), ("random", "456902234")]
# line index in the transcript -> the post made right after that line was exchanged
POSTS_AFTER_LINE = {
    5: ("classified", "Flat share in the 20e."),  # after the first "S: will send notifs"
    7: ("random", "89765234756"),  # after the first "C: OK"
}


def load(path: Path = TUTORIAL) -> list[tuple[str, str]]:
    """[(who, line)] with who "C" or "S"."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        who, _, text = raw.partition(":")
        assert who in ("C", "S") and text.startswith("  "), raw
        lines.append((who, text[2:]))
    return lines


def replay(client, post) -> None:
    """Play the session over a line client (`send(line)`, `read_line() -> bytes`), checking every
    server line byte for byte; `post(type, text)` makes the posts the session needs on the way."""
    for index, (who, line) in enumerate(load()):
        if who == "C":
            client.send(line)
        else:
            assert client.read_line() == line.encode() + b"\r\n"
        if index in POSTS_AFTER_LINE:
            post(*POSTS_AFTER_LINE[index])
