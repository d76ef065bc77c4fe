# The reliability soak: for a bounded time, thousands of connections opened and
# dropped, hostile bytes mixed with normal traffic, `notifctl add` in a loop, and the daemon
# killed with SIGKILL and restarted again and again. It ends with a report: connections
# served, bad inputs tried, kills survived, items posted (notifctl exited 0) against items
# found in the database (must be equal), and the daemon's peak RSS.
#
#   python -m bench.soak --seconds 60
#
# Not the sustained-load benchmark (`python -m bench sustained`). Not part of the
# test suite: tests/integration/test_faults.py holds the bounded, asserted versions.
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LISTENING = re.compile(r"notifd listening on TCP [\d.]+:(\d+)")
RESULTS = Path(__file__).parent / "results"
# Requests a well-behaved client makes, and what must come back for each.
NORMAL = [(b"random?", re.compile(rb"-?\d+\r\n")), (b"classified?", re.compile(rb".*\r\n")),
          (b"weather?", re.compile(rb"ERR unknown type\r\n"))]


def _program(name: str) -> list[str]:
    beside = Path(sys.executable).with_name(name)
    entry = {"notifd": "notifd_main", "notifctl": "notifctl_main"}[name]
    return [str(beside)] if beside.exists() else [sys.executable, "-c", f"from notifd.cli import {entry}; {entry}()"]


class Daemon:
    """The notifd under test: started, killed and started again on one database."""

    def __init__(self, db_path: Path, config: Path) -> None:
        self.db_path, self.config = db_path, config
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.peak_rss_kib = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*_program("notifd"), "--config", str(self.config), "--db", str(self.db_path),
             # The HTTP API on a free port: its default one may be taken by another daemon.
             "--listen", "tcp:0:interface=127.0.0.1:backlog=1024", "--http", "tcp:0:interface=127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NOTIFD_CONFIG": ""},
        )
        for line in self.proc.stderr:
            if match := LISTENING.search(line):
                self.port = int(match.group(1))
                break
        else:
            raise RuntimeError(f"notifd exited with {self.proc.wait()} before listening")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def sample_rss(self) -> None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):  # the process's peak resident set so far
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))

    def kill(self) -> None:
        self.sample_rss()
        port, self.port = self.port, None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return port

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample_rss()
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values = {"connections": 0, "bad_inputs": 0, "normal_requests": 0, "wrong_replies": 0,
                       "refused_while_down": 0, "posts_acknowledged": 0, "posts_failed": 0}

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.values[name] += n


def _connect(daemon: Daemon, counters: Counters) -> socket.socket | None:
    port = daemon.port
    if port is None:
        return None
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        counters.add("refused_while_down")
        return None
    counters.add("connections")
    return sock


class _Lines:
    """The lines a socket receives, one at a time: two replies may come in one segment."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def readline(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


def churn(daemon: Daemon, counters: Counters, stop: threading.Event, rng: random.Random) -> None:
    """Open and drop connections: politely, abruptly (RST), half-way through a line."""

    def drop(sock: socket.socket, lines: _Lines) -> None:
        how = rng.randrange(3)
        if how == 1:
            sock.sendall(b"classif")  # mid-line
        elif how == 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    _sessions(daemon, counters, stop, drop)


def _sessions(daemon: Daemon, counters: Counters, stop: threading.Event, talk) -> None:
    """Connect, `talk(sock, lines)`, close; again until stopped. A daemon killed under us is expected."""
    while not stop.is_set():
        sock = _connect(daemon, counters)
        if sock is None:
            time.sleep(0.05)  # the daemon is being restarted
            continue
        try:
            sock.settimeout(10)
            talk(sock, _Lines(sock))
        except OSError:
            pass
        finally:
            sock.close()


def hostile(daemon: Daemon, counters: Counters, stop: threading.Event, rng: random.Random) -> None:
    """Garbage: random bytes, invalid UTF-8, NULs, over-long lines; every answer must be ERR or valid."""

    def talk(sock: socket.socket, lines: _Lines) -> None:
        for _ in range(rng.randrange(1, 20)):
            kind = rng.randrange(4)
            if kind == 0:
                line = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b"")
            elif kind == 1:
                line = b"\xff\xfe\x00" * rng.randrange(1, 50)
            elif kind == 2:
                line = b"x" * rng.randrange(4097, 20000)
            else:
                line = rng.choice([b"OK", b"stop_notif", b"hello", b"notif nosuchtype", b"random? now", b""])
            sock.sendall(line + b"\r\n")
            counters.add("bad_inputs")
            reply = lines.readline()
            if not (reply.startswith(b"ERR ") or re.fullmatch(rb"-?\d+\r\n", reply)):
                counters.add("wrong_replies")

    _sessions(daemon, counters, stop, talk)


def normal(daemon: Daemon, counters: Counters, stop: threading.Event, rng: random.Random) -> None:
    """A well-behaved client: queries, and a round of notification mode now and then."""

    def talk(sock: socket.socket, lines: _Lines) -> None:
        for _ in range(rng.randrange(1, 50)):
            request, expected = rng.choice(NORMAL)
            sock.sendall(request + b"\r\n")
            counters.add("normal_requests")
            if not expected.fullmatch(lines.readline()):
                counters.add("wrong_replies")
        sock.sendall(b"notif\r\n")
        if lines.readline() != b"will send notifs\r\n":
            counters.add("wrong_replies")
        sock.sendall(b"stop_notif\r\n")
        while (line := lines.readline()) != b"OK\r\n":  # notifications may come first
            if not line.startswith(b"notif: "):
                counters.add("wrong_replies")
                break

    _sessions(daemon, counters, stop, talk)


def post(db_path: Path, counters: Counters, stop: threading.Event, acknowledged: dict) -> None:
    """`notifctl add` in a loop; the id of every post that exited 0 is remembered."""
    n = 0
    while not stop.is_set():
        text = f"soak {threading.get_ident()} {n}"
        result = subprocess.run(
            [*_program("notifctl"), "--db", str(db_path), "add", "classified", text],
            capture_output=True, text=True, env={**os.environ, "NOTIFD_CONFIG": ""},
        )
        if result.returncode == 0:
            acknowledged[text] = int(result.stdout)
            counters.add("posts_acknowledged")
        else:
            counters.add("posts_failed")
        n += 1


def run(seconds: float, kill_every: float, seed: int) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="notifd-soak-") as tmp:
        db_path = Path(tmp) / "soak.db"
        config = Path(tmp) / "notifd.toml"
        config.write_text("[limits]\nmax_connections_per_address = 0\n")
        daemon = Daemon(db_path, config)
        daemon.start()
        counters, stop, acknowledged = Counters(), threading.Event(), {}
        workers = [
            *(threading.Thread(target=churn, args=(daemon, counters, stop, random.Random(rng.random()))) for _ in range(2)),
            threading.Thread(target=hostile, args=(daemon, counters, stop, random.Random(rng.random()))),
            *(threading.Thread(target=normal, args=(daemon, counters, stop, random.Random(rng.random()))) for _ in range(2)),
            *(threading.Thread(target=post, args=(db_path, counters, stop, acknowledged)) for _ in range(2)),
        ]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        kills = 0
        while time.monotonic() - started < seconds:
            time.sleep(min(rng.uniform(0.5, 1.5) * kill_every, max(0.0, seconds - (time.monotonic() - started))))
            daemon.sample_rss()
            if time.monotonic() - started >= seconds:
                break
            daemon.kill()
            kills += 1
            daemon.start()
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        daemon.stop()

        import sqlite3

        with sqlite3.connect(db_path) as conn:
            stored = dict(conn.execute("SELECT text, id FROM items"))
        found = sum(1 for text, item_id in acknowledged.items() if stored.get(text) == item_id)
        return {
            "seconds": seconds, "seed": seed, **counters.values, "kills_survived": kills,
            "items_posted": len(acknowledged), "items_found": found,
            "max_rss_kib": daemon.peak_rss_kib, "load_average": os.getloadavg(),
        }


def report(result: dict) -> str:
    ok = result["items_posted"] == result["items_found"] and not result["wrong_replies"]
    rows = [
        ("connections served", f"{result['connections']:,}"),
        ("bad inputs tried", f"{result['bad_inputs']:,}"),
        ("normal requests", f"{result['normal_requests']:,}"),
        ("wrong replies", f"{result['wrong_replies']:,}"),
        ("kills survived (SIGKILL + restart)", f"{result['kills_survived']}"),
        ("items posted (notifctl add exited 0)", f"{result['items_posted']:,}"),
        ("items found in the database", f"{result['items_found']:,}"),
        ("posts refused (daemon-independent errors)", f"{result['posts_failed']:,}"),
        ("peak RSS of notifd", f"{result['max_rss_kib'] / 1024:.1f} MiB"),
    ]
    lines = [f"# Reliability soak: {result['seconds']:.0f} s, seed {result['seed']}: {'PASS' if ok else 'FAIL'}", "",
             "| | |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description="notifd's reliability soak")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run [60]")
    parser.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between SIGKILLs [5]")
    parser.add_argument("--seed", type=int, default=1, help="random seed [1]")
    args = parser.parse_args(argv)
    result = run(args.seconds, args.kill_every, args.seed)
    text = report(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "soak.md").write_text(text)
    print(text)
    return 0 if result["items_posted"] == result["items_found"] and not result["wrong_replies"] else 1


if __name__ == "__main__":
    sys.exit(main())
