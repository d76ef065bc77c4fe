"""The tutorial's example session, replayed byte for byte against a real notifd over TCP."""
from __future__ import annotations

import pytest

from tests import transcript

pytestmark = pytest.mark.integration


def test_tutorial_session_replays_exactly(daemon, notifctl):
    for type_name, text in transcript.POSTS_BEFORE:
        notifctl("add", type_name, text)
    server = daemon()
    client = server.connect()
    transcript.replay(client, lambda type_name, text: notifctl("add", type_name, text))
    # Nothing more was sent: the next bytes are the answer to a probe.
    assert client.ask("stop_notif") == "OK"


def test_line_endings_and_errors_keep_the_connection_usable(daemon):
    server = daemon()
    client = server.connect()
    client.sock.sendall(b"bogus\nrandom? extra\r\n\xff\n")
    assert [client.read_line() for _ in range(3)] == [
        b"ERR unknown command\r\n",
        b"ERR this command takes no arguments\r\n",
        b"ERR invalid UTF-8\r\n",
    ]
    assert client.ask("random?").isdigit()
