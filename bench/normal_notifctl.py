# `notifctl` with its posting transaction at `synchronous=NORMAL`, for `ingest`'s comparison.
#
#   python -m bench.normal_notifctl [notifctl's options]       NORMAL: the WAL is not synced at commit
#   BENCH_SYNCHRONOUS=FULL python -m bench.normal_notifctl ...  the same launcher, unchanged (a control)
#
# The same program, code path, schema, database and daemon as `notifctl add`; the only
# change is the one line that made posts durable: posting._post_to_file's
# `PRAGMA synchronous = FULL` runs as NORMAL, which is what that line said before. It
# refuses to report a run in which that pragma was not seen, so that a change to
# posting.py cannot turn this silently into a second measurement of FULL.
from __future__ import annotations

import os
import sqlite3
import sys

DURABLE = "PRAGMA synchronous = FULL"


class _Normal(sqlite3.Connection):
    swapped = 0

    def execute(self, sql, *args):
        if sql == DURABLE:
            _Normal.swapped += 1
            if os.environ.get("BENCH_SYNCHRONOUS", "NORMAL") == "NORMAL":
                sql = "PRAGMA synchronous = NORMAL"
        return super().execute(sql, *args)


def main() -> None:
    connect = sqlite3.connect

    def connect_normal(*args, **kwargs):
        return connect(*args, factory=_Normal, **kwargs)

    sqlite3.connect = connect_normal
    from notifd.cli import notifctl_main

    try:
        notifctl_main()
    finally:
        if not _Normal.swapped:
            print(f"bench.normal_notifctl: notifctl never ran {DURABLE!r}; nothing was measured at NORMAL",
                  file=sys.stderr)
            os._exit(3)


if __name__ == "__main__":
    main()
