# `fanout` and `idle`: N idle subscribers on each target, one short message published,
# time from the publish (for notifd: the commit) to the kernel's receipt at the first and
# the last subscriber; server CPU per post, memory per idle client, CPU at rest.
from __future__ import annotations

import time

from bench import targets as targetmod
from bench.stats import percentile, settled_growth_per_client
from bench.workers import Workers

WARMUP = 2  # posts not counted: the first fan-out pays for lazy allocations


def all_targets(clients: int, only: list[str] | None = None, workers: int = 1) -> list[targetmod.Target]:
    found = [targetmod.Notifd(), *([targetmod.Notifd(workers=workers)] if workers > 1 else []),
             targetmod.Anchor(), *targetmod.peers(clients)]
    if only:
        found = [t for t in found if t.kind in only or t.name in only]
    return found


def gap_seconds(clients: int) -> float:
    # Between posts: let the previous round's acknowledgements and buffers drain.
    return 0.15 + clients * 25e-6


def start_profiler(pid: int, out: str, threads: bool = False, gil: bool = False):
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
        [exe, "record", "--pid", str(pid), "--rate", "2000", "--format", "raw", "--output", out, "--nonblocking",
         *(["--threads"] if threads else []), *(["--gil"] if gil else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stop_profiler(proc) -> None:
    import signal

    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


class Run:
    """One target's subscribers and figures at one N, while the others' are connected too."""

    def __init__(self, target, clients: int) -> None:
        self.target = target
        self.clients = clients
        self.lasts: list[float] = []
        self.firsts: list[float] = []
        self.missing = 0
        self.stamped = True
        self.receivers: set[int] = set()
        self.server_cpu = 0.0
        self.client_cpu = 0.0
        self.rss_before = self.rss_after = None
        self.connect_seconds = 0.0

    def round(self, workers: Workers, ack: str, counted: bool) -> None:
        target = self.target
        cpu_server = target.cpu_seconds() if target.pid else 0.0
        cpu_clients = workers.cpu_seconds()
        workers.broadcast("arm", group=target.name)
        workers.expect("armed", 30)
        t0 = target.publish()
        results = workers.gather("round", 10 + self.clients / 1000, on_late=lambda: workers.broadcast("collect"))
        extra = target.after_publish()
        if ack == "round" and target.kind == "notifd":
            workers.broadcast("ack")
            workers.expect("acked", 30)
        time.sleep(gap_seconds(self.clients))
        if not counted:
            return
        self.server_cpu += (target.cpu_seconds() if target.pid else 0.0) - cpu_server
        self.client_cpu += workers.cpu_seconds() - cpu_clients
        if "receivers" in extra:
            self.receivers.add(extra["receivers"])
        self.missing += sum(r["missing"] for r in results)
        self.stamped = self.stamped and all(r["stamped"] for r in results)
        got = [r for r in results if r["got"]]
        if got:
            self.firsts.append((min(r["first"] for r in got) - t0) / 1e6)
            self.lasts.append((max(r["last"] for r in got) - t0) / 1e6)

    def row(self, posts: int) -> dict:
        row = {
            "clients": self.clients,
            "posts": posts,
            "last_p50_ms": percentile(self.lasts, 50),
            "last_p99_ms": percentile(self.lasts, 99),
            "first_p50_ms": percentile(self.firsts, 50),
            "first_p99_ms": percentile(self.firsts, 99),
            "last_ms": self.lasts,
            "first_ms": self.firsts,
            "missing": self.missing,
            "kernel_timestamps": self.stamped,
            "server_cpu_ms_per_post": 1000 * self.server_cpu / posts if self.target.pid else None,
            "client_cpu_ms_per_post": 1000 * self.client_cpu / posts,
            "connect_seconds": self.connect_seconds,
            "rss_kib_before": self.rss_before,
            "rss_kib_after": self.rss_after,
            "memory_kib_per_client": (
                None if self.rss_before is None
                else settled_growth_per_client(self.rss_before, self.rss_after, self.clients)
            ),
        }
        if self.receivers:
            row["publish_receivers"] = sorted(self.receivers)
        return row


def run_size(clients: int, posts: int, workers: Workers, ack: str, only, log, profile, rows, versions,
             notifd_workers: int = 1) -> None:
    """Every target at one N: all connected at once, their posts interleaved round by round,
    so that noise from the rest of the machine falls on every target alike."""
    runs: list[Run] = []
    profiler = None
    try:
        for target in all_targets(clients, only, notifd_workers):
            try:
                target.start()
            except targetmod.Absent as e:
                log(f"  {target.name}: absent ({e})")
                rows.setdefault(target.name, {})[str(clients)] = {"absent": str(e)}
                continue
            run = Run(target, clients)
            runs.append(run)
            versions.setdefault(target.name, target.version())
            run.rss_before = target.rss_kib() if target.pid else None
            started = time.monotonic()
            workers.connect(target, clients, ack=ack)
            run.connect_seconds = time.monotonic() - started
        workers.broadcast("settle", seconds=1.0)
        workers.expect("settled", 120)
        for run in runs:
            run.rss_after = run.target.rss_kib() if run.target.pid else None
        for index in range(WARMUP + posts):
            if index == WARMUP and profile:
                for run in runs:
                    if run.target.kind == "notifd":
                        profiler = start_profiler(run.target.pid, f"{profile}-{clients}.txt")
                        time.sleep(1.0)  # py-spy attaches
            turn = index % len(runs)
            for run in runs[turn:] + runs[:turn]:  # each target goes first in its turn
                run.round(workers, ack, counted=index >= WARMUP)
        stop_profiler(profiler)
        profiler = None
        for run in runs:
            row = rows.setdefault(run.target.name, {})[str(clients)] = run.row(posts)
            log(
                f"  {run.target.name:>12} N={clients}: last p50 {row['last_p50_ms']:.1f} ms p99 {row['last_p99_ms']:.1f}, "
                f"first p50 {row['first_p50_ms']:.2f} ms, missing {row['missing']}, "
                f"server {row['server_cpu_ms_per_post'] or 0:.1f} ms CPU/post, clients {row['client_cpu_ms_per_post']:.1f}"
            )
    finally:
        stop_profiler(profiler)
        try:
            workers.close_connections()
        finally:
            for run in runs:
                run.target.stop()


def run_fanout(
    clients_list: list[int], posts: int, processes: int, ack: str, only, log, profile=None, notifd_workers: int = 1
) -> dict:
    rows: dict[str, dict[str, dict]] = {}
    versions: dict[str, str] = {}
    # Every target's subscribers are connected at once: enough processes that each stays
    # under its descriptor limit.
    import math
    import resource

    per_process = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 500
    sockets = max(clients_list) * len(all_targets(max(clients_list), only, notifd_workers))
    processes = max(processes, math.ceil(sockets / per_process))
    with Workers(processes) as workers:
        for clients in clients_list:
            log(f"fan-out to {clients} subscribers, {posts} posts each, targets interleaved")
            run_size(clients, posts, workers, ack, only, log, profile, rows, versions, notifd_workers)
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
