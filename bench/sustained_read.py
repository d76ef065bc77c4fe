# `sustained-read`: N named clients (default 300) run the tutorial's loop (on `notif:`,
# `stop_notif`, drain `classified?` to the empty line, `notif` again) while items are posted
# at a steady rate (default 20/s) for minutes, on one node over SQLite and on 3 nodes over
# PostgreSQL (clients spread over the nodes). Per minute of posting:
#
#   post→read     from the commit of an item to a client receiving it as the answer to a
#                 `classified?` (the kernel's receipt time), over every client and item:
#                 p50 and p99, so that a run that flips between fast and slow shows it;
#   notification  from the commit to the `notif: classified` that announced it, for the
#                 notifications pushed while a client listened (those that come with
#                 `will send notifs` on re-entering are counted apart: their item was
#                 committed while the client was still draining);
#   database      calls per client read (every call is one transaction, on both engines:
#                 the daemon's `notifd_database_seconds_count`), split by query with
#                 bench/counted_notifd.py: client queries the database answered
#                 (`next_unread`), groups of read marks (`mark_read`), the hub's catch-ups
#                 (`news_after`). A "client read" is one `classified?` sent, the final
#                 empty answer of each drain included;
#   CPU           of the nodes (/proc/PID/stat) and of the reader processes.
#
# Posts are committed by this process as `notifctl add` commits them (store.post_items in
# one durable transaction, then the wake-up); an item's text is `bench ad SEQ`, and SEQ's
# commit time is kept here.
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import urllib.request
from array import array
from pathlib import Path

from bench.multinode import CONFIG, Node, postgresql_database
from bench.stats import percentile, proc_cpu_seconds, prometheus_samples
from bench.targets import REPO, TICKS
from bench.workers import Workers

CLIENTS = 300
RATE = 20.0
SECONDS = 300.0
NODES = 3
DRAIN = 5.0  # seconds after the last post for the clients to read it
# Targets, for every minute (latencies) and for the whole run (the others).
READ_P50_MS, READ_P99_MS, DB_SHARE, NOTIF_P50_MS = 50.0, 200.0, 0.01, 20.0
CALLS = "notifd_bench_database_calls_total"
# Every client comes from one address and says hello at once, and a hello being checked
# counts as failed until it succeeds: the per-address limit is for the network.
READ_CONFIG = CONFIG + "hello_failures = 1000000\n"


class Sample:
    """The nodes' database calls and CPU at one moment."""

    def __init__(self, nodes: list[Node]) -> None:
        self.at = time.monotonic()
        self.calls: dict[str, float] = {}
        self.cpu = []
        for node in nodes:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=30) as answer:
                samples = prometheus_samples(answer.read().decode())
            for name, value in samples.items():
                if name == "notifd_database_seconds_count" or name.startswith(CALLS):
                    self.calls[name] = self.calls.get(name, 0.0) + value
            self.cpu.append(proc_cpu_seconds(Path(f"/proc/{node.pid}/stat").read_text(), TICKS))

    def since(self, before: "Sample") -> dict:
        def calls(query: str | None = None) -> int:
            name = "notifd_database_seconds_count" if query is None else f'{CALLS}{{query="{query}"}}'
            return round(self.calls.get(name, 0.0) - before.calls.get(name, 0.0))

        seconds = max(self.at - before.at, 1e-3)
        total = calls()
        return {
            "seconds": seconds,
            "db_calls": total,
            "db_next_unread": calls("next_unread"),
            "db_mark_read": calls("mark_read"),
            "db_catch_ups": calls("news_after"),
            "node_cpu_percent": [100 * (a - b) / seconds for a, b in zip(self.cpu, before.cpu)],
        }


def minute_of(commit_ns: int, start_ns: int, minutes: int) -> int:
    return max(0, min(minutes - 1, (commit_ns - start_ns) // 60_000_000_000))


def read_latencies(commits: list[int], minutes_of: list[int], minutes: int, reads: array) -> dict:
    """Post→read in ms by minute of the post, from (client, seq, receipt ns) triples.

    A client's first read of an item counts; a second one (a named client may be sent an
    item again) is counted as a duplicate. Reads of a seq never posted are `stray`.
    """
    by_minute: list[list[float]] = [[] for _ in range(minutes)]
    seen: set[int] = set()
    duplicates = stray = 0
    posts = len(commits)
    for i in range(0, len(reads), 3):
        client, seq, stamp = reads[i], reads[i + 1], reads[i + 2]
        if not 0 <= seq < posts:
            stray += 1
            continue
        key = client * posts + seq
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        by_minute[minutes_of[seq]].append((stamp - commits[seq]) / 1e6)
    return {"by_minute": by_minute, "duplicates": duplicates, "stray": stray}


def notification_latencies(commits: list[int], minutes_of: list[int], minutes: int, notifs: array) -> dict:
    """Post→`notif:` in ms by minute of the post, from (client, receipt ns, first seq read, on entering) quads."""
    by_minute: list[list[float]] = [[] for _ in range(minutes)]
    on_entering = without_item = 0
    for i in range(0, len(notifs), 4):
        stamp, seq, entering = notifs[i + 1], notifs[i + 2], notifs[i + 3]
        if entering:
            on_entering += 1
        elif not 0 <= seq < len(commits):
            without_item += 1  # nothing of ours was read after it
        else:
            by_minute[minutes_of[seq]].append((stamp - commits[seq]) / 1e6)
    return {"by_minute": by_minute, "on_entering": on_entering, "without_item": without_item}


def _load(directory: str, prefix: str) -> array:
    found = array("q")
    for file in sorted(Path(directory).glob(f"{prefix}-*.bin")):
        with open(file, "rb") as f:
            found.frombytes(f.read())
    return found


def run_setup(label: str, db: str, node_count: int, clients: int, rate: float, seconds: float, processes: int,
              log) -> dict:
    from notifd import db as dbmod
    from notifd import store
    from notifd.posting import Post
    from notifd.wakeup import send_wakeup

    engine = dbmod.open_engine(dbmod.database_url(db))  # creates the schema (SQLite: the file) first
    nodes: list[Node] = []
    try:
        with engine.begin() as conn:
            tokens = [store.add_client(conn, f"reader-{i}") for i in range(clients)]
        counted = [sys.executable, "-m", "bench.counted_notifd"]
        nodes = [Node(db, f"bench-{n}", metrics=True, command=counted, cwd=str(REPO), config=READ_CONFIG)
                 for n in range(1, node_count + 1)]
        database = dbmod.Database.synchronous(engine)
        minutes = max(1, math.ceil(seconds / 60))
        posts = int(seconds * rate)
        with Workers(processes, module="bench.readers") as workers, \
                tempfile.TemporaryDirectory(prefix="bench-reads-") as directory:
            first = 0
            for proc, count in zip(workers.procs, workers.split(clients)):
                share = [["127.0.0.1", nodes[i % node_count].port, f"reader-{i}", tokens[i]]
                         for i in range(first, first + count)]
                workers.send(proc, "connect", clients=share, first=first)
                first += count
            workers.expect("connected", 300)
            log(f"  {label}: {clients} clients listening on {node_count} node(s); posting {rate:g}/s for {seconds:g} s")
            start_ns = time.time_ns()
            workers.broadcast("start", start_ns=start_ns, minutes=minutes)
            workers.expect("started", 30)
            reader_cpu0 = workers.cpu_seconds()
            samples = [Sample(nodes)]
            start = time.monotonic()
            next_minute = start + 60
            commits: list[int] = []
            for seq in range(posts):
                due = start + seq / rate
                now = time.monotonic()
                if now < due:
                    time.sleep(due - now)
                database.call(store.post_items, [Post("classified", f"bench ad {seq}")])
                commits.append(time.time_ns())
                send_wakeup(engine)
                if time.monotonic() >= next_minute and len(samples) < minutes:
                    samples.append(Sample(nodes))
                    next_minute += 60
                    log(f"    minute {len(samples) - 1}: {samples[-1].since(samples[-2])['db_calls']} database calls")
            elapsed = time.monotonic() - start
            while len(samples) < minutes:  # a last minute the posts ended just before (--seconds not a whole minute)
                samples.append(Sample(nodes))
            time.sleep(DRAIN)
            samples.append(Sample(nodes))
            reader_cpu = workers.cpu_seconds() - reader_cpu0
            reader_seconds = time.monotonic() - start
            workers.broadcast("stop", directory=directory)
            stopped = workers.expect("stopped", 120)
            reads, notifs = _load(directory, "reads"), _load(directory, "notifs")
    finally:
        for node in nodes:
            node.stop()
        engine.dispose()
    minutes_of = [minute_of(commit, start_ns, minutes) for commit in commits]
    read = read_latencies(commits, minutes_of, minutes, reads)
    notified = notification_latencies(commits, minutes_of, minutes, notifs)
    queries = [sum(s["queries"][m] for s in stopped) for m in range(minutes)]
    rows = []
    for m in range(minutes):
        window = samples[m + 1].since(samples[m])
        latencies, notif_ms = read["by_minute"][m], notified["by_minute"][m]
        minute_posts = minutes_of.count(m)
        rows.append({
            "minute": m + 1,
            "posts": minute_posts,
            "reads": len(latencies),
            "unread": clients * minute_posts - len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies) if latencies else None,
            "notifications": len(notif_ms),
            "notif_p50_ms": percentile(notif_ms, 50),
            "notif_p99_ms": percentile(notif_ms, 99),
            "queries": queries[m],
            **window,
        })
    all_notif = [ms for minute in notified["by_minute"] for ms in minute]
    total_queries = sum(queries)
    total = {key: sum(row[key] for row in rows) for key in ("db_calls", "db_next_unread", "db_mark_read", "db_catch_ups")}
    section = {
        "nodes": node_count,
        "clients": clients,
        "posts": posts,
        "rate": posts / elapsed,
        "seconds": elapsed,
        "minutes": rows,
        "queries": total_queries,
        "empty_answers": sum(s["empty"] for s in stopped),
        **total,
        "db_calls_per_read": total["db_calls"] / total_queries if total_queries else None,
        "db_calls_per_read_without_marks": (total["db_calls"] - total["db_mark_read"]) / total_queries if total_queries else None,
        "db_answered_share": total["db_next_unread"] / total_queries if total_queries else None,
        "notif_p50_ms": percentile(all_notif, 50),
        "notif_p99_ms": percentile(all_notif, 99),
        "notifications_pushed": len(all_notif),
        "notifications_on_entering": notified["on_entering"],
        "notifications_without_item": notified["without_item"],
        "unread": sum(row["unread"] for row in rows),
        "duplicates": read["duplicates"],
        "stray": read["stray"],
        "foreign": sum(s["foreign"] for s in stopped),
        "node_cpu_percent": [100 * (b - a) / (samples[-1].at - samples[0].at)
                             for a, b in zip(samples[0].cpu, samples[-1].cpu)],
        "reader_processes": processes,
        "reader_cpu_percent": 100 * reader_cpu / reader_seconds,
        "load_after": os.getloadavg(),
    }
    section["targets"] = {
        "read_p50": all(row["p50_ms"] <= READ_P50_MS for row in rows if row["reads"]),
        "read_p99": all(row["p99_ms"] <= READ_P99_MS for row in rows if row["reads"]),
        "db_share": section["db_answered_share"] is not None and section["db_answered_share"] <= DB_SHARE,
        "notif_p50": not math.isnan(section["notif_p50_ms"]) and section["notif_p50_ms"] <= NOTIF_P50_MS,
    }
    for row in rows:
        log(f"    minute {row['minute']}: post→read p50 {row['p50_ms']:.1f} ms p99 {row['p99_ms']:.1f} ms, "
            f"notification p50 {row['notif_p50_ms']:.1f} ms, {row['queries']:,} client reads, "
            f"{row['db_calls']:,} database calls ({row['db_next_unread']:,} answers, {row['db_mark_read']:,} read-mark "
            f"groups, {row['db_catch_ups']:,} catch-ups), nodes' CPU {sum(row['node_cpu_percent']):.0f} %")
    log(f"  {label}: database answered {100 * (section['db_answered_share'] or 0):.2f} % of client reads; "
        f"{section['db_calls_per_read']:.3f} calls per read ({section['db_calls_per_read_without_marks']:.3f} without "
        f"read marks); unread {section['unread']}, readers' CPU {section['reader_cpu_percent']:.0f} %")
    return section


def run_sustained_read(clients: int, rate: float, seconds: float, node_count: int, processes: int, setups: list[str],
                       log) -> dict:
    out = {"clients": clients, "rate": rate, "setups": {}}
    if "sqlite" in setups:
        with tempfile.TemporaryDirectory(prefix="notifd-bench-") as tmp:
            out["setups"]["SQLite, 1 node"] = run_setup(
                "SQLite, 1 node", str(Path(tmp) / "bench.db"), 1, clients, rate, seconds, processes, log
            )
    if "postgresql" in setups:
        label = f"PostgreSQL, {node_count} nodes"
        with postgresql_database("read") as url:
            out["setups"][label] = run_setup(label, url, node_count, clients, rate, seconds, processes, log)
    return out
