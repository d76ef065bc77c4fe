# The wire protocols the benchmark speaks, raw, on plain sockets: notifd (and the
# bare-Twisted anchor, which speaks the same lines), Redis RESP, MQTT 3.1.1, NATS, and
# HTTP/1.1 (posts, and Server-Sent Events for notifd and nginx's nchan).
#
# Speaking them raw keeps every subscriber the same code (one epoll loop, kernel receipt
# times) whatever the target, so no client library's speed or threading is measured.
# Pure functions only: they build bytes and recognise replies, and are unit-tested.
from __future__ import annotations

import json

MESSAGE = b"notif: classified"  # the payload every target fans out: one short line
TOPIC = b"bench"


# --- notifd and the anchor ------------------------------------------------------------

NOTIFD_SUBSCRIBE = b"notif\r\n"
NOTIFD_SUBSCRIBED = b"will send notifs\r\n"
NOTIFD_ACK = b"OK\r\n"


def notifd_notifications(data: bytes) -> int:
    """How many `notif:` lines a chunk holds."""
    return data.count(b"notif: ")


# --- Redis (RESP2 inline commands) ----------------------------------------------------

REDIS_SUBSCRIBE = b"SUBSCRIBE " + TOPIC + b"\r\n"


def redis_publish() -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(TOPIC), TOPIC, len(MESSAGE), MESSAGE)


def redis_subscribed(data: bytes) -> bool:
    """The SUBSCRIBE confirmation (`*3 subscribe bench :1`) is complete."""
    return data.startswith(b"*3\r\n$9\r\nsubscribe\r\n") and data.endswith(b"\r\n") and b"\r\n:" in data


def redis_receivers(reply: bytes) -> int:
    """PUBLISH's integer reply: how many subscribers the message went to."""
    if not reply.startswith(b":"):
        raise ValueError(f"not an integer reply: {reply!r}")
    return int(reply[1:].split(b"\r\n", 1)[0])


# --- MQTT 3.1.1, QoS 0 ------------------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def mqtt_connect(client_id: str) -> bytes:
    # Protocol "MQTT" level 4, clean session, keep-alive 0 (no pings while idle).
    body = _mqtt_string(b"MQTT") + b"\x04\x02\x00\x00" + _mqtt_string(client_id.encode())
    return b"\x10" + _remaining_length(len(body)) + body


MQTT_CONNACK = b"\x20\x02\x00\x00"


def mqtt_subscribe(packet_id: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + _mqtt_string(TOPIC) + b"\x00"
    return b"\x82" + _remaining_length(len(body)) + body


def mqtt_suback(packet_id: int = 1) -> bytes:
    return b"\x90\x03" + packet_id.to_bytes(2, "big") + b"\x00"


def mqtt_publish() -> bytes:
    body = _mqtt_string(TOPIC) + MESSAGE
    return b"\x30" + _remaining_length(len(body)) + body


def mqtt_publishes(data: bytes) -> int:
    """How many PUBLISH packets a chunk holds (QoS 0 messages on our short topic)."""
    count, i = 0, 0
    while i + 2 <= len(data):
        kind = data[i] & 0xF0
        length, shift, j = 0, 0, i + 1
        while j < len(data):
            byte = data[j]
            length |= (byte & 0x7F) << shift
            shift += 7
            j += 1
            if not byte & 0x80:
                break
        if kind == 0x30:
            count += 1
        i = j + length
    return count


# --- NATS -----------------------------------------------------------------------------

NATS_SUBSCRIBE = b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB ' + TOPIC + b" 1\r\nPING\r\n"
NATS_PONG = b"PONG\r\n"


def nats_publish() -> bytes:
    return b"PUB %s %d\r\n%s\r\n" % (TOPIC, len(MESSAGE), MESSAGE)


def nats_connect_publisher() -> bytes:
    return b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n'


def nats_messages(data: bytes) -> int:
    return data.count(b"MSG ")


def nats_pings(data: bytes) -> int:
    return data.count(b"PING\r\n")


# --- HTTP/1.1: posts and Server-Sent Events ------------------------------------------------


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """One request on a keep-alive connection to 127.0.0.1."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http_post(path: str, text: str, token: str | None = None) -> bytes:
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return http_request("POST", path, text.encode(), headers)


def sse_subscribe(path: str) -> bytes:
    return http_request("GET", path, headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"})


def http_status(head: bytes) -> int:
    """The status code of a response's head (`HTTP/1.1 200 OK...`)."""
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {head[:60]!r}")
    return int(parts[1])


def sse_events(data: bytes) -> int:
    """How many events a chunk of an event stream holds: its `id:` lines."""
    return data.count(b"\nid:") + data.startswith(b"id:")


class HttpResponses:
    """Reads the responses of one keep-alive connection from the bytes as they come."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bool]]:
        """The responses completed by `data`: (status, whether the server closes the connection after it)."""
        self.buffer += data
        done = []
        while (response := self._next()) is not None:
            done.append(response)
        return done

    def _next(self) -> tuple[int, bool] | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buffer[:end].lower()
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        fields = {name.strip(): value.strip() for name, value in fields.items()}
        body = end + 4
        if fields.get(b"transfer-encoding") == b"chunked":
            at = body
            while True:  # size line, data, CRLF; a size of 0 ends it (no trailers here)
                line_end = self.buffer.find(b"\r\n", at)
                if line_end < 0:
                    return None
                size = int(self.buffer[at:line_end].split(b";")[0], 16)
                at = line_end + 2 + size + 2
                if len(self.buffer) < at:
                    return None
                if size == 0:
                    break
        else:
            at = body + int(fields.get(b"content-length", b"0"))
            if len(self.buffer) < at:
                return None
        status = http_status(self.buffer[:end])
        self.buffer = self.buffer[at:]
        return status, fields.get(b"connection") == b"close"


# --- the coordinator <-> subscriber process channel: JSON lines -------------------------


def encode_command(command: str, **fields) -> bytes:
    return json.dumps({"cmd": command, **fields}, separators=(",", ":")).encode() + b"\n"


def decode_command(line: bytes) -> dict:
    message = json.loads(line)
    if not isinstance(message, dict) or "cmd" not in message:
        raise ValueError(f"not a command: {line!r}")
    return message
