"""The HTTP API against a real notifd: posting with publisher tokens, reading with named
clients' cursors, the same words as notifctl, group commits, and types a client may read."""
from __future__ import annotations

import http.client
import json
import re
import sqlite3
import threading
import time

import pytest

from tests.integration.collector import collector_config, delivered_ids
from tests.integration.conftest import TIMEOUT, DaemonProcess, ensure_database, eventually, run_notifctl

pytestmark = pytest.mark.integration


class Http:
    """Plain requests to one daemon's HTTP port (a new connection each, unless kept)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None,
                token: str | None = None) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if isinstance(body, str):
            body = body.encode()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def post(self, type_name: str, text: str, token: str | None, content_type: str = "text/plain; charset=utf-8"):
        return self.request("POST", f"/v1/items/{type_name}", text, {"Content-Type": content_type}, token)

    def json(self, *args, **kwargs) -> tuple[int, dict]:
        status, headers, body = self.request(*args, **kwargs)
        return status, (json.loads(body) if body else None)


def detail(response) -> tuple[int, str]:
    """(status, detail) of a problem answer, checking it is RFC 9457 problem JSON."""
    status, headers, body = response
    assert headers["content-type"] == "application/problem+json", (status, body)
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"] == "about:blank" and problem["title"]
    return status, problem["detail"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One daemon for the module's requests that must store nothing (each test checks the
    count before and after) and for the hostile requests: a daemon start per case would cost
    more than the cases."""
    db = tmp_path_factory.mktemp("shared") / "notifd.db"
    ensure_database(db)
    token = run_notifctl(db, "token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    server = DaemonProcess(db).start()
    yield server, db, token
    server.stop()


@pytest.fixture
def refusing(shared):
    """(api, token, notifctl on the shared database); after the test, nothing was stored."""
    server, db, token = shared
    before = _count(db)
    yield Http(server.http_port), token, lambda *args, **kwargs: run_notifctl(db, *args, **kwargs)
    assert _count(db) == before, "a refused request stored an item"


@pytest.fixture
def served(daemon, notifctl):
    server = daemon()
    token = notifctl("token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    return server, Http(server.http_port), token


def test_a_post_is_stored_and_heard_as_notifctl_add_is(served, notifctl):
    server, api, token = served
    listener = server.connect()
    assert listener.ask("notif") == "will send notifs"
    status, headers, body = api.post("classified", "Nice appart in the 11e.\n", token)
    assert status == 201 and headers["content-type"] == "application/json"
    item = json.loads(body)
    assert item["type"] == "classified" and item["text"] == "Nice appart in the 11e." and item["created_at"].endswith("Z")
    assert listener.read_line() == b"notif: classified\r\n"  # at once, as after `notifctl add`
    listed = json.loads(notifctl("list", "--json").stdout)
    assert [(i["id"], i["text"]) for i in listed] == [(item["id"], "Nice appart in the 11e.")]
    # `curl -d TEXT` sends a form: its body is the text, as it came.
    status, _, body = api.post("classified", "Studio, 2 rooms", token, "application/x-www-form-urlencoded")
    assert status == 201 and json.loads(body)["text"] == "Studio, 2 rooms"
    assert not any(token in line for line in server.drained_log())  # no token is ever logged


def test_an_idempotency_key_finds_the_first_post(served):
    _, api, token = served
    first = api.post("classified", json.dumps({"text": "once", "id": "order-7"}), token, "application/json")
    again = api.post("classified", json.dumps({"text": "once", "id": "order-7"}), token, "application/json")
    assert first[0] == 201 and again[0] == 200 and json.loads(first[2]) == json.loads(again[2])
    other = api.post("classified", json.dumps({"text": "twice", "id": "order-7"}), token, "application/json")
    assert detail(other) == (409, f"id order-7: key already used by item {json.loads(first[2])['id']} "
                                  "with another type or text")


def test_an_idempotency_key_on_a_drawn_value_finds_the_first_post(daemon, notifctl):
    # An empty text posts a fresh value for `random`: the retry draws another, and must find the first.
    server = daemon()
    token = notifctl("token", "add", "dice", "--publish", "random").stdout.splitlines()[-1]
    api = Http(server.http_port)
    first = api.post("random", json.dumps({"text": "", "id": "draw-1"}), token, "application/json")
    again = api.post("random", json.dumps({"text": "", "id": "draw-1"}), token, "application/json")
    assert (first[0], again[0]) == (201, 200) and json.loads(first[2]) == json.loads(again[2])
    assert len(json.loads(notifctl("list", "--json").stdout)) == 1


GATED = """
import os, time
from notifd import ItemType, hookimpl

def validate(text):
    open(os.environ["GATED_CALLS"], "a").write(text + "\\n")
    while not os.path.exists(os.environ["GATED_OPEN"]):  # blocks its thread until the test opens the gate
        time.sleep(0.01)
    if text == "boom":
        raise RuntimeError("the validator broke")
    return text

@hookimpl
def register_item_types(register):
    register(ItemType(name="gated", validate=validate))
"""


def test_a_post_is_checked_by_its_token_first_and_its_validation_never_blocks_the_daemon(daemon, notifctl, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "gated.py").write_text(GATED)
    calls, gate = tmp_path / "calls", tmp_path / "open"
    env = {"GATED_CALLS": str(calls), "GATED_OPEN": str(gate)}
    server = daemon("--plugins-dir", str(plugins), env=env)
    gated = notifctl("--plugins-dir", str(plugins), "token", "add", "gate", "--publish", "gated").stdout.splitlines()[-1]
    shop = notifctl("token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    api = Http(server.http_port)
    # Without a valid token, nothing of the plugin runs and nothing about the types is told.
    assert detail(api.post("gated", "hello", "not-a-token")) == (401, "unknown token (notifctl token list)")
    assert detail(api.post("secret", "x", "not-a-token")) == (401, "unknown token (notifctl token list)")
    assert detail(api.post("classified", "two\nlines", "not-a-token"))[0] == 401
    assert detail(api.post("random", "not a number", shop)) == (403, "this token may not post random")
    assert detail(api.post("gated", "hello", shop)) == (403, "this token may not post gated")
    assert not calls.exists()
    # A post whose validation waits: the daemon answers others meanwhile.
    answers = []
    posting = threading.Thread(target=lambda: answers.append(api.post("gated", "hello", gated)))
    posting.start()
    eventually(calls.exists)
    client = server.connect()
    assert client.ask("random?").isdigit()
    assert api.post("classified", "meanwhile", shop)[0] == 201
    assert posting.is_alive() and not answers
    gate.touch()
    posting.join(TIMEOUT)
    assert answers[0][0] == 201 and json.loads(answers[0][2])["text"] == "hello"
    # A validator that breaks is the plugin's fault, said in notifctl's words.
    assert detail(api.post("gated", "boom", gated)) == (
        500, "the gated plugin failed to validate the text: RuntimeError: the validator broke")
    assert [i["text"] for i in json.loads(notifctl("list", "--json").stdout)] == ["hello", "meanwhile"]


@pytest.mark.parametrize("text", ["two\nlines", "bell \x07", "é" * 3000, "", "   ", "\u202etxt.exe"])
def test_refusals_use_notifctl_s_words(refusing, text):
    api, token, notifctl = refusing
    refused = notifctl("add", "classified", text, check=False)
    assert refused.returncode == 1
    words = refused.stderr.removeprefix("notifctl: ").rstrip("\n")
    status, said = detail(api.post("classified", json.dumps({"text": text}), token, "application/json"))
    assert said == words
    assert status == (413 if len(text.encode()) > 4096 else 400)


@pytest.mark.parametrize("key, reason", [
    (" ", "must not be empty"),
    ("x" * 201, "is 201 characters, over the limit of 200"),
    ("evil\nnotifctl: a forged line", "contains a newline"),  # keys are echoed in errors
    ("\x1b[31mred", "contains a control character (U+001B)"),
    ("order\u200b-7", "contains an invisible formatting character (U+200B)"),  # would show as order-7
    ("\u202eorder", "contains an invisible formatting character (U+202E)"),
])
def test_bad_idempotency_keys_are_refused_in_notifctl_s_words(refusing, key, reason):
    api, token, notifctl = refusing
    refused = notifctl("add", "--id", key, "classified", "ad", check=False)
    assert (refused.returncode, refused.stderr) == (1, f"notifctl: --id {reason}\n")
    assert detail(api.post("classified", json.dumps({"text": "ad", "id": key}), token, "application/json")) == (
        400, f"id {reason}")


def test_each_error_has_its_status_and_stores_nothing(refusing):
    api, token, _ = refusing
    assert detail(api.post("classified", "x", None)) == (
        401, "no token: send Authorization: Bearer TOKEN (notifctl token add)")
    assert detail(api.post("classified", "x", "not-a-token")) == (401, "unknown token (notifctl token list)")
    assert detail(api.post("random", "7", token)) == (403, "this token may not post random")
    assert detail(api.post("weather", "x", token)) == (404, "unknown item type 'weather' (known: classified, random)")
    assert detail(api.post("classified", "x", token, "image/png"))[0] == 415
    assert detail(api.post("classified", "{not json", token, "application/json")) == (
        400, 'expected a JSON object {"text": "...", "id": "optional key"}')
    assert detail(api.post("classified", b"\xff\xfe", token)) == (400, "text is not valid UTF-8")
    huge = api.request("POST", "/v1/items/classified", b"x" * 100_000, {"Content-Type": "text/plain"}, token)
    assert detail(huge)[0] == 413
    assert detail(api.request("GET", "/v1/items/classified"))[0] == 405
    assert detail(api.request("GET", "/nowhere"))[0] == 404


@pytest.mark.parametrize("chunks", [[30_000], [0x4000] * 10, [0x4000] * 2])
def test_a_chunked_body_refused_with_413_stores_nothing_of_it_or_after_it(shared, refusing, chunks):
    # The whole request in one send: the first chunk fits, a later one passes the limit,
    # and a valid post is pipelined behind. One 413, then the close; nothing is stored.
    import socket

    server, _, token = shared
    head = (b"POST /v1/items/classified HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode()
            + b"\r\nContent-Type: text/plain\r\n")
    body = b"5\r\nhello\r\n" + b"".join(b"%x\r\n%s\r\n" % (size, b"y" * size) for size in chunks) + b"0\r\n\r\n"
    after = head + b"Content-Length: 5\r\n\r\nafter"
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + body + after)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 413 "), answer


def test_a_removed_or_rotated_token_posts_nothing_at_once(served, notifctl):
    _, api, token = served
    assert api.post("classified", "before", token)[0] == 201
    new = notifctl("token", "rotate", "shop").stdout.splitlines()[-1]
    assert detail(api.post("classified", "old token", token))[0] == 401
    assert api.post("classified", "new token", new)[0] == 201
    notifctl("token", "remove", "shop")
    assert detail(api.post("classified", "removed", new))[0] == 401
    assert [i["text"] for i in json.loads(notifctl("list", "--json").stdout)] == ["new token", "before"]
    listed = notifctl("token", "list", "--json").stdout
    assert json.loads(listed) == []


def test_concurrent_posts_are_committed_in_groups(daemon, notifctl, db_path, tmp_path):
    server = daemon("--metrics", "tcp:0:interface=127.0.0.1")
    token = notifctl("token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    api = Http(server.http_port)
    metrics_port = int(re.search(r":(\d+)$", server.wait_for_log(re.compile(r"metrics on http \S+ [\d.]+:\d+")).strip()).group(1))
    # Another program holds the write lock: the first group waits for it, and the posts that
    # come meanwhile queue for the next one.
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    results = []
    threads = [threading.Thread(target=lambda n=n: results.append(api.post("classified", f"ad {n}", token)[0]))
               for n in range(40)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # let them all arrive while the lock is held (a group cannot finish before the release)
    holder.execute("COMMIT")
    holder.close()
    for thread in threads:
        thread.join(TIMEOUT)
    assert results == [201] * 40
    page = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=TIMEOUT)
    page.request("GET", "/metrics")
    text = page.getresponse().read().decode()
    groups = float(next(line.split()[-1] for line in text.splitlines() if line.startswith("notifd_http_post_groups_total")))
    assert groups <= 3  # 40 posts: the first alone, the rest together (or nearly)
    assert len(json.loads(notifctl("list", "--json", "--limit", "100").stdout)) == 40


def test_pipelined_answers_come_whole_and_in_order(shared):
    # A post is answered once its group is stored, in one send() with its length (not
    # chunked); requests pipelined behind it, answered at once or refused, come after it.
    import socket

    server, _, token = shared

    def post(text: str) -> bytes:
        body = text.encode()
        return (b"POST /v1/items/classified HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode()
                + b"\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    requests = post("first") + post("second") + b"GET /v1/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + post("third")
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(requests)
        data = b""
        answers = []
        while len(answers) < 4:
            chunk = sock.recv(65536)
            assert chunk, (answers, data)
            data += chunk
            while b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
                assert b"Transfer-Encoding" not in headers and b"transfer-encoding" not in headers
                length = int(headers.get(b"content-length") or headers[b"Content-Length"])
                if len(rest) < length:
                    break
                answers.append((int(head.split()[1]), json.loads(rest[:length])))
                data = rest[length:]
    assert [status for status, _ in answers] == [201, 201, 404, 201]
    assert [body.get("text") for _, body in answers] == ["first", "second", None, "third"]
    assert answers[0][1]["id"] < answers[1][1]["id"] < answers[3][1]["id"]


# --- reading -------------------------------------------------------------------------------------


def test_next_answers_what_the_line_protocol_would_with_the_same_cursor(daemon, notifctl):
    server = daemon()
    api = Http(server.http_port)
    token = notifctl("client", "add", "kiosk", "--types", "classified").stdout.splitlines()[-1]
    for text in ("first", "second", "third"):
        notifctl("add", "classified", text)
    status, item = api.json("GET", "/v1/items/classified/next", token=token)
    assert status == 200 and item["text"] == "first"
    line = server.connect()
    assert line.ask(f"hello kiosk {token}") == "OK"
    assert line.ask("classified?") == "second"  # the cursor moved over HTTP
    assert line.ask("random?") == "ERR not allowed"  # restricted to classified
    assert line.ask("notif random") == "ERR not allowed"
    assert api.json("GET", "/v1/items/classified/next", token=token)[1]["text"] == "third"
    assert api.request("GET", "/v1/items/classified/next", token=token)[0] == 204  # nothing unread
    assert detail(api.request("GET", "/v1/items/random/next", token=token)) == (403, "not allowed to read random")
    assert detail(api.request("GET", "/v1/items/classified/next", token="wrong")) == (401, "unknown client token")
    # Anonymous: the oldest recent item, every time (no state between requests); random draws.
    assert api.json("GET", "/v1/items/classified/next")[1]["text"] == "first"
    status, drawn = api.json("GET", "/v1/items/random/next")
    assert status == 200 and drawn["id"] is None and drawn["text"].isdigit()


def test_without_anonymous_clients_reads_need_a_token(daemon, notifctl, tmp_path):
    config = tmp_path / "notifd.toml"
    config.write_text("[auth]\nanonymous = false\n")
    server = daemon("--config", str(config))
    api = Http(server.http_port)
    assert detail(api.request("GET", "/v1/items/classified/next"))[0] == 401
    assert detail(api.request("GET", "/v1/events"))[0] == 401
    assert detail(api.request("GET", "/v1/status"))[0] == 401  # it shows the newest items
    # Whoever is refused learns nothing of the types served, whatever the type asked for.
    assert detail(api.request("GET", "/v1/items/nosuch/next"))[0] == 401
    assert detail(api.request("GET", "/v1/items/nosuch/next", token="bogus")) == (401, "unknown client token")
    assert detail(api.request("GET", "/v1/events?types=nosuch"))[0] == 401


def test_failed_tokens_are_limited_per_address_as_failed_hellos_are_and_with_them(daemon, notifctl, tmp_path):
    config = tmp_path / "notifd.toml"
    config.write_text("[limits]\nhello_failures = 3\nhello_window = 600\n")
    server = daemon("--config", str(config))
    token = notifctl("token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    api = Http(server.http_port)
    # Behind a proxy, many publishers share one address: their valid tokens, checked at
    # once (more of them than the failures allowed), all pass.
    tokens = [notifctl("token", "add", f"p{n}", "--publish", "classified").stdout.splitlines()[-1] for n in range(8)]
    answers = []
    threads = [threading.Thread(target=lambda t=t: answers.append(api.post("classified", "at once", t)[0]))
               for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert answers == [201] * 8
    assert api.post("classified", "with the right token", token)[0] == 201  # a good token is no failure
    assert detail(api.post("classified", "x", "guess-1"))[0] == 401
    assert detail(api.request("GET", "/v1/items/classified/next", token="guess-2"))[0] == 401
    assert detail(api.request("GET", "/v1/events", headers={"Authorization": "Bearer guess-3"}))[0] == 401
    # The fourth is not checked at all, on any path, nor is a hello from the same address.
    assert detail(api.post("classified", "x", "guess-4")) == (
        429, "too many failed tokens from your address; try again later")
    assert detail(api.request("GET", "/v1/items/classified/next", token="guess-5"))[0] == 429
    assert server.connect().ask("hello kiosk guess-6") == "ERR too many failed hellos; try again later"


def test_the_api_answers_only_to_its_addresses_localhost_and_the_names_it_is_given(daemon, notifctl, tmp_path):
    # A page whose name was re-pointed at 127.0.0.1 (DNS rebinding) calls with its own Host.
    import socket

    config = tmp_path / "notifd.toml"
    config.write_text('[http]\nhosts = ["notifd.example.com"]\n')
    server = daemon("--config", str(config))
    notifctl("add", "classified", "private")
    api = Http(server.http_port)
    port = server.http_port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "notifd.example.com", f"NOTIFD.example.com.:{port}",
                 f"[::1]:{port}", "app.localhost"):
        assert api.request("GET", "/v1/status", headers={"Host": host})[0] == 200, host
    for path in ("/v1/status", "/", "/healthz", "/v1/items/classified/next", "/v1/events", "/v1/ws"):
        refused = api.request("GET", path, headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"})
        assert detail(refused) == (421, "host 'evil.example' is not served here: notifd answers to IP addresses, "
                                        "localhost and the names in http.hosts"), path
        assert b"private" not in refused[2]
    # A WebSocket handshake too, before any upgrade.
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 421 ")
    # No Host at all: HTTP/1.0 had none (no browser sends it); HTTP/1.1 requires one.
    for version, status in ((b"HTTP/1.0", b" 200 "), (b"HTTP/1.1", b" 400 ")):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /healthz " + version + b"\r\n\r\n")
            assert sock.recv(100)[8:13] == status, version
    # Posting from another host names the host it reaches notifd by.
    token = notifctl("token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    assert api.request("POST", "/v1/items/classified", "x", {"Host": "other.example"}, token)[0] == 421
    assert api.request("POST", "/v1/items/classified", "y", {"Host": "notifd.example.com:8788"}, token)[0] == 201
    assert [i["text"] for i in json.loads(notifctl("list", "--json").stdout)] == ["y", "private"]


# --- limits ---------------------------------------------------------------------------------------


def test_a_request_trickled_byte_by_byte_is_closed_after_the_timeout(daemon, tmp_path):
    config = tmp_path / "notifd.toml"
    config.write_text('[http]\nrequest_timeout = "1s"\n')
    server = daemon("--config", str(config))
    import socket

    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT)
    started = time.monotonic()
    closed = False
    for byte in b"POST /v1/items/classified HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000:
        try:
            sock.sendall(bytes([byte]))
            time.sleep(0.05)
        except OSError:
            closed = True
            break
        if time.monotonic() - started > 5:
            break
    if not closed:
        sock.settimeout(2)
        try:
            closed = sock.recv(100) == b""
        except OSError:
            closed = True
    assert closed and time.monotonic() - started < 5
    assert Http(server.http_port).request("GET", "/healthz")[0] == 200  # others are served
    # A connection that says nothing at all is closed after the same timeout, not the idle one (60 s).
    silent = socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT)
    started = time.monotonic()
    assert silent.recv(100) == b""  # closed, not reset: a client or proxy sees a timeout, not an error
    assert time.monotonic() - started < 5


def test_a_connection_serves_a_bounded_number_of_requests(daemon, tmp_path):
    config = tmp_path / "notifd.toml"
    config.write_text("[http]\nmax_requests_per_connection = 3\n")
    server = daemon("--config", str(config))
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT)
    seen = []
    for _ in range(3):
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        seen.append(response.getheader("connection"))
    assert seen == [None, None, "close"]


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-Filler-%d: y\r\n" % n for n in range(200)),  # too many
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"y" * 20_000 + b"\r\n",  # one line over 16 KiB
    b"POST /v1/items/classified HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n",
    b"POST /v1/items/classified HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    b"\x16\x03\x01 garbage\r\n",
])
def test_malformed_requests_get_a_400_problem_and_are_closed(shared, refusing, head):
    import socket

    server, _, _ = shared
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(head + b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert b"content-type: application/problem+json" in headers.lower()
    assert json.loads(body)["status"] == 400


def test_head_of_the_page_is_its_headers_and_logs_nothing(served):
    server, api, _ = served
    status, headers, body = api.request("HEAD", "/")
    assert (status, body) == (200, b"") and int(headers["content-length"]) > 0
    assert api.request("GET", "/")[0] == 200  # a request after it: the HEAD was answered whole
    assert not [line for line in server.drained_log() if "HEAD" in line]


def test_cors_is_off_unless_the_origin_is_listed(daemon, tmp_path):
    server = daemon()
    api = Http(server.http_port)
    _, headers, _ = api.request("GET", "/v1/status", headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in headers
    config = tmp_path / "notifd.toml"
    config.write_text('[http]\ncors_origins = ["https://shop.example"]\n')
    server = daemon("--config", str(config))
    api = Http(server.http_port)
    _, headers, _ = api.request("GET", "/v1/status", headers={"Origin": "https://shop.example"})
    assert headers["access-control-allow-origin"] == "https://shop.example"
    _, headers, _ = api.request("GET", "/v1/status", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in headers
    status, headers, _ = api.request("OPTIONS", "/v1/items/classified", headers={"Origin": "https://shop.example"})
    assert status == 204 and "authorization" in headers["access-control-allow-headers"]


def test_http_connections_count_against_the_limits(daemon, tmp_path):
    config = tmp_path / "notifd.toml"
    config.write_text("[limits]\nmax_connections_per_address = 2\n")
    server = daemon("--config", str(config))
    held = [server.connect(), http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT)]
    held[1].connect()
    eventually(lambda: Http(server.http_port).request("GET", "/healthz")[0] == 503)
    assert detail(Http(server.http_port).request("GET", "/healthz")) == (
        503, "too many connections from your address; try again later")
    # A WebSocket handshake too: the limit is checked as the connection opens, before any request.
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert detail(Http(server.http_port).request("GET", "/v1/ws", headers=upgrade)) == (
        503, "too many connections from your address; try again later")
    held[1].close()
    eventually(lambda: Http(server.http_port).request("GET", "/healthz")[0] == 200)
    # An open event stream holds its slot as long as it listens.
    stream = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT)
    stream.request("GET", "/v1/events")
    response = stream.getresponse()
    assert response.status == 200 and response.readline() == b": notifd events\n"
    assert detail(Http(server.http_port).request("GET", "/healthz"))[0] == 503
    stream.close()
    eventually(lambda: Http(server.http_port).request("GET", "/healthz")[0] == 200)


# --- hostile input ---------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


_paths = st.sampled_from(["/v1/items/classified", "/v1/items/random", "/v1/items/nope", "/v1/items/classified/next",
                          "/v1/events?types=nope", "/v1/status", "/v1/items", "/v1/x", "/", "/healthz", "/v1/items/%00",
                          "/v1/items/classified/../../etc/passwd"])
_bodies = st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode),
                    st.builds(lambda t, k: json.dumps({"text": t, "id": k}).encode(), st.text(max_size=50),
                              st.one_of(st.none(), st.text(max_size=20))),
                    st.just(b"{}"), st.just(b"[]"), st.just(b'{"text": 5}'))
_types = st.sampled_from([None, "text/plain", "application/json", "application/x-www-form-urlencoded", "image/png",
                          "text/plain; charset=latin-1", "multipart/form-data; boundary=x"])
_auth = st.sampled_from([None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-token", "GOOD", "bearer GOOD"])


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"]), path=_paths, body=_bodies,
       content_type=_types, auth=_auth)
def test_hostile_requests_get_an_answer_in_the_contract_and_store_nothing_unless_accepted(
    shared, method, path, body, content_type, auth
):
    server, db, token = shared
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if auth is not None:
        headers["Authorization"] = auth.replace("GOOD", token)
    before = _count(db)
    if path.startswith("/v1/events") and method == "GET":
        path = "/v1/events?types=nope"  # a stream that would stay open: ask for one that is refused
    status, answer_headers, answer = Http(server.http_port).request(method, path, body if method != "GET" else None,
                                                                    headers)
    assert status in {200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415}, (status, answer)
    if status >= 400 and method != "HEAD":
        assert answer_headers["content-type"] == "application/problem+json", answer
        assert json.loads(answer)["status"] == status
    stored = _count(db) - before
    assert stored == (1 if status == 201 else 0)
    assert server.proc.poll() is None


def _count(db) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM items").fetchone()[0]


# --- on PostgreSQL: every node hears an HTTP post; a failing database stores nothing -------------

def test_an_http_post_reaches_every_node_and_durable_notifier(pg_url, tmp_path):
    from tests.integration.conftest import DaemonProcess, ensure_database, run_notifctl

    ensure_database(pg_url)
    config, delivered = collector_config(tmp_path)
    token = run_notifctl(pg_url, "token", "add", "shop", "--publish", "classified").stdout.splitlines()[-1]
    nodes = [DaemonProcess(pg_url, "--node", name, "--config", str(config)).start() for name in ("a", "b")]
    try:
        listeners = [node.connect() for node in nodes]
        for listener in listeners:
            assert listener.ask("notif") == "will send notifs"
        status, _, body = Http(nodes[0].http_port).post("classified", "Nice appart in the 11e.", token)
        assert status == 201
        item_id = json.loads(body)["id"]
        for listener in listeners:  # the other node too: the NOTIFY was part of the posting transaction
            assert listener.read_line() == b"notif: classified\r\n"
        eventually(lambda: delivered_ids(delivered) == [item_id])
        # A database that fails the transaction: 503, and nothing of the group is stored.
        from tests import pg

        pg.execute(pg_url, """
            CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER refuse BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION refuse();""")
        assert detail(Http(nodes[1].http_port).post("classified", "lost", token)) == (
            503, "database unavailable; nothing was stored, try again")
        assert pg.execute(pg_url, "SELECT count(*) FROM items") == [(1,)]
    finally:
        for node in nodes:
            node.stop()
