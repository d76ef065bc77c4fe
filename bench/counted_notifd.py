# notifd with its database calls counted by query, for `sustained-read`.
#
#   python -m bench.counted_notifd [notifd's options]
#
# The daemon's own `notifd_database_seconds` histogram counts every database call (its
# count is the number of transactions, on SQLite and PostgreSQL alike), but not which
# query each was. This adds `notifd_bench_database_calls_total{query}` to its /metrics,
# counted where the histogram's calls start (`Database.run`): `next_unread` is a client's
# query answered by the database, `mark_read` a group of read marks, `news_after` the hub's
# catch-up. Nothing else changes: one dictionary increment per call.
from __future__ import annotations

import collections

from prometheus_client.core import CounterMetricFamily

from notifd import db, metrics

CALLS: collections.Counter[str] = collections.Counter()
_run = db.Database.run
_metrics_init = metrics.Metrics.__init__


def _counted_run(self, f, *args, **kwargs):
    CALLS[getattr(f, "__name__", "?")] += 1
    return _run(self, f, *args, **kwargs)


class _Calls:
    def collect(self):
        family = CounterMetricFamily("notifd_bench_database_calls", "Database calls by query (bench only)", labels=["query"])
        for query, count in sorted(CALLS.items()):
            family.add_metric([query], count)
        yield family


def _metrics_with_calls(self, *args, **kwargs) -> None:
    _metrics_init(self, *args, **kwargs)
    self.registry.register(_Calls())


def main() -> None:
    db.Database.run = _counted_run
    metrics.Metrics.__init__ = _metrics_with_calls
    from notifd.cli import notifd_main

    notifd_main()


if __name__ == "__main__":
    main()
