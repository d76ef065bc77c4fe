# `sustained`: 5,000 clients that acknowledge every notification at once, 100 posts a second
# for 60 s. Per post: how long until the last client heard of it (its first notification
# after the commit); against the single-post fan-out at the same N measured just before.
# "No queue growth": the server's RSS and its sockets' kernel queues (send and receive)
# sampled every two seconds, first 10 s against last 10 s.
from __future__ import annotations

import subprocess
import time

from bench import targets as targetmod
from bench.stats import percentile
from bench.workers import Workers

CLIENTS = 5000
RATE = 100.0


def socket_queues(port: int) -> tuple[int, int]:
    """Bytes waiting in the kernel on the server's established sockets: (receive, send)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"sport = :{port}"], capture_output=True, text=True, timeout=30
    ).stdout
    recv = send = 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            recv += int(fields[0])
            send += int(fields[1])
    return recv, send


def _mean(values):
    return sum(values) / len(values) if values else 0


def run_sustained(seconds: float, processes: int, log, clients: int = CLIENTS, rate: float = RATE) -> dict:
    """notifd's figures, with the C floor's (bench/floor.c) measured the same way just after
    under "floor" (absent, saying why, when there is no C compiler)."""
    section = _run_one(targetmod.Notifd(), seconds, processes, log, clients, rate)
    try:
        section["floor"] = _run_one(targetmod.Floor(), seconds, processes, log, clients, rate)
    except targetmod.Absent as e:
        section["floor"] = {"absent": str(e)}
    return section


def _run_one(target: targetmod.Target, seconds: float, processes: int, log, clients: int, rate: float) -> dict:
    log(f"  sustained: {target.name}")
    target.start()
    try:
        with Workers(processes) as workers:
            workers.connect(target, clients, ack="immediate")
            workers.broadcast("settle", seconds=1.0)
            workers.expect("settled", 60)
            # The single-post fan-out at this N, with the same acknowledging clients.
            single = []
            for index in range(22):
                workers.broadcast("arm", group=target.name)
                workers.expect("armed", 30)
                t0 = target.publish()
                results = workers.gather("round", 30, on_late=lambda: workers.broadcast("collect"))
                if index >= 2:
                    single.append((max(r["last"] for r in results if r["got"]) - t0) / 1e6)
                time.sleep(0.3)
            log(f"  single-post fan-out at {clients}: p50 {percentile(single, 50):.1f} ms")
            workers.broadcast("sustained")
            workers.expect("sustaining", 30)
            commits, samples = [], []
            cpu0 = target.cpu_seconds()
            start = time.monotonic()
            next_sample = start
            posts = int(seconds * rate)
            for k in range(posts):
                due = start + k / rate
                now = time.monotonic()
                if now < due:
                    time.sleep(due - now)
                commits.append(target.publish())
                if time.monotonic() >= next_sample:
                    recv, send = socket_queues(target.port)
                    samples.append({"t": time.monotonic() - start, "rss_kib": target.rss_kib(), "recvq": recv, "sendq": send})
                    next_sample += 2.0
            elapsed = time.monotonic() - start
            cpu = target.cpu_seconds() - cpu0
            time.sleep(1.0)  # the last posts' notifications
            workers.broadcast("stop", commits=commits)
            results = workers.expect("sustained_done", 300)
    finally:
        target.stop()
    worst = []
    unheard_posts = 0
    unheard_at = []  # (post index, connections that never heard of it), the first few
    for index in range(len(commits)):
        values = [r["worst"][index] for r in results if r["worst"][index] is not None]
        if any(r["unheard"][index] for r in results):
            unheard_posts += 1
            if len(unheard_at) < 20:
                unheard_at.append((index, sum(r["unheard"][index] for r in results)))
        if values:
            worst.append(max(values) / 1e6)
    first = [s for s in samples if s["t"] <= 10]
    last = [s for s in samples if s["t"] >= samples[-1]["t"] - 10]
    section = {
        "clients": clients,
        "rate": posts / elapsed,
        "seconds": elapsed,
        "posts": posts,
        "single_p50_ms": percentile(single, 50),
        "single_ms": single,
        "p50_ms": percentile(worst, 50),
        "p99_ms": percentile(worst, 99),
        "max_ms": max(worst) if worst else None,
        "p99_ratio": percentile(worst, 99) / percentile(single, 50),
        "unheard_posts": unheard_posts,
        "unheard_at": unheard_at,
        "notifications": sum(r["notifications"] for r in results),
        "server_cpu_percent": 100 * cpu / elapsed,
        "samples": samples,
        "rss_first_kib": int(_mean([s["rss_kib"] for s in first])),
        "rss_last_kib": int(_mean([s["rss_kib"] for s in last])),
        "recvq_first": int(_mean([s["recvq"] for s in first])),
        "recvq_last": int(_mean([s["recvq"] for s in last])),
        "sendq_first": int(_mean([s["sendq"] for s in first])),
        "sendq_last": int(_mean([s["sendq"] for s in last])),
    }
    # Growth: the last 10 s well above the first 10 s (slack for noise and allocator pages).
    section["queue_growth"] = (
        section["rss_last_kib"] > section["rss_first_kib"] * 1.1 + 10_240
        or section["recvq_last"] > 2 * section["recvq_first"] + 65_536
        or section["sendq_last"] > 2 * section["sendq_first"] + 65_536
    )
    log(f"  sustained: {section['posts']} posts at {section['rate']:.0f}/s: p50 {section['p50_ms']:.1f} ms, "
        f"p99 {section['p99_ms']:.1f} ms ({section['p99_ratio']:.2f}x single p50), "
        f"RSS {section['rss_first_kib']}->{section['rss_last_kib']} KiB, growth: {section['queue_growth']}")
    return section
