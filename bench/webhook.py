# The webhook plugin's delivery speed, through the outbox: the time from a commit to the
# POST reaching a local HTTP server (one item at a time), and the rate at which a batch
# committed at once is delivered (8 in flight), with the attempts that failed and were
# retried (a retry waits the notifier's first_delay, which the batch time includes).
#
#   python -m bench.webhook --rounds 20 --batch 500
#
# Figures only, no targets: plugins/webhook/test_webhook.py holds the asserted behaviour.
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import percentile
from notifd import db as dbmod
from notifd import store
from notifd.posting import Post
from notifd.testing import Harness, HttpReceiver
from notifd.wakeup import send_wakeup

PLUGIN = Path(__file__).parent.parent / "plugins" / "webhook"


def run(rounds: int, batch: int, timeout: float | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as directory, HttpReceiver() as receiver:
        config = {"plugins": {"webhook": {"url": receiver.url}}}
        if timeout is not None:
            config["notifiers"] = {"webhook": {"timeout": timeout}}
        harness = Harness(Path(directory), config, [PLUGIN])
        daemon = harness.start()
        engine = dbmod.open_engine(dbmod.database_url(str(harness.db_path)))

        def post(count: int) -> float:
            """Commit `count` items in one transaction and wake the daemon, as `notifctl add` does."""
            with engine.begin() as conn:
                store.post_items(conn, [Post("classified", f"ad {n}") for n in range(count)])
            started = time.monotonic()
            send_wakeup(engine)
            return started

        try:
            post(1)  # warm-up, not counted: the daemon may still be starting its outbox
            receiver.next(timeout=60)
            latencies = []
            for _ in range(rounds):
                started = post(1)
                latencies.append(receiver.next(timeout=60).at - started)
            started = post(batch)
            for _ in range(batch):
                last = receiver.next(timeout=60).at
            elapsed = last - started
            failures = [line for line in daemon.drained_log() if "failed in notifier webhook" in line]
            failed = len(failures)
            sys.stderr.writelines(failures[:5])  # what went wrong, for the first few
        finally:
            engine.dispose()
            harness.close()
    return {"rounds": rounds, "latency_ms_p50": percentile(latencies, 50) * 1000,
            "latency_ms_p90": percentile(latencies, 90) * 1000, "batch": batch, "batch_seconds": elapsed,
            "batch_per_second": batch / elapsed, "failed_attempts": failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook", description="webhook delivery speed")
    parser.add_argument("--rounds", type=int, default=20, help="single items, one at a time [20]")
    parser.add_argument("--batch", type=int, default=500, help="items committed at once [500]")
    parser.add_argument("--timeout", type=float, default=None, help="the notifier's timeout [the plugin's own]")
    args = parser.parse_args(argv)
    r = run(args.rounds, args.batch, args.timeout)
    print(f"webhook (durable, through the outbox, timeout {args.timeout or 'default'}): commit to POST p50 {r['latency_ms_p50']:.1f} ms, "
          f"p90 {r['latency_ms_p90']:.1f} ms over {r['rounds']} items; {r['batch']} items committed at once: "
          f"{r['batch_seconds']:.2f} s ({r['batch_per_second']:.0f}/s); "
          f"failed attempts, retried: {r['failed_attempts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
