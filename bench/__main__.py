# python -m bench MODE [options]: run one benchmark mode (or `all`) and update
# bench/results/latest.json, latest.md and fanout.png. See bench/README.md.
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

from bench import report


MODES = ["fanout", "idle", "roundtrip", "ingest", "sustained", "sustained-read", "http"]


def _ints(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("mode", choices=[*MODES, "all", "report"])
    parser.add_argument("--clients", type=_ints, default=None,
                        help="fan-out sizes [fanout: 1000,5000,10000; http: 1000,5000; idle: the largest]")
    parser.add_argument("--posts", type=int, default=20, help="posts per fan-out size (at least 20 for a report)")
    parser.add_argument("--processes", type=int, default=2, help="subscriber processes")
    parser.add_argument("--ack", choices=["round", "immediate"], default="immediate",
                        help="notifd subscribers answer OK at once on receipt, as real clients do [default], "
                             "or after each round is measured (the server then sends before it reads any OK)")
    parser.add_argument("--only", action="append", help="only this target (notifd, anchor, redis, mqtt, nats); repeatable")
    parser.add_argument("--seconds", type=float, default=None,
                        help="duration of idle (20), roundtrip (10), sustained (60), sustained-read (300), "
                        "http's posting rate (10)")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="fanout, roundtrip, http's posting rate: py-spy notifd while measuring, into PREFIX-*.txt")
    parser.add_argument("--sustained-clients", type=int, default=5000, help="sustained: acknowledging clients")
    parser.add_argument("--read-clients", type=int, default=300, help="sustained-read: named clients")
    parser.add_argument("--rate", type=float, default=20.0, help="sustained-read: posts per second")
    parser.add_argument("--nodes", type=int, default=3, help="sustained-read: notifd nodes on PostgreSQL")
    parser.add_argument("--setup", choices=["sqlite", "postgresql", "both"], default="both",
                        help="sustained-read: one node on SQLite, nodes on PostgreSQL, or both")
    parser.add_argument("--publishers", type=int, default=50, help="http: concurrent publishers (keep-alive)")
    parser.add_argument("--http-part", choices=["all", "fanout", "posting"], default="all",
                        help="http: both parts [default], the SSE fan-out only, or the posting rate only")
    parser.add_argument("--notifd-workers", type=int, default=1,
                        help="fanout, roundtrip: also measure `notifd --workers N` beside the single process; "
                        "http: run `notifd --workers N` instead of one process")
    parser.add_argument("--results", default=None, help="results directory [bench/results]")
    args = parser.parse_args(argv)
    http_clients = args.clients or [1000, 5000]
    args.clients = args.clients or [1000, 5000, 10000]
    _raise_fd_limit(max(args.clients) + 1000)

    results = report.load(args.results)
    results["run"] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "load_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "argv": sys.argv[1:],
    }
    modes = MODES if args.mode == "all" else [args.mode]
    for mode in modes:
        _log(f"== {mode} (load average {os.getloadavg()[0]:.2f})")
        load0 = os.getloadavg()
        if mode == "fanout":
            from bench.fanout import run_fanout

            section = run_fanout(
                args.clients, args.posts, args.processes, args.ack, args.only, _log, args.profile, args.notifd_workers
            )
        elif mode == "idle":
            from bench.fanout import run_idle

            section = run_idle(max(args.clients), args.seconds or 20.0, args.processes, args.only, _log)
        elif mode == "roundtrip":
            from bench.roundtrip import run_roundtrip

            section = run_roundtrip(args.seconds or 10.0, args.processes, _log, args.profile, args.notifd_workers)
        elif mode == "ingest":
            from bench.ingest import run_ingest

            section = run_ingest(_log)
        elif mode == "sustained":
            from bench.sustained import run_sustained

            section = run_sustained(args.seconds or 60.0, args.processes, _log, clients=args.sustained_clients)
        elif mode == "sustained-read":
            from bench.sustained_read import run_sustained_read

            setups = ["sqlite", "postgresql"] if args.setup == "both" else [args.setup]
            section = run_sustained_read(args.read_clients, args.rate, args.seconds or 300.0, args.nodes,
                                         args.processes, setups, _log)
        elif mode == "http":
            from bench.web import run_http

            section = run_http(http_clients, args.posts, args.processes, args.publishers, args.seconds or 10.0, _log,
                               part=args.http_part, only=args.only, profile=args.profile,
                               notifd_workers=args.notifd_workers)
        else:
            section = None
        if section is not None:
            section["load_before"] = load0
            section["load_after"] = os.getloadavg()
            results[mode] = section
            report.save(results, args.results)
    report.save(results, args.results)
    _log(f"results in {report.results_dir(args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
