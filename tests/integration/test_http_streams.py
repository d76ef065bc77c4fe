"""Listening over HTTP against a real notifd: Server-Sent Events that skip nothing across
reconnects, and the tutorial's line protocol over a WebSocket, exactly."""
from __future__ import annotations

import http.client
import json
import signal
import socket

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests import transcript
from tests.integration.conftest import TIMEOUT

pytestmark = pytest.mark.integration


class Events:
    """A Server-Sent Events stream, read event by event."""

    def __init__(self, port: int, path: str = "/v1/events", headers: dict | None = None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        self.connection.request("GET", path, headers=headers or {})
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def next(self) -> dict:
        """The next event's fields (comments skipped); `data` parsed as JSON."""
        fields: dict = {}
        while True:
            line = self.response.readline().decode()
            if line == "":
                raise ConnectionError(f"stream ended; so far {fields}")
            line = line.rstrip("\n")
            if line == "":
                if fields:
                    if "data" in fields:
                        fields["data"] = json.loads(fields["data"])
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    def close(self) -> None:
        self.connection.close()


def test_an_item_posted_anywhere_is_an_event_and_a_reconnect_skips_nothing(daemon, notifctl):
    server = daemon()
    stream = Events(server.http_port)
    assert stream.status == 200 and stream.response.getheader("content-type").startswith("text/event-stream")
    first = int(notifctl("add", "classified", "Nice appart in the 11e.").stdout)
    event = stream.next()
    assert event == {"id": str(first), "event": "classified", "data": {
        "id": first, "type": "classified", "text": "Nice appart in the 11e.", "created_at": event["data"]["created_at"]}}
    stream.close()
    # Posted while the browser was away: replayed after Last-Event-ID, in order, then live.
    missed = [int(notifctl("add", kind, text).stdout) for kind, text in [("random", "42"), ("classified", "Studio")]]
    resumed = Events(server.http_port, headers={"Last-Event-ID": str(first)})
    assert [int(resumed.next()["id"]) for _ in missed] == missed
    live = int(notifctl("add", "classified", "Loft").stdout)
    assert resumed.next()["data"]["text"] == "Loft" and live > missed[-1]
    # A filter, and a resume point in the query string (for clients that cannot set headers).
    only = Events(server.http_port, "/v1/events?types=random&last_event_id=0")
    event = only.next()["data"]
    assert (event["id"], event["type"], event["text"]) == (missed[0], "random", "42")


def test_a_named_client_s_stream_resumes_from_its_stored_cursor(daemon, notifctl):
    server = daemon()
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    ids = [int(notifctl("add", "classified", f"ad {n}").stdout) for n in range(3)]
    line = server.connect()
    assert line.ask(f"hello kiosk {token}") == "OK"
    assert line.ask("classified?") == "ad 0"  # read over the line protocol
    stream = Events(server.http_port, headers={"Authorization": f"Bearer {token}"})
    assert [int(stream.next()["id"]) for _ in range(2)] == ids[1:]  # the unread ones, nothing before
    stream.close()
    # What the stream sent is read: a new session and a new stream go on after it (an open
    # session keeps its own cursor, as two connections of one client do).
    again_line = server.connect()
    assert again_line.ask(f"hello kiosk {token}") == "OK"
    assert again_line.ask("classified?") == ""
    later = int(notifctl("add", "classified", "later").stdout)
    again = Events(server.http_port, headers={"Authorization": f"Bearer {token}"})
    assert int(again.next()["id"]) == later


def test_a_client_restricted_to_types_streams_those_and_is_refused_others(daemon, notifctl):
    server = daemon()
    token = notifctl("client", "add", "kiosk", "--types", "classified").stdout.splitlines()[-1]
    bearer = {"Authorization": f"Bearer {token}"}
    refused = Events(server.http_port, "/v1/events?types=random", headers=bearer)
    assert refused.status == 403 and json.loads(refused.response.read())["detail"] == "not allowed to read random"
    stream = Events(server.http_port, headers=bearer)  # no ?types: every type it may read
    assert stream.status == 200
    notifctl("add", "random", "7")
    ad = int(notifctl("add", "classified", "ad").stdout)
    assert int(stream.next()["id"]) == ad  # the random value was not for it


@pytest.mark.parametrize("on", ["sqlite", "postgresql"])
def test_a_resume_point_that_is_not_an_item_id_is_refused(daemon, on, request):
    # 2**31 is past PostgreSQL's integer ids: the database would fail the query, logged as an error.
    server = daemon() if on == "sqlite" else daemon("--db", request.getfixturevalue("pg_url"))
    for resume in ["-1", "x", "1_0", "%2B3", str(2**31), "99999999999999999999999"]:
        for how in ({"headers": {"Last-Event-ID": resume}}, {"path": f"/v1/events?last_event_id={resume}"}):
            stream = Events(server.http_port, **how)
            assert stream.status == 400, (resume, how)
            assert json.loads(stream.response.read())["detail"] == "Last-Event-ID must be an item id", (resume, how)
    stream = Events(server.http_port, headers={"Last-Event-ID": "+3"})  # int() would take it
    assert stream.status == 400
    assert not [line for line in server.drained_log() if " critical " in line or " error " in line]


def test_a_removed_client_s_stream_ends_saying_why(daemon, notifctl):
    server = daemon()
    token = notifctl("client", "add", "kiosk").stdout.splitlines()[-1]
    stream = Events(server.http_port, headers={"Authorization": f"Bearer {token}"})
    notifctl("client", "remove", "kiosk")
    assert stream.next() == {"event": "error", "data": {"detail": "client removed"}}
    with pytest.raises(ConnectionError):
        stream.next()


def test_the_tutorial_session_over_a_websocket(daemon, notifctl):
    server = daemon()
    for type_name, text in transcript.POSTS_BEFORE:
        notifctl("add", type_name, text)
    with connect(f"ws://127.0.0.1:{server.http_port}/v1/ws", open_timeout=TIMEOUT) as ws:
        transcript.replay(MessageLines(ws), lambda type_name, text: notifctl("add", type_name, text))


class MessageLines:
    """The transcript's line client over a WebSocket: one message is one line."""

    def __init__(self, ws) -> None:
        self.ws = ws

    def send(self, line: str) -> None:
        self.ws.send(line)

    def read_line(self) -> bytes:
        return self.ws.recv(timeout=TIMEOUT).encode() + b"\r\n"


def test_websocket_bad_input_gets_the_line_protocol_s_errors(daemon):
    server = daemon()
    with connect(f"ws://127.0.0.1:{server.http_port}/v1/ws", open_timeout=TIMEOUT, max_size=None) as ws:
        ws.send("x" * 5000)
        assert ws.recv(timeout=TIMEOUT) == "ERR line too long"
        ws.send("bogus")
        assert ws.recv(timeout=TIMEOUT) == "ERR unknown command"
        ws.send("random?")
        assert ws.recv(timeout=TIMEOUT).isdigit()  # still served
        ws.send(b"random?")  # binary: refused, the socket closes
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd.code == 4003


@pytest.mark.parametrize("message, code", [
    ("x" * 70_000, 1009),  # far over the line limit: refused by the framing, unread
    (b"\x81\x82" + b"\x00" * 4 + b"\xff\xfe", 1007),  # a text frame that is not UTF-8 (masked, raw)
])
def test_a_websocket_protocol_error_is_closed_with_its_code_not_dropped(daemon, message, code):
    server = daemon()
    with connect(f"ws://127.0.0.1:{server.http_port}/v1/ws", open_timeout=TIMEOUT, max_size=None) as ws:
        if isinstance(message, bytes):
            ws.socket.sendall(message)  # below the client library, which would refuse to send it
        else:
            ws.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    # The client was told; a client's bad frames do not write the server's log.
    assert not [line for line in server.drained_log() if "autobahn" in line]


def test_a_page_from_another_origin_cannot_open_a_websocket(daemon, tmp_path):
    server = daemon()
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.http_port}/v1/ws", origin="https://evil.example", open_timeout=TIMEOUT)
    response = refused.value.response
    assert (response.status_code, response.reason_phrase, response.headers["content-type"]) == (
        403, "Forbidden", "application/problem+json")
    assert json.loads(response.body)["detail"] == "origin not allowed (http.cors_origins)"
    own = f"http://127.0.0.1:{server.http_port}"
    with connect(f"ws://127.0.0.1:{server.http_port}/v1/ws", origin=own, open_timeout=TIMEOUT) as ws:
        ws.send("random?")
        assert ws.recv(timeout=TIMEOUT).isdigit()


@pytest.mark.parametrize("headers, detail", [
    ({"Sec-WebSocket-Key": "bad", "Sec-WebSocket-Version": "13"}, 'bad Sec-WebSocket-Key (length must be 24 ASCII chars) "bad"'),
    ({"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, "WebSocket connection denied - Hixie76 protocol not supported."),
])
def test_a_refused_handshake_is_problem_json_then_closed(daemon, headers, detail):
    server = daemon()
    page = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT)
    page.request("GET", "/v1/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade", **headers})
    answer = page.getresponse()
    assert (answer.status, answer.reason, answer.getheader("content-type"), answer.getheader("connection")) == (
        400, "Bad Request", "application/problem+json", "close")
    assert json.loads(answer.read()) == {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": detail}


def test_a_plain_request_for_the_websocket_is_426_problem_json_and_the_connection_serves_on(daemon):
    server = daemon()
    page = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT)
    page.request("GET", "/v1/ws")
    answer = page.getresponse()
    assert (answer.status, answer.reason, answer.getheader("upgrade"), answer.getheader("content-type")) == (
        426, "Upgrade Required", "websocket", "application/problem+json")
    assert json.loads(answer.read())["detail"] == "this is a WebSocket endpoint: connect with a WebSocket client"
    page.request("GET", "/healthz")  # still an HTTP connection, counted as one
    assert page.getresponse().status == 200


def test_turning_anonymous_clients_off_ends_their_streams_and_sockets(daemon, tmp_path):
    config = tmp_path / "notifd.toml"
    config.write_text("")
    server = daemon("--config", str(config))
    stream = Events(server.http_port)
    with connect(f"ws://127.0.0.1:{server.http_port}/v1/ws", open_timeout=TIMEOUT) as ws:
        ws.send("notif")
        assert ws.recv(timeout=TIMEOUT) == "will send notifs"
        config.write_text("[auth]\nanonymous = false\n")
        server.proc.send_signal(signal.SIGHUP)
        assert ws.recv(timeout=TIMEOUT) == "ERR anonymous clients are no longer served; hello first"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
    assert stream.next() == {"event": "error", "data": {"detail": "anonymous clients are no longer served"}}


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_events_on_the_wire_are_framed_for_the_client_s_http_version(daemon, notifctl, version):
    # Events are written straight to the socket, not through twisted.web's Request.write:
    # HTTP/1.1 gets each one as a chunk, HTTP/1.0 (no chunked encoding) gets the bare bytes.
    server = daemon()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET /v1/events?types=classified {version}\r\nHost: localhost\r\n\r\n".encode())
        received = b""
        while b": notifd events\n\n" not in received:
            received += sock.recv(65536)
        item_id = int(notifctl("add", "classified", "Vélo").stdout)
        head, _, body = received.partition(b"\r\n\r\n")
        event = json.dumps({"id": item_id, "type": "classified", "text": "Vélo"}, ensure_ascii=False)[:-1]
        while event.encode() not in body or not body.endswith(b"\n\n" if version == "HTTP/1.0" else b"\n\n\r\n"):
            body += sock.recv(65536)
    comment = b": notifd events\n\n"
    if version == "HTTP/1.1":
        assert b"transfer-encoding: chunked" in head.lower()
        chunks, rest = [], body
        while rest:  # size CRLF data CRLF, each event one chunk
            size, _, rest = rest.partition(b"\r\n")
            chunks.append(rest[: int(size, 16)])
            assert rest[int(size, 16): int(size, 16) + 2] == b"\r\n"
            rest = rest[int(size, 16) + 2:]
        assert chunks[0] == comment and len(chunks) == 2
        event_bytes = chunks[1]
    else:
        assert b"transfer-encoding" not in head.lower()
        assert body.startswith(comment)
        event_bytes = body[len(comment):]
    lines = event_bytes.decode().split("\n")
    assert lines[:2] == [f"id: {item_id}", "event: classified"] and lines[-2:] == ["", ""]
    assert json.loads(lines[2].removeprefix("data: "))["text"] == "Vélo"
