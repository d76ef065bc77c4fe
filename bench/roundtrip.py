# `roundtrip`: 50 connections with one request in flight each, as fast as the server
# answers: `random?` on the bare-Twisted anchor and on notifd, and `classified?` on notifd
# for named clients (each answer moves the client's read mark, persisted on the database
# thread). The classified window holds 10,000 ads and each client reads from the oldest:
# no client runs out during the run, and every answer is a real ad, not an empty line.
from __future__ import annotations

import time

from bench import targets as targetmod
from bench.fanout import start_profiler, stop_profiler
from bench.workers import Workers

CONNECTIONS = 50
ITEMS = 50_000  # posted; the newest WINDOW are recent
WINDOW = 10_000  # recent ads: more than any client reads in a run
CONFIG = f"[types.classified]\nrecent_max_count = {WINDOW}\nrecent_max_age = 0\n"


def measure(target, workers: Workers, seconds: float, request: str, setup: list[str], profile: str | None = None) -> dict:
    counts = workers.split(CONNECTIONS)
    offset = 0
    for proc, count in zip(workers.procs, counts):
        workers.send(
            proc, "roundtrips", host=target.host, port=target.port, count=count,
            setup=setup[offset : offset + count], request=request,
        )
        offset += count
    workers.expect("ready", 120)
    profiler = start_profiler(target.pid, profile) if profile else None
    cpu0, t0 = target.cpu_seconds(), time.monotonic()
    workers.broadcast("go", seconds=seconds)
    results = workers.expect("roundtrips", seconds + 60)
    stop_profiler(profiler)
    cpu1, t1 = target.cpu_seconds(), time.monotonic()
    answered = sum(r["answered"] for r in results)
    elapsed = max(r["seconds"] for r in results)
    return {
        "answered": answered,
        "per_second": answered / elapsed,
        "server_cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
        "client_cpu_percent": 100 * sum(r["cpu"] for r in results) / elapsed,
    }


def run_roundtrip(seconds: float, processes: int, log, profile: str | None = None, notifd_workers: int = 1) -> dict:
    rows = {}
    with Workers(processes) as workers:
        anchor = targetmod.Anchor()
        anchor.start()
        try:
            rows["bare Twisted random?"] = measure(anchor, workers, seconds, "random?\r\n", [])
        finally:
            anchor.stop()
        notifd = targetmod.Notifd(config=CONFIG)
        notifd.start()
        try:
            rows["notifd random?"] = measure(
                notifd, workers, seconds, "random?\r\n", [], profile and f"{profile}-random.txt"
            )
            from notifd import store
            from notifd.posting import Post

            tokens = [notifd.call(store.add_client, f"bench{i}") for i in range(CONNECTIONS)]
            notifd.call(store.post_items, [Post("classified", f"ad number {i}") for i in range(ITEMS)])
            notifd.post("random", "1")  # and wake the daemon, as `notifctl add` does
            time.sleep(3)  # it reads the 50,000 new items (a start-up cost, not what is measured)
            hellos = [f"hello bench{i} {token}\r\n" for i, token in enumerate(tokens)]
            rows["notifd classified? (named)"] = measure(
                notifd, workers, seconds, "classified?\r\n", hellos, profile and f"{profile}-classified.txt"
            )
        finally:
            notifd.stop()
        if notifd_workers > 1:  # `notifd --workers N` beside the single process
            several = targetmod.Notifd(config=CONFIG, workers=notifd_workers)
            several.start()
            try:
                rows[f"{several.name} random?"] = measure(several, workers, seconds, "random?\r\n", [])
            finally:
                several.stop()
    for name, row in rows.items():
        log(f"  {name:>28}: {row['per_second']:,.0f}/s, server CPU {row['server_cpu_percent']:.0f} %, "
            f"clients {row['client_cpu_percent']:.0f} %")
    return {"connections": CONNECTIONS, "seconds": seconds, "rows": rows}
