"""Multi-node fan-out on PostgreSQL: 3 notifd nodes on one database, thousands of
clients in notification mode spread over them by several subscriber processes, posts
committed one by one; for each post, the time from the commit to the first and to the last
`notif:` received, over all clients.

    python bench/multinode.py --clients 3000,10000 [--posts 20] [--nodes 3] [--subscribers 2]

Needs a PostgreSQL server ($NOTIFD_BENCH_POSTGRESQL, a URL of a database to connect to for
CREATE/DROP DATABASE; default postgres@127.0.0.1:5432/postgres): each run creates a database
of its own and drops it. Times are CLOCK_MONOTONIC, which every process on one Linux host
shares. Standalone: it needs only notifd installed (pip install -e '.[postgresql]').
"""
from __future__ import annotations

import argparse
import contextlib
import os
import queue
import re
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ADMIN_URL = os.environ.get("NOTIFD_BENCH_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/postgres")
LISTENING = re.compile(r"notifd listening on TCP [\d.]+:(\d+)")
TIMEOUT = 120.0  # seconds for anything one step may take on a loaded two-core machine


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- subscriber process: `multinode.py --subscriber PORT,PORT,... COUNT` -----------------------------


def subscriber(ports: list[int], count: int) -> None:
    """Open `count` connections over `ports` in notification mode; per round, report the first
    and last arrival of `notif: classified` and answer OK to each."""
    raise_fd_limit()
    socks = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", ports[n % len(ports)]), timeout=TIMEOUT)
        sock.sendall(b"notif\r\n")
        socks.append(sock)
    for sock in socks:
        data = b""
        while not data.endswith(b"\n"):
            data += sock.recv(64)
        assert data == b"will send notifs\r\n", data
        sock.setblocking(False)
    print("ready", flush=True)
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    expected = b"notif: classified\r\n"
    buffers = {sock: b"" for sock in socks}
    for line in sys.stdin:  # one "go" per post: the coordinator is about to commit
        if line.strip() != "go":
            break
        done = 0
        first = last = None
        deadline = time.monotonic() + TIMEOUT
        while done < len(socks):
            if time.monotonic() > deadline:
                print(f"timeout {len(socks) - done}", flush=True)
                return
            for key, _ in selector.select(timeout=1.0):
                sock = key.fileobj
                buffers[sock] += sock.recv(64)
                if buffers[sock].endswith(b"\n"):
                    now = time.clock_gettime(time.CLOCK_MONOTONIC)
                    assert buffers[sock] == expected, buffers[sock]
                    buffers[sock] = b""
                    first = now if first is None else first
                    last = now
                    done += 1
                    sock.send(b"OK\r\n")
        print(f"round {first!r} {last!r}", flush=True)


# --- coordinator ------------------------------------------------------------------------------------


def _script(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


# Thousands of subscribers from one address: the per-address limit is for the network.
CONFIG = "[limits]\nmax_connections = 0\nmax_connections_per_address = 0\n"


class Node:
    """One notifd process on `url`; returns once it listens. Its HTTP API gets a free port
    (the default one would be shared by every node), and so do its metrics with `metrics`."""

    HTTP_ON = re.compile(r"HTTP API and live page on http://[\d.]+:(\d+)/")
    METRICS_ON = re.compile(r"metrics on http TCP [\d.]+:(\d+)")

    def __init__(self, url: str, name: str, metrics: bool = False, command: list[str] | None = None,
                 cwd: str | None = None, config: str = CONFIG) -> None:
        self.config = tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="notifd-bench-")
        self.config.write(config)
        self.config.flush()
        extra = ["--metrics", "tcp:0:interface=127.0.0.1"] if metrics else []
        self.proc = subprocess.Popen(
            [*(command or [_script("notifd")]), "--config", self.config.name, "--db", url, "--node", name,
             "--listen", "tcp:0:interface=127.0.0.1:backlog=1024", "--http", "tcp:0:interface=127.0.0.1", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NOTIFD_CONFIG": "", "NOTIFD_LOG_FORMAT": "text"}, cwd=cwd,
        )
        self.pid = self.proc.pid
        self.log: list[str] = []
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.port = int(self._wait_for(LISTENING).group(1))
        self.http_port = int(self._wait_for(self.HTTP_ON).group(1))
        self.metrics_port = int(self._wait_for(self.METRICS_ON).group(1)) if metrics else None

    def _wait_for(self, pattern: re.Pattern) -> re.Match:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise SystemExit(f"notifd did not log {pattern.pattern!r}: {''.join(self.log)}") from None
            if not line:
                raise SystemExit(f"notifd exited ({self.proc.wait()}): {''.join(self.log)}")
            self.log.append(line)
            if match := pattern.search(line):
                return match

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=TIMEOUT)
        self.config.close()


@contextlib.contextmanager
def postgresql_database(tag: str):
    """A database of its own on the server ($NOTIFD_BENCH_POSTGRESQL), created with notifd's
    schema for the run and dropped after; yields its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    from notifd import db as dbmod

    name = f"notifd_bench_{os.getpid()}_{tag}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
        dbmod.open_engine(dbmod.database_url(url)).dispose()  # the schema
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(total: int, posts: int, node_count: int, subscriber_count: int) -> dict:
    from notifd import db as dbmod
    from notifd import store
    from notifd.posting import Post
    from notifd.wakeup import send_wakeup

    with postgresql_database(str(total)) as url:
        engine = dbmod.open_engine(dbmod.database_url(url))
        nodes, subs = [], []
        try:
            nodes = [Node(url, f"bench-{n}") for n in range(1, node_count + 1)]
            ports = ",".join(str(node.port) for node in nodes)
            share = [total // subscriber_count + (1 if i < total % subscriber_count else 0) for i in range(subscriber_count)]
            started = time.monotonic()
            subs = [
                subprocess.Popen([sys.executable, __file__, "--subscriber", ports, str(count)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for count in share
            ]
            for sub in subs:
                assert sub.stdout.readline().strip() == "ready", "a subscriber failed to connect"
            connect_s = time.monotonic() - started
            firsts, lasts = [], []
            database = dbmod.Database.synchronous(engine)
            for n in range(posts):
                for sub in subs:
                    sub.stdin.write("go\n")
                    sub.stdin.flush()
                database.call(store.post_items, [Post("classified", f"bench ad {n}")])  # as notifctl add
                committed = time.clock_gettime(time.CLOCK_MONOTONIC)
                send_wakeup(engine)
                rounds = [sub.stdout.readline().split() for sub in subs]
                for fields in rounds:
                    if fields[0] != "round":
                        raise SystemExit(f"a subscriber gave up: {' '.join(fields)}")
                firsts.append(min(float(f[1]) for f in rounds) - committed)
                lasts.append(max(float(f[2]) for f in rounds) - committed)
            return {
                "clients": total, "nodes": node_count, "subscribers": subscriber_count, "posts": posts,
                "connect_s": connect_s,
                "first_p50": 1000 * statistics.median(firsts), "first_p99": 1000 * percentile(firsts, 99),
                "last_p50": 1000 * statistics.median(lasts), "last_p99": 1000 * percentile(lasts, 99),
            }
        finally:
            for sub in subs:
                sub.stdin.close()
                sub.wait(timeout=TIMEOUT)
            for node in nodes:
                node.stop()
            engine.dispose()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--subscriber":
        subscriber([int(p) for p in sys.argv[2].split(",")], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="3000,10000", help="total clients per run, comma-separated")
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=2, help="subscriber processes")
    args = parser.parse_args()
    hard = raise_fd_limit()
    totals = [int(n) for n in args.clients.split(",")]
    if max(totals) // args.subscribers + 100 > hard:
        raise SystemExit(f"the file descriptor limit ({hard}) is too low for {max(totals)} clients")
    print(f"{'clients':>8} {'nodes':>5} {'subs':>4} {'posts':>5} {'connect s':>9} "
          f"{'first p50 ms':>12} {'first p99 ms':>12} {'last p50 ms':>11} {'last p99 ms':>11}")
    for total in totals:
        r = run(total, args.posts, args.nodes, args.subscribers)
        print(f"{r['clients']:>8} {r['nodes']:>5} {r['subscribers']:>4} {r['posts']:>5} {r['connect_s']:>9.1f} "
              f"{r['first_p50']:>12.1f} {r['first_p99']:>12.1f} {r['last_p50']:>11.1f} {r['last_p99']:>11.1f}",
              flush=True)


if __name__ == "__main__":
    main()
