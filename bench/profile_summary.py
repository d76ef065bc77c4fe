# Summarise a py-spy raw (collapsed stacks) profile: where the server's time goes.
#   python -m bench.profile_summary FILE [TOP]
# Prints the share of samples per leaf function (self time) and per function anywhere on
# the stack (total time), idle samples (the reactor waiting in epoll) apart. A profile
# recorded with `--threads` (http's posting rate) is summarised thread by thread too: the
# reactor's and the database writer's time are different budgets.
from __future__ import annotations

import collections
import sys


def summarise(lines, top: int = 15) -> str:
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    threads: dict[str, tuple[collections.Counter, collections.Counter]] = {}
    samples = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        raw = [f for f in stack.split(";") if f]
        thread = None
        if raw and raw[0].startswith("thread ("):
            # "thread (TID): NAME" with --threads; the name tells the pool threads apart.
            thread = raw[0].partition(": ")[2] or raw[0]
            raw = raw[1:]
        frames = [f.split(" (")[0] for f in raw]
        samples += n
        counters = [(own, total)]
        if thread is not None:
            counters.append(threads.setdefault(thread, (collections.Counter(), collections.Counter())))
        for own_c, total_c in counters:
            if frames:
                own_c[frames[-1]] += n
            for frame in set(frames):
                total_c[frame] += n
    out = [f"{samples} samples"]
    out += _section("", own, total, samples, top)
    for thread, (own_t, total_t) in sorted(threads.items(), key=lambda kv: -sum(kv[1][0].values())):
        n = sum(own_t.values())
        out.append(f"\n== thread {thread}: {n} samples ({100 * n / samples:.1f} % of all)")
        out += _section("  ", own_t, total_t, n, top)
    return "\n".join(out)


def _section(indent: str, own, total, samples: int, top: int) -> list[str]:
    out = [f"{indent}self time:"]
    out += [f"{indent}  {100 * n / samples:5.1f} %  {name}" for name, n in own.most_common(top)]
    out.append(f"{indent}total time (on the stack):")
    out += [f"{indent}  {100 * n / samples:5.1f} %  {name}" for name, n in total.most_common(top)]
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(summarise(f, int(sys.argv[2]) if len(sys.argv) > 2 else 15))
