# `http`: notifd over HTTP beside nginx with its pub/sub module nchan, in the same run.
#
# Fan-out: N Server-Sent Events subscribers on each (`GET /v1/events?types=classified`,
# nchan's `/sub` eventsource), held by the subscriber processes and read raw (HTTP/1.1,
# `id:` lines counted), both connected at once, posts interleaved round by round; per post,
# from the moment the POST is sent to the kernel's receipt of the event at the first and
# the last subscriber. notifd's POST is durable (on disk before it is fanned out and
# answered); nchan keeps messages in memory.
#
# Posting rate: `--publishers` keep-alive connections (default 50), one POST in flight each,
# as fast as each server answers, for `--seconds`; no subscribers. notifd commits the posts
# that arrive during a transaction together in the next one (one disk sync per group):
# the group size is read from its metrics. nchan stores nothing on disk.
from __future__ import annotations

import time
import urllib.request

from bench import targets as targetmod
from bench.fanout import Run
from bench.stats import percentile, prometheus_samples
from bench.workers import Workers

WARMUP = 2  # posts not counted: the first fan-out pays for lazy allocations


def _fanout_size(clients: int, posts: int, workers: Workers, found: list, rows: dict, log) -> None:
    runs = []
    try:
        for target in found:
            run = Run(target, clients)
            runs.append(run)
            run.rss_before = target.rss_kib()
            started = time.monotonic()
            workers.connect(target, clients)
            run.connect_seconds = time.monotonic() - started
        workers.broadcast("settle", seconds=1.0)
        workers.expect("settled", 120)
        for run in runs:
            run.rss_after = run.target.rss_kib()
        for index in range(WARMUP + posts):
            turn = index % len(runs)
            for run in runs[turn:] + runs[:turn]:  # each target goes first in its turn
                run.round(workers, "none", counted=index >= WARMUP)
        for run in runs:
            row = rows.setdefault(run.target.name, {})[str(clients)] = run.row(posts)
            log(f"  {run.target.name:>8} N={clients}: last p50 {row['last_p50_ms']:.1f} ms p99 {row['last_p99_ms']:.1f}, "
                f"first p50 {row['first_p50_ms']:.2f} ms, missing {row['missing']}, "
                f"server {row['server_cpu_ms_per_post']:.1f} ms CPU/post, clients {row['client_cpu_ms_per_post']:.1f}")
    finally:
        workers.close_connections()


def _notifd_counts(target) -> dict[str, float]:
    """notifd's HTTP posts created, the transactions that stored them, and its database calls, so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{target.metrics_port}/metrics", timeout=30) as answer:
        samples = prometheus_samples(answer.read().decode())
    return {
        "created": samples.get('notifd_http_posts_total{outcome="created"}', 0.0),
        "groups": samples.get("notifd_http_post_groups_total", 0.0),
        "calls": samples.get("notifd_database_seconds_count", 0.0),
        "call_seconds": samples.get("notifd_database_seconds_sum", 0.0),
    }


def _reactor_cpu(target) -> float:
    """CPU seconds of the reactor threads (each process's main thread) of a notifd target so far."""
    from pathlib import Path

    from bench.stats import proc_cpu_seconds
    from bench.targets import TICKS

    return sum(proc_cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat").read_text(), TICKS) for pid in target._pids())


def fdatasync_ms(directory: str, count: int = 50) -> float:
    """The disk's floor under a durable commit: p50 of appending 4 KiB to a file and fdatasync()ing it."""
    import os

    path = os.path.join(directory, "bench-fdatasync")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        times = []
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append(1000 * (time.perf_counter() - t0))
    finally:
        os.close(fd)
        os.unlink(path)
    return percentile(times, 50)


def _posting_rate(target, workers: Workers, publishers: int, seconds: float, profile: str | None = None) -> dict:
    from bench.fanout import start_profiler, stop_profiler

    request = target.post_request().decode("latin-1")
    for proc, count in zip(workers.procs, workers.split(publishers)):
        workers.send(proc, "http_posts", host=target.host, port=target.subscribe_port(), count=count, request=request)
    workers.expect("ready", 60)
    notifd = isinstance(target, targetmod.NotifdHttp)
    before = _notifd_counts(target) if notifd else {}
    # py-spy per thread (the reactor's and the database's apart), when asked; only the thread
    # holding the GIL is sampled: without --gil, a thread waiting to take the GIL back after a
    # system call is counted in that call, and the reactor seemed to spend a quarter of its
    # time in send(). The kernel's own work is not in such a profile. py-spy costs the server
    # some CPU: a profiled run's CPU figures are a little high.
    profiler = (start_profiler(target.pid, f"{profile}-{target.name}-posting.txt", threads=True, gil=True)
                if profile else None)
    threads0 = _reactor_cpu(target) if notifd else 0.0
    cpu0, t0 = target.cpu_seconds(), time.monotonic()
    workers.broadcast("go", seconds=seconds)
    results = workers.expect("http_posts", seconds + 60)
    cpu1, t1 = target.cpu_seconds(), time.monotonic()
    threads1 = _reactor_cpu(target) if notifd else 0.0
    stop_profiler(profiler)
    statuses: dict[str, int] = {}
    for result in results:
        for status, count in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    latencies = [ms for result in results for ms in result["latencies"]]
    elapsed = max(result["seconds"] for result in results)
    ok = sum(count for status, count in statuses.items() if status.startswith("2"))
    row = {
        "publishers": publishers,
        "seconds": elapsed,
        "posts": ok,
        "per_second": ok / elapsed,
        "statuses": statuses,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "reconnects": sum(result["reconnects"] for result in results),
        "server_cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
        # Robust to other load on the machine, unlike the rate: what each answered post cost the server.
        "server_cpu_us_per_post": 1e6 * (cpu1 - cpu0) / ok if ok else None,
        "client_cpu_percent": 100 * sum(result["cpu"] for result in results) / elapsed,
    }
    if notifd:
        # The reactor thread's share (the database threads and the kernel's work for them are the rest).
        row["reactor_cpu_us_per_post"] = 1e6 * (threads1 - threads0) / ok if ok else None
        after = _notifd_counts(target)
        delta = {key: after[key] - before[key] for key in after}
        row["transactions"] = int(delta["groups"])
        row["posts_per_transaction"] = delta["created"] / delta["groups"] if delta["groups"] else None
        # Every database call of the run (posting groups, the hub's catch-ups), queue wait included.
        row["database_call_ms"] = 1000 * delta["call_seconds"] / delta["calls"] if delta["calls"] else None
        row["fdatasync_p50_ms"] = fdatasync_ms(str(target.db_path.parent))
    return row


def run_http(clients_list: list[int], posts: int, processes: int, publishers: int, seconds: float, log,
             part: str = "all", only: list[str] | None = None, profile: str | None = None, notifd_workers: int = 1) -> dict:
    """`part`: "all", "fanout" (the event streams only) or "posting" (the posting rate only);
    `only`: the targets to run (notifd, nchan); `notifd_workers`: `notifd --workers N` instead of one process."""
    rows: dict[str, dict[str, dict]] = {}
    rates: dict[str, dict] = {}
    versions: dict[str, str] = {}
    found = []
    try:
        for target in (targetmod.NotifdHttp(workers=notifd_workers), targetmod.Nchan(log)):
            if only and target.kind not in only and target.name not in only and target.name.split()[0] not in only:
                continue
            try:
                target.start()
            except targetmod.Absent as e:
                log(f"  {target.name}: absent ({e})")
                rows[target.name] = {str(clients): {"absent": str(e)} for clients in clients_list}
                continue
            found.append(target)
            versions[target.name] = target.version()
        # Both targets' subscribers at once, each process under its descriptor limit.
        import math
        import resource

        per_process = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 500
        if part != "posting":
            processes = max(processes, math.ceil(max(clients_list) * len(found) / per_process))
        with Workers(processes) as workers:
            for clients in clients_list if part != "posting" else []:
                log(f"HTTP fan-out to {clients} event streams, {posts} posts each, targets interleaved")
                _fanout_size(clients, posts, workers, found, rows, log)
            for target in found if part != "fanout" else []:
                rates[target.name] = row = _posting_rate(target, workers, publishers, seconds, profile)
                log(f"  {target.name:>8}: {row['per_second']:,.0f} posts/s with {publishers} publishers "
                    f"(p50 {row['latency_p50_ms']:.1f} ms, p99 {row['latency_p99_ms']:.1f} ms; statuses {row['statuses']}), "
                    f"server CPU {row['server_cpu_percent']:.0f} %, {row['server_cpu_us_per_post'] or 0:.0f} µs per post"
                    + (f" ({row['reactor_cpu_us_per_post']:.0f} on the reactor)" if row.get("reactor_cpu_us_per_post") else "")
                    + (f", {row['posts_per_transaction']:.1f} posts per transaction, database calls "
                       f"{row['database_call_ms']:.1f} ms on average, the disk's fdatasync {row['fdatasync_p50_ms']:.2f} ms"
                       if row.get("posts_per_transaction") else ""))
    finally:
        for target in found:
            target.stop()
    return {"subscriber_processes": processes, "targets": rows, "posting": rates, "versions": versions}
