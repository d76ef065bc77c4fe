# The benchmark's arithmetic, pure and unit-tested: percentiles, ratios, /proc parsing,
# and the sustained's "how long until each client heard of each post".
from __future__ import annotations

import bisect
import math
from typing import Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing or the reference is zero."""
    if value is None or reference is None or reference == 0 or math.isnan(value) or math.isnan(reference):
        return None
    return value / reference


def format_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def format_ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def proc_cpu_seconds(stat_line: str, ticks_per_second: int) -> float:
    """utime + stime of a /proc/<pid>/stat line (every thread of the process)."""
    # The command name is in parentheses and may hold spaces: split after its last ')'.
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of the whole line
    return (utime + stime) / ticks_per_second


def proc_rss_kib(status_text: str) -> int:
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line")


def sustained_latencies(commits: Sequence[int], receipts: Iterable[Sequence[int]]) -> tuple[list[int | None], list[int]]:
    """For each post: the longest time any connection took to hear of it, and how many never did.

    A connection hears of a post with the first notification it receives at or after the
    commit (notifications coalesce, so one may announce several posts). `commits` and
    each connection's `receipts` are sorted times in ns. A post no connection missed has
    its worst latency; None when every connection missed it.
    """
    try:
        import numpy
    except ImportError:
        numpy = None
    if numpy is not None and commits:
        return _sustained_latencies_numpy(numpy, commits, receipts)
    worst: list[int | None] = [None] * len(commits)
    unheard = [0] * len(commits)
    for times in receipts:
        for index, commit in enumerate(commits):
            at = bisect.bisect_left(times, commit)
            if at == len(times):
                unheard[index] += 1
                continue
            latency = times[at] - commit
            if worst[index] is None or latency > worst[index]:
                worst[index] = latency
    return worst, unheard


def _sustained_latencies_numpy(numpy, commits, receipts):
    # The same as the loop above, vectorised: 5,000 connections x 6,000 posts.
    posts = numpy.asarray(commits, dtype=numpy.int64)
    worst = numpy.full(len(posts), -1, dtype=numpy.int64)
    unheard = numpy.zeros(len(posts), dtype=numpy.int64)
    for times in receipts:
        heard = numpy.asarray(times, dtype=numpy.int64)
        at = numpy.searchsorted(heard, posts, side="left")
        missed = at == len(heard)
        unheard += missed
        latency = numpy.where(missed, -1, heard[numpy.minimum(at, len(heard) - 1)] - posts) if len(heard) else -1
        worst = numpy.maximum(worst, latency)
    return [None if w < 0 else int(w) for w in worst], [int(u) for u in unheard]


def settled_growth_per_client(before_kib: int, after_kib: int, clients: int) -> float:
    """Memory per idle client in KiB: RSS growth over the number of clients."""
    if clients <= 0:
        raise ValueError("no clients")
    return (after_kib - before_kib) / clients


def prometheus_samples(text: str) -> dict[str, float]:
    """The samples of a Prometheus text exposition, by name with its labels as written:
    `notifd_database_seconds_count`, `notifd_bench_database_calls_total{query="mark_read"}`."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples
