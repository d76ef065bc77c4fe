# Summarise a py-spy raw (collapsed stacks) profile: where the server's time goes.
#   python -m bench.profile_summary FILE [TOP]
# Prints the share of samples per leaf function (self time) and per function anywhere on
# the stack (total time), idle samples (the reactor waiting in epoll) apart.
from __future__ import annotations

import collections
import sys


def summarise(lines, top: int = 15) -> str:
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    samples = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f.split(" (")[0] for f in stack.split(";") if f]
        if frames and frames[0].startswith("thread ("):
            frames = frames[1:]
        samples += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    out = [f"{samples} samples"]
    out.append("self time:")
    out += [f"  {100 * n / samples:5.1f} %  {name}" for name, n in own.most_common(top)]
    out.append("total time (on the stack):")
    out += [f"  {100 * n / samples:5.1f} %  {name}" for name, n in total.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(summarise(f, int(sys.argv[2]) if len(sys.argv) > 2 else 15))
