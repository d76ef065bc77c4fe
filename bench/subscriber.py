# One subscriber process of the benchmark: holds many idle client connections to one
# target and reports when each of them received a message, timed by the kernel.
#
# Run by the coordinator (`python -m bench.subscriber`), driven by JSON lines on stdin,
# answering JSON lines on stdout (see `bench.wire.encode_command`). One plain epoll loop
# serves every target the same way, so the measuring side costs the same for all.
#
# Receipt times come from SO_TIMESTAMPNS: the kernel stamps each segment when it reaches
# the socket (CLOCK_REALTIME), so a busy subscriber process that reads late does not make
# a target look slow. The coordinator compares them with time.time_ns() at the publish.
from __future__ import annotations

import os
import resource
import select
import socket
import struct
import sys
import time

from bench import wire

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")
_ANC = socket.CMSG_SPACE(_TIMESPEC.size)
CHUNK = 250  # connections opened (and their handshakes pipelined) at a time


class Target:
    """How to subscribe on one target and count messages in what it sends."""

    def __init__(self, kind: str, path: str = "") -> None:
        self.kind = kind
        self.path = path  # sse: the event stream's path

    def handshake(self, sock: socket.socket, index: int, prefix: str) -> bytes:
        if self.kind == "sse":
            return wire.sse_subscribe(self.path)
        if self.kind in ("notifd", "anchor"):
            return wire.NOTIFD_SUBSCRIBE
        if self.kind == "redis":
            return wire.REDIS_SUBSCRIBE
        if self.kind == "mqtt":
            return wire.mqtt_connect(f"{prefix}-{index}") + wire.mqtt_subscribe()
        if self.kind == "nats":
            return wire.NATS_SUBSCRIBE
        raise ValueError(self.kind)

    def handshake_done(self, data: bytes) -> bool:
        if self.kind == "sse":
            if b"\r\n\r\n" not in data:
                return False
            if wire.http_status(data) != 200:
                raise ConnectionError(f"the event stream was refused: {data[:200]!r}")
            return True
        if self.kind in ("notifd", "anchor"):
            return wire.NOTIFD_SUBSCRIBED in data
        if self.kind == "redis":
            return wire.redis_subscribed(data)
        if self.kind == "mqtt":
            return data.startswith(wire.MQTT_CONNACK) and wire.mqtt_suback() in data
        if self.kind == "nats":
            return data.endswith(wire.NATS_PONG)
        raise ValueError(self.kind)

    def messages(self, data: bytes) -> int:
        if self.kind == "sse":
            return wire.sse_events(data)
        if self.kind in ("notifd", "anchor"):
            return wire.notifd_notifications(data)
        if self.kind == "redis":
            return data.count(b"$7\r\nmessage\r\n")
        if self.kind == "mqtt":
            return wire.mqtt_publishes(data)
        return wire.nats_messages(data)

    def reply(self, data: bytes, messages: int) -> bytes:
        """What a well-behaved client answers at once (keep-alives only)."""
        if self.kind == "nats":
            return wire.NATS_PONG * wire.nats_pings(data)
        return b""


class Subscribers:
    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.socks: dict[int, socket.socket] = {}
        self.kinds: dict[int, Target] = {}  # fd -> the protocol it speaks
        self.groups: dict[str, set[int]] = {}  # target name -> its fds (several targets at once)
        self.ack = "round"  # notifd: "immediate" answers OK on receipt, "round" on the `ack` command
        self.owed: set[int] = set()  # notifd sockets with a notification not yet acknowledged
        self.stamped = True
        self.unexpected = 0

    # --- connecting -------------------------------------------------------------------------

    def connect(self, group: str, target: str, host: str, port: int, count: int, prefix: str, path: str = "") -> int:
        kind = Target(target, path)
        fds = self.groups.setdefault(group, set())
        made = 0
        while made < count:
            batch = []
            for i in range(made, min(count, made + CHUNK)):
                sock = socket.create_connection((host, port), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                # Close with RST: thousands of TIME_WAITs would only slow the next run.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.sendall(kind.handshake(sock, i, prefix))
                batch.append(sock)
            for sock in batch:
                data = b""
                while not kind.handshake_done(data):
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError(f"{target} closed during the handshake: {data!r}")
                    data += chunk
                sock.setblocking(False)
                self.socks[sock.fileno()] = sock
                self.kinds[sock.fileno()] = kind
                fds.add(sock.fileno())
                self.epoll.register(sock.fileno(), select.EPOLLIN)
            made += len(batch)
        return made

    # --- reading ------------------------------------------------------------------------------

    def read(self, fd: int) -> tuple[int, int]:
        """Read what is there; returns (messages, kernel receipt time in ns)."""
        sock = self.socks[fd]
        kind = self.kinds[fd]
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(65536, _ANC)
        except (BlockingIOError, InterruptedError):
            return 0, 0
        if not data:
            raise ConnectionError(f"{kind.kind} closed a subscriber connection")
        stamp = 0
        for level, cmsg_type, payload in ancdata:
            if level == socket.SOL_SOCKET and cmsg_type == SO_TIMESTAMPNS:
                seconds, nanos = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
                stamp = seconds * 1_000_000_000 + nanos
        if not stamp:
            self.stamped = False
            stamp = time.time_ns()
        messages = kind.messages(data)
        answer = kind.reply(data, messages)
        if messages and kind.kind == "notifd":
            if self.ack == "immediate":
                answer += wire.NOTIFD_ACK
            else:
                self.owed.add(fd)
        if answer:
            sock.send(answer)
        return messages, stamp

    def send_acks(self) -> int:
        owed, self.owed = self.owed, set()
        for fd in owed:
            self.socks[fd].send(wire.NOTIFD_ACK)
        return len(owed)

    def settle(self, seconds: float) -> int:
        """Read whatever arrives for a while (backlog notifications, keep-alives)."""
        deadline = time.monotonic() + seconds
        seen = 0
        while (left := deadline - time.monotonic()) > 0:
            for fd, _ in self.epoll.poll(left):
                if fd in self.socks:
                    seen += self.read(fd)[0]
        self.send_acks()
        return seen

    def close(self, group: str | None = None) -> None:
        for fd in list(self.groups.pop(group, ()) if group is not None else self.socks):
            self.epoll.unregister(fd)
            self.socks.pop(fd).close()
            self.kinds.pop(fd)
            self.owed.discard(fd)
        if group is None:
            self.groups.clear()


class Channel:
    """JSON lines on stdin/stdout with the coordinator."""

    def __init__(self) -> None:
        self.buffer = b""

    def lines(self) -> list[dict]:
        data = os.read(0, 65536)
        if not data:
            raise SystemExit(0)  # the coordinator went away
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        return [wire.decode_command(line) for line in complete if line.strip()]

    @staticmethod
    def say(command: str, **fields) -> None:
        os.write(1, wire.encode_command(command, **fields))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_round(subs: Subscribers, channel: Channel, group: str) -> None:
    """Wait until every connection of `group` received one message, or the coordinator says collect."""
    first: dict[int, int] = {}
    stamps: list[int] = []
    members = subs.groups.get(group, set())
    total = len(members)
    subs.epoll.register(0, select.EPOLLIN)
    try:
        channel.say("armed")
        collect = False
        while len(first) < total and not collect:
            for fd, _ in subs.epoll.poll(1.0):
                if fd == 0:
                    collect = any(cmd["cmd"] == "collect" for cmd in channel.lines())
                    continue
                messages, stamp = subs.read(fd)
                if messages and fd not in first and fd in members:
                    first[fd] = stamp
                    stamps.append(stamp)
                elif messages:
                    subs.unexpected += messages
    finally:
        subs.epoll.unregister(0)
    channel.say(
        "round",
        got=len(first),
        missing=total - len(first),
        first=min(stamps) if stamps else 0,
        last=max(stamps) if stamps else 0,
        stamped=subs.stamped,
        unexpected=subs.unexpected,
    )


def run_sustained(subs: Subscribers, channel: Channel) -> None:
    """Acknowledge at once and keep every receipt time until the coordinator says stop."""
    receipts: dict[int, list[int]] = {fd: [] for fd in subs.socks}
    subs.ack = "immediate"
    subs.epoll.register(0, select.EPOLLIN)
    stop = None
    try:
        channel.say("sustaining")
        while stop is None:
            for fd, _ in subs.epoll.poll(1.0):
                if fd == 0:
                    for cmd in channel.lines():
                        if cmd["cmd"] == "stop":
                            stop = cmd
                    continue
                messages, stamp = subs.read(fd)
                if messages:
                    receipts[fd].append(stamp)
        # What the kernel received (and stamped) before the stop but this busy process had
        # not read yet counts too: read until the sockets are quiet.
        while events := [fd for fd, _ in subs.epoll.poll(0.5) if fd != 0]:
            for fd in events:
                messages, stamp = subs.read(fd)
                if messages:
                    receipts[fd].append(stamp)
    finally:
        subs.epoll.unregister(0)
    # Per post: how long until each connection heard of it (its first notification
    # received after the commit), and the worst of those over this process's connections.
    from bench.stats import sustained_latencies

    worst, unheard = sustained_latencies(stop["commits"], receipts.values())
    channel.say("sustained_done", worst=worst, unheard=unheard, notifications=sum(len(r) for r in receipts.values()))


def run_roundtrips(host: str, port: int, count: int, setup: list[bytes], request: bytes, channel: Channel) -> None:
    """`count` connections, one request in flight each, as fast as the server answers."""
    epoll = select.epoll()
    socks = {}
    for i in range(count):
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if setup:
            sock.sendall(setup[i])
            reply = b""
            while not reply.endswith(b"\n"):
                reply += sock.recv(4096)
            if not reply.startswith(b"OK"):
                raise ConnectionError(f"setup refused: {reply!r}")
        sock.setblocking(False)
        socks[sock.fileno()] = sock
    channel.say("ready")
    commands: list[dict] = []
    while not commands:
        commands = channel.lines()
    duration = commands[0]["seconds"]
    partial = {fd: b"" for fd in socks}
    answered = 0
    cpu0 = cpu_seconds()
    start = time.monotonic()
    end = start + duration
    for fd, sock in socks.items():
        sock.send(request)
        epoll.register(fd, select.EPOLLIN)
    while (now := time.monotonic()) < end:
        for fd, _ in epoll.poll(end - now):
            data = socks[fd].recv(65536)
            if not data:
                raise ConnectionError("the server closed a round-trip connection")
            data = partial[fd] + data
            replies = data.count(b"\n")
            partial[fd] = data[data.rfind(b"\n") + 1 :]
            if replies:
                answered += replies
                socks[fd].send(request)
    channel.say("roundtrips", answered=answered, seconds=time.monotonic() - start, cpu=cpu_seconds() - cpu0)
    for sock in socks.values():
        sock.close()


def run_http_posts(host: str, port: int, count: int, request: bytes, channel: Channel) -> None:
    """`count` keep-alive connections, one POST in flight each, as fast as the server answers.

    A connection the server closes (`Connection: close`, after its requests per connection)
    is opened again, as an HTTP client library would. Reports the statuses and each
    request's time from its send to its whole response.
    """

    def open_one() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.setblocking(False)
        return sock

    epoll = select.epoll()
    socks = [open_one() for _ in range(count)]
    channel.say("ready")
    commands: list[dict] = []
    while not commands:
        commands = channel.lines()
    duration = commands[0]["seconds"]
    conns = {sock.fileno(): (sock, wire.HttpResponses()) for sock in socks}
    sent_at: dict[int, int] = {}
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    reconnects = 0
    cpu0 = cpu_seconds()
    start = time.monotonic()
    end = start + duration

    def send(fd: int) -> None:
        sent_at[fd] = time.perf_counter_ns()
        conns[fd][0].send(request)

    for fd in conns:
        epoll.register(fd, select.EPOLLIN)
        send(fd)
    while (now := time.monotonic()) < end:
        for fd, _ in epoll.poll(end - now):
            sock, responses = conns[fd]
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed a publisher's connection mid-request")
            for status, close in responses.feed(data):
                latencies.append((time.perf_counter_ns() - sent_at[fd]) / 1e6)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if close:
                    epoll.unregister(fd)
                    sock.close()
                    del conns[fd]
                    sock = open_one()
                    fd = sock.fileno()
                    conns[fd] = (sock, wire.HttpResponses())
                    epoll.register(fd, select.EPOLLIN)
                    reconnects += 1
                send(fd)
    elapsed = time.monotonic() - start
    channel.say("http_posts", statuses=statuses, seconds=elapsed, cpu=cpu_seconds() - cpu0, reconnects=reconnects,
                latencies=[round(ms, 3) for ms in latencies])
    for sock, _ in conns.values():
        sock.close()


def main() -> None:
    # Several targets' subscribers at once: raise the descriptor limit as far as allowed.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (200_000, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
            break
        except (ValueError, OSError):
            continue
    subs = Subscribers()
    channel = Channel()
    channel.say("hello", pid=os.getpid())
    while True:
        for cmd in channel.lines():
            name = cmd["cmd"]
            if name == "connect":
                n = subs.connect(cmd["group"], cmd["target"], cmd["host"], cmd["port"], cmd["count"], cmd["prefix"],
                                 cmd.get("path", ""))
                subs.ack = cmd.get("ack", "round")
                channel.say("connected", count=n)
            elif name == "settle":
                channel.say("settled", messages=subs.settle(cmd["seconds"]))
            elif name == "arm":
                run_round(subs, channel, cmd["group"])
            elif name == "ack":
                channel.say("acked", count=subs.send_acks())
            elif name == "sustained":
                run_sustained(subs, channel)
            elif name == "roundtrips":
                setup = [line.encode() for line in cmd.get("setup", [])]
                run_roundtrips(cmd["host"], cmd["port"], cmd["count"], setup, cmd["request"].encode(), channel)
            elif name == "http_posts":
                run_http_posts(cmd["host"], cmd["port"], cmd["count"], cmd["request"].encode("latin-1"), channel)
            elif name == "cpu":
                channel.say("cpu", seconds=cpu_seconds())
            elif name == "close":
                subs.close(cmd.get("group"))
                channel.say("closed")
            elif name == "exit":
                subs.close()
                return
            else:
                channel.say("error", message=f"unknown command {name}")


if __name__ == "__main__":
    sys.exit(main())
