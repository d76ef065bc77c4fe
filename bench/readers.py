# One reader process of `sustained-read`: many named clients, each running the tutorial's
# loop over the line protocol, in one plain epoll loop (as bench/subscriber.py does for
# idle subscribers), so that the client side is not what is measured.
#
#   hello NAME TOKEN -> OK;  notif -> will send notifs;
#   on `notif: classified`: stop_notif -> OK (notif lines that raced it are skipped),
#   then `classified?` until the empty line (every answer timestamped), then notif again.
#
# Each item's text is `bench ad SEQ`; the coordinator knows when SEQ was committed. Times
# are the kernel's receipt times (SO_TIMESTAMPNS, CLOCK_REALTIME), as in bench/subscriber.py.
# What was read, and when, goes to binary files the coordinator reads at the end (a
# 5-minute run holds millions of reads, too many for the JSON channel):
#   reads-PID.bin    int64 triples  (client, seq, receipt ns)
#   notifs-PID.bin   int64 quads    (client, receipt ns, seq of the first item read after it
#                                    or -1, 1 if it came with `will send notifs` else 0)
#
# Driven by JSON lines on stdin (bench/workers.py), answering JSON lines on stdout:
#   connect {clients: [[host, port, name, token], ...]} -> connected, once every client listens
#   start {start_ns, minutes} -> started     (queries are counted per minute from start_ns)
#   stop {directory} -> stopped {queries, empty, reads, notifs, errors, foreign}
#   cpu -> cpu {seconds};  exit
from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time
from array import array

from bench.subscriber import _ANC, _TIMESPEC, SO_TIMESTAMPNS, Channel, cpu_seconds

HELLO, ENTERING, LISTENING, STOPPING, DRAINING = "hello", "entering", "listening", "stopping", "draining"
TYPE = b"classified"
PREFIX = b"bench ad "


class Record:
    """What every client of this process read and was notified of."""

    def __init__(self) -> None:
        self.reads = array("q")
        self.notifs = array("q")
        self.start_ns = 0
        self.minutes = 0  # queries before start_ns are not counted; after the last minute, in it
        self.queries: list[int] = []
        self.empty = 0
        self.foreign = 0  # answers that are not `bench ad SEQ`

    def begin(self, start_ns: int, minutes: int) -> None:
        self.start_ns, self.minutes = start_ns, minutes
        self.queries = [0] * minutes

    def queried(self, now_ns: int) -> None:
        if self.minutes and now_ns >= self.start_ns:
            self.queries[min(self.minutes - 1, (now_ns - self.start_ns) // 60_000_000_000)] += 1

    def read(self, client: int, text: bytes, stamp: int) -> int | None:
        if not text.startswith(PREFIX) or not text[len(PREFIX):].isdigit():
            self.foreign += 1
            return None
        seq = int(text[len(PREFIX):])
        self.reads.extend((client, seq, stamp))
        return seq

    def notified(self, client: int, stamp: int, on_entering: bool) -> int:
        self.notifs.extend((client, stamp, -1, int(on_entering)))
        return len(self.notifs) // 4 - 1

    def first_read(self, notif: int, seq: int) -> None:
        self.notifs[4 * notif + 2] = seq


class TutorialClient:
    """One named client running the tutorial's loop; `received` returns what it answers."""

    def __init__(self, index: int, name: str, token: str, record: Record) -> None:
        self.index = index
        self.greeting = f"hello {name} {token}\r\n".encode()
        self.record = record
        self.state = HELLO
        self.buffer = b""
        self.notif: int | None = None  # the notification whose drain has not read an item yet
        self.listened = False  # said `will send notifs` at least once

    def received(self, data: bytes, stamp: int, now_ns: int) -> bytes:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        out = []
        on_entering = False  # lines after `will send notifs` in the same chunk: announced on entering
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.startswith(b"ERR"):
                raise ConnectionError(f"client {self.index} in state {self.state}: {line.decode(errors='replace')}")
            if self.state == LISTENING and line.startswith(b"notif: "):
                if line[7:] != TYPE:
                    out.append(b"OK\r\n")  # another type (none is posted): acknowledged, not read
                    continue
                self.notif = self.record.notified(self.index, stamp, on_entering)
                self.state = STOPPING
                out.append(b"stop_notif\r\n")
            elif self.state == STOPPING:
                if line == b"OK":
                    self.state = DRAINING
                    self.record.queried(now_ns)
                    out.append(TYPE + b"?\r\n")
                elif not line.startswith(b"notif: "):  # a notification that raced stop_notif is skipped
                    raise ConnectionError(f"client {self.index}: {line!r} after stop_notif")
            elif self.state == DRAINING:
                if line:
                    seq = self.record.read(self.index, line, stamp)
                    if self.notif is not None and seq is not None:
                        self.record.first_read(self.notif, seq)
                        self.notif = None
                    self.record.queried(now_ns)
                    out.append(TYPE + b"?\r\n")
                else:
                    self.record.empty += 1
                    self.notif = None
                    self.state = ENTERING
                    out.append(b"notif\r\n")
            elif self.state == ENTERING and line == b"will send notifs":
                self.state = LISTENING
                self.listened = True
                on_entering = True
            elif self.state == HELLO and line == b"OK":
                self.state = ENTERING
                out.append(b"notif\r\n")
            else:
                raise ConnectionError(f"client {self.index} in state {self.state}: unexpected {line!r}")
        return b"".join(out)


def _receive(sock: socket.socket) -> tuple[bytes, int]:
    data, ancdata, _flags, _addr = sock.recvmsg(65536, _ANC)
    stamp = 0
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanos = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
            stamp = seconds * 1_000_000_000 + nanos
    return data, stamp or time.time_ns()


def _send(sock: socket.socket, data: bytes) -> None:
    sent = sock.send(data)
    if sent < len(data):  # the kernel's buffer is full (never with lines this short): finish blocking
        sock.setblocking(True)
        sock.sendall(data[sent:])
        sock.setblocking(False)


def main() -> None:
    record = Record()
    channel = Channel()
    epoll = select.epoll()
    epoll.register(0, select.EPOLLIN)
    socks: dict[int, socket.socket] = {}
    clients: dict[int, TutorialClient] = {}
    connecting = False
    channel.say("hello", pid=os.getpid())
    while True:
        for fd, _ in epoll.poll(1.0):
            if fd != 0:
                data, stamp = _receive(socks[fd])
                if not data:
                    raise ConnectionError(f"notifd closed client {clients[fd].index}")
                answer = clients[fd].received(data, stamp, time.time_ns())
                if answer:
                    _send(socks[fd], answer)
                continue
            for cmd in channel.lines():
                name = cmd["cmd"]
                if name == "connect":
                    for index, (host, port, client_name, token) in enumerate(cmd["clients"], start=cmd["first"]):
                        sock = socket.create_connection((host, port), timeout=30)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        sock.setblocking(False)
                        socks[sock.fileno()] = sock
                        clients[sock.fileno()] = client = TutorialClient(index, client_name, token, record)
                        epoll.register(sock.fileno(), select.EPOLLIN)
                        _send(sock, client.greeting)
                    connecting = True
                elif name == "start":
                    record.begin(cmd["start_ns"], cmd["minutes"])
                    channel.say("started")
                elif name == "stop":
                    directory = cmd["directory"]
                    with open(os.path.join(directory, f"reads-{os.getpid()}.bin"), "wb") as f:
                        record.reads.tofile(f)
                    with open(os.path.join(directory, f"notifs-{os.getpid()}.bin"), "wb") as f:
                        record.notifs.tofile(f)
                    channel.say("stopped", queries=record.queries, empty=record.empty, reads=len(record.reads) // 3,
                                notifs=len(record.notifs) // 4, foreign=record.foreign)
                elif name == "cpu":
                    channel.say("cpu", seconds=cpu_seconds())
                elif name == "exit":
                    for sock in socks.values():
                        sock.close()
                    return
                else:
                    channel.say("error", message=f"unknown command {name}")
        if connecting and all(client.listened for client in clients.values()):
            connecting = False
            channel.say("connected", count=len(clients))


if __name__ == "__main__":
    sys.exit(main())
