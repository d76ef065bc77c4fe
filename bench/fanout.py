# `fanout` and `idle`: N idle subscribers on each target, one short message published,
# time from the publish (for notifd: the commit) to the kernel's receipt at the first and
# the last subscriber; server CPU per post, memory per idle client, CPU at rest.
from __future__ import annotations

import time

from bench import targets as targetmod
from bench.stats import percentile, settled_growth_per_client
from bench.workers import Workers

WARMUP = 2  # posts not counted: the first fan-out pays for lazy allocations


def all_targets(clients: int, only: list[str] | None = None) -> list[targetmod.Target]:
    found = [targetmod.Notifd(), targetmod.Anchor(), *targetmod.peers(clients)]
    if only:
        found = [t for t in found if t.kind in only or t.name in only]
    return found


def gap_seconds(clients: int) -> float:
    # Between posts: let the previous round's acknowledgements and buffers drain.
    return 0.15 + clients * 25e-6


def start_profiler(pid: int, out: str):
    """py-spy on the server for the measured rounds (`--profile`); stopped with SIGINT."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("py-spy")
    exe = str(exe) if exe.exists() else shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("--profile needs py-spy (pip install -e '.[bench]')")
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "2000", "--format", "raw", "--output", out, "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stop_profiler(proc) -> None:
    import signal

    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def measure_target(target, clients: int, posts: int, workers: Workers, ack: str, log, profile: str | None = None) -> dict:
    try:
        target.start()
    except targetmod.Absent as e:
        log(f"  {target.name}: absent ({e})")
        return {"absent": str(e)}
    try:
        rss_before = target.rss_kib() if target.pid else None
        started = time.monotonic()
        workers.connect(target, clients, ack=ack)
        connect_s = time.monotonic() - started
        workers.broadcast("settle", seconds=1.0)
        workers.expect("settled", 60)
        rss_after = target.rss_kib() if target.pid else None
        lasts, firsts, missing, receivers = [], [], 0, set()
        stamped = True
        cpu0 = cpu_workers0 = profiler = None
        for index in range(WARMUP + posts):
            if index == WARMUP:
                cpu0 = target.cpu_seconds() if target.pid else None
                cpu_workers0 = workers.cpu_seconds()
                if profile and target.kind == "notifd":
                    profiler = start_profiler(target.pid, f"{profile}-{clients}.txt")
                    time.sleep(1.0)  # py-spy attaches
            workers.broadcast("arm")
            workers.expect("armed", 30)
            t0 = target.publish()
            results = workers.gather("round", 10 + clients / 1000, on_late=lambda: workers.broadcast("collect"))
            extra = target.after_publish()
            if "receivers" in extra:
                receivers.add(extra["receivers"])
            got_first = [r["first"] for r in results if r["got"]]
            if index >= WARMUP:
                missing += sum(r["missing"] for r in results)
                stamped = stamped and all(r["stamped"] for r in results)
                if got_first:
                    firsts.append((min(got_first) - t0) / 1e6)
                    lasts.append((max(r["last"] for r in results if r["got"]) - t0) / 1e6)
            if ack == "round" and target.kind == "notifd":
                workers.broadcast("ack")
                workers.expect("acked", 30)
            time.sleep(gap_seconds(clients))
        stop_profiler(profiler)
        cpu1 = target.cpu_seconds() if target.pid else None
        cpu_workers = workers.cpu_seconds() - cpu_workers0
        row = {
            "clients": clients,
            "posts": posts,
            "last_p50_ms": percentile(lasts, 50),
            "last_p99_ms": percentile(lasts, 99),
            "first_p50_ms": percentile(firsts, 50),
            "first_p99_ms": percentile(firsts, 99),
            "last_ms": lasts,
            "first_ms": firsts,
            "missing": missing,
            "kernel_timestamps": stamped,
            "server_cpu_ms_per_post": None if cpu0 is None else 1000 * (cpu1 - cpu0) / posts,
            "client_cpu_ms_per_post": 1000 * cpu_workers / posts,
            "connect_seconds": connect_s,
            "rss_kib_before": rss_before,
            "rss_kib_after": rss_after,
            "memory_kib_per_client": (
                None if rss_before is None else settled_growth_per_client(rss_before, rss_after, clients)
            ),
        }
        if receivers:
            row["publish_receivers"] = sorted(receivers)
        log(
            f"  {target.name:>12} N={clients}: last p50 {row['last_p50_ms']:.1f} ms p99 {row['last_p99_ms']:.1f}, "
            f"first p50 {row['first_p50_ms']:.2f} ms, missing {missing}, "
            f"server {row['server_cpu_ms_per_post'] or 0:.1f} ms CPU/post, clients {row['client_cpu_ms_per_post']:.1f}"
        )
        return row
    finally:
        try:
            workers.close_connections()
        finally:
            target.stop()


def run_fanout(clients_list: list[int], posts: int, processes: int, ack: str, only, log, profile=None) -> dict:
    rows: dict[str, dict[str, dict]] = {}
    versions: dict[str, str] = {}
    with Workers(processes) as workers:
        for clients in clients_list:
            log(f"fan-out to {clients} subscribers, {posts} posts each")
            for target in all_targets(clients, only):
                row = measure_target(target, clients, posts, workers, ack, log, profile)
                rows.setdefault(target.name, {})[str(clients)] = row
                if "absent" not in row and target.name not in versions:
                    versions[target.name] = target.version()
    return {"ack": ack, "subscriber_processes": processes, "targets": rows, "versions": versions}


def run_idle(clients: int, seconds: float, processes: int, only, log) -> dict:
    """Memory and CPU with `clients` connected and nothing published."""
    rows = {}
    with Workers(processes) as workers:
        for target in all_targets(clients, only):
            try:
                target.start()
            except targetmod.Absent as e:
                rows[target.name] = {"absent": str(e)}
                log(f"  {target.name}: absent")
                continue
            try:
                time.sleep(1.0)
                rss0 = target.rss_kib()
                workers.connect(target, clients)
                workers.broadcast("settle", seconds=2.0)
                workers.expect("settled", 60)
                rss1 = target.rss_kib()
                cpu0, t0 = target.cpu_seconds(), time.monotonic()
                workers.broadcast("settle", seconds=seconds)  # keep-alives answered meanwhile
                workers.expect("settled", seconds + 60)
                cpu1, t1 = target.cpu_seconds(), time.monotonic()
                rows[target.name] = {
                    "clients": clients,
                    "rss_kib_before": rss0,
                    "rss_kib_after": rss1,
                    "memory_kib_per_client": settled_growth_per_client(rss0, rss1, clients),
                    "idle_cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
                    "seconds": t1 - t0,
                }
                log(
                    f"  {target.name:>12}: {rows[target.name]['memory_kib_per_client']:.2f} KiB/client, "
                    f"idle CPU {rows[target.name]['idle_cpu_percent']:.2f} % of a core"
                )
            finally:
                try:
                    workers.close_connections()
                finally:
                    target.stop()
    return {"clients": clients, "targets": rows}
