# bench/results/: latest.json (everything measured, by mode), latest.md (the targets, with
# their ratios to the peers measured in the same run: Redis and the bare-Twisted anchor,
# nchan for HTTP) and fanout.png.
# Each mode updates its own section of latest.json, so modes can be run one at a time.
from __future__ import annotations

import json
import math
from pathlib import Path

from bench.stats import format_ms, format_ratio, ratio

DEFAULT_DIR = Path(__file__).resolve().parent / "results"
NOTIFD, REDIS, ANCHOR, NCHAN = "notifd", "Redis", "bare Twisted", "nchan"


def results_dir(path: str | None) -> Path:
    return Path(path) if path else DEFAULT_DIR


def load(path: str | None) -> dict:
    file = results_dir(path) / "latest.json"
    return json.loads(file.read_text()) if file.exists() else {}


def _clean(value):
    # JSON has no NaN: write null.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def save(results: dict, path: str | None) -> None:
    directory = results_dir(path)
    directory.mkdir(parents=True, exist_ok=True)
    results = _clean(results)
    (directory / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (directory / "latest.md").write_text(markdown(results))
    if "fanout" in results:
        plot(results["fanout"], directory / "fanout.png")


def _row(rows: dict, name: str, clients: str) -> dict | None:
    row = rows.get(name, {}).get(clients)
    return None if row is None or "absent" in row else row


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def markdown(results: dict) -> str:
    out = ["# notifd benchmark: latest run", ""]
    run = results.get("run", {})
    if run:
        out.append(
            f"Run {run.get('started')} on {run.get('cpus')} CPUs, Linux {run.get('kernel')}, Python {run.get('python')}; "
            f"load average before: {', '.join(f'{x:.2f}' for x in run.get('load_before', []))}."
        )
        out.append("")
    out += _targets(results)
    if "fanout" in results:
        out += _fanout(results["fanout"])
    if "idle" in results:
        out += _idle(results["idle"])
    if "roundtrip" in results:
        out += _roundtrip(results["roundtrip"])
    if "ingest" in results:
        out += _ingest(results["ingest"])
    if "sustained" in results:
        out += _sustained(results["sustained"])
    if "sustained-read" in results:
        out += _sustained_read(results["sustained-read"])
    if "http" in results:
        out += _http(results["http"])
    return "\n".join(out) + "\n"


def _targets(results: dict) -> list[str]:
    out = ["## Targets", "", "| Target | Measured | vs Redis | vs bare Twisted | Goal | Verdict |",
           "| --- | --- | --- | --- | --- | --- |"]
    fan = results.get("fanout", {}).get("targets", {})
    for clients in sorted({c for rows in fan.values() for c in rows}, key=int):
        mine, redis, anchor = _row(fan, NOTIFD, clients), _row(fan, REDIS, clients), _row(fan, ANCHOR, clients)
        if not mine:
            continue
        # Measured with subscribers that acknowledge on receipt, as real clients do.
        for key, label, limit in (("last_p50_ms", "p50", 1.1), ("last_p99_ms", "p99", 1.25)):
            r = ratio(mine[key], redis and redis[key])
            a = ratio(mine[key], anchor and anchor[key])
            goal = f"≤ {limit}× Redis" if clients == "10000" else "(reported)"
            ok = (r <= limit) if (r is not None and clients == "10000") else None
            out.append(f"| fan-out N={int(clients):,} last {label} | {format_ms(mine[key])} ms | {format_ratio(r)} | "
                       f"{format_ratio(a)} | {goal} | {_verdict(ok)} |")
        first = mine["first_p50_ms"]
        ok = first <= 2.0 if clients == "10000" else None
        out.append(f"| fan-out N={int(clients):,} first p50 | {format_ms(first)} ms | "
                   f"{format_ratio(ratio(first, redis and redis['first_p50_ms']))} | "
                   f"{format_ratio(ratio(first, anchor and anchor['first_p50_ms']))} | "
                   f"{'≤ 2 ms' if clients == '10000' else '(reported)'} | {_verdict(ok)} |")
    idle = results.get("idle", {}).get("targets", {})
    if NOTIFD in idle and "absent" not in idle[NOTIFD]:
        mine = idle[NOTIFD]
        redis, anchor = idle.get(REDIS, {}), idle.get(ANCHOR, {})
        out.append(f"| idle memory per client (N={mine['clients']:,}) | {mine['memory_kib_per_client']:.2f} KiB | "
                   f"{format_ratio(ratio(mine['memory_kib_per_client'], redis.get('memory_kib_per_client')))} | "
                   f"{format_ratio(ratio(mine['memory_kib_per_client'], anchor.get('memory_kib_per_client')))} | "
                   f"≤ 2 KiB | {_verdict(mine['memory_kib_per_client'] <= 2.0)} |")
        out.append(f"| idle CPU (N={mine['clients']:,}) | {mine['idle_cpu_percent']:.2f} % of a core | "
                   f"{format_ratio(ratio(mine['idle_cpu_percent'], redis.get('idle_cpu_percent')))} | "
                   f"{format_ratio(ratio(mine['idle_cpu_percent'], anchor.get('idle_cpu_percent')))} | "
                   f"< 1 % | {_verdict(mine['idle_cpu_percent'] < 1.0)} |")
    rt = results.get("roundtrip", {}).get("rows", {})
    anchor_rate = rt.get("bare Twisted random?", {}).get("per_second")
    for name, limit in (("notifd random?", 1.0), ("notifd classified? (named)", 0.5)):
        if name in rt:
            r = ratio(rt[name]["per_second"], anchor_rate)
            out.append(f"| round trips {name} | {rt[name]['per_second']:,.0f}/s | – | {format_ratio(r)} | "
                       f"≥ {limit}× bare Twisted | {_verdict(None if r is None else r >= limit)} |")
    ingest = results.get("ingest", {})
    if ingest:
        out.append(f"| notifctl add wall p50 | {ingest['add_p50_ms']:.0f} ms | – | – | ≤ 200 ms | "
                   f"{_verdict(ingest['add_p50_ms'] <= 200)} |")
        out.append(f"| notifctl add --batch | {ingest['batch_items_per_s']:,.0f} items/s | – | – | ≥ 10,000/s | "
                   f"{_verdict(ingest['batch_items_per_s'] >= 10_000)} |")
    out += _sustained_read_targets(results.get("sustained-read", {}))
    out += _http_targets(results.get("http", {}))
    sustained = results.get("sustained", {})
    if sustained:
        ok = sustained.get("p99_ratio") is not None and sustained["p99_ratio"] <= 2.5 and not sustained.get("queue_growth")
        floor = sustained.get("floor") or {}
        beside = (f"; C floor: p99 {format_ms(floor['p99_ms'])} ms ({format_ratio(floor.get('p99_ratio'))} its single-post p50)"
                  if "p99_ms" in floor else "")
        out.append(f"| sustained {sustained['rate']:.0f} posts/s, {sustained['clients']:,} acking clients, {sustained['seconds']:.0f} s | "
                   f"p99 {format_ms(sustained['p99_ms'])} ms ({format_ratio(sustained.get('p99_ratio'))} single-post p50), "
                   f"queue growth: {'yes' if sustained.get('queue_growth') else 'no'}{beside} | – | – | ≤ 2.5×, no growth | {_verdict(ok)} |")
    workers = "notifd --workers 2"
    single, double = _row(fan, NOTIFD, "10000"), _row(fan, workers, "10000")
    if single and double:
        speedup = single["last_p50_ms"] / double["last_p50_ms"]
        out.append(f"| `notifd --workers 2` fan-out N=10,000 p50 speed-up | {format_ms(double['last_p50_ms'])} ms "
                   f"against {format_ms(single['last_p50_ms'])} ms: {speedup:.2f}× | – | – | ≥ 1.6× | "
                   f"{_verdict(speedup >= 1.6)} |")
    else:
        out.append("| `notifd --workers 2` fan-out scaling | not measured (`fanout --notifd-workers 2`) | – | – | ≥ 1.6× | – |")
    one, two = rt.get("notifd random?"), rt.get(f"{workers} random?")
    if one and two:
        speedup = two["per_second"] / one["per_second"]
        out.append(f"| `notifd --workers 2` round trips random? speed-up | {two['per_second']:,.0f}/s against "
                   f"{one['per_second']:,.0f}/s: {speedup:.2f}× | – | – | ≥ 1.6× | {_verdict(speedup >= 1.6)} |")
    else:
        out.append("| `notifd --workers 2` round-trip scaling | not measured (`roundtrip --notifd-workers 2`) | – | – "
                   "| ≥ 1.6× | – |")
    out.append("")
    return out


def _fanout(section: dict) -> list[str]:
    fan = section["targets"]
    out = ["## Fan-out", "",
           f"Time from the publish (notifd: the commit) to the kernel's receipt (SO_TIMESTAMPNS) at the last and the "
           f"first subscriber; {section['subscriber_processes']} subscriber processes; notifd subscribers acknowledge "
           f"{'after each round' if section['ack'] == 'round' else 'on receipt'}. Load average "
           f"{section['load_before'][0]:.2f} before, {section['load_after'][0]:.2f} after.", "",
           "| Target | N | last p50 ms | last p99 ms | first p50 ms | server CPU ms/post | client CPU ms/post | "
           "KiB/client | missing | p50 vs Redis | p50 vs bare Twisted |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in fan.items():
        for clients, row in sorted(rows.items(), key=lambda kv: int(kv[0])):
            if "absent" in row:
                out.append(f"| {name} | {int(clients):,} | absent | | | | | | | | |")
                continue
            redis, anchor = _row(fan, REDIS, clients), _row(fan, ANCHOR, clients)
            mem = row.get("memory_kib_per_client")
            out.append(
                f"| {name} {section.get('versions', {}).get(name, '')} | {int(clients):,} | {format_ms(row['last_p50_ms'])} | "
                f"{format_ms(row['last_p99_ms'])} | {format_ms(row['first_p50_ms'])} | "
                f"{format_ms(row['server_cpu_ms_per_post'])} | {format_ms(row['client_cpu_ms_per_post'])} | "
                f"{'–' if mem is None else f'{mem:.2f}'} | {row['missing']} | "
                f"{format_ratio(ratio(row['last_p50_ms'], redis and redis['last_p50_ms']))} | "
                f"{format_ratio(ratio(row['last_p50_ms'], anchor and anchor['last_p50_ms']))} |"
            )
    out.append("")
    return out


def _idle(section: dict) -> list[str]:
    out = ["## Idle", "", f"{section['clients']:,} connected subscribers, nothing published.", "",
           "| Target | KiB per client | idle CPU % of a core |", "| --- | --- | --- |"]
    for name, row in section["targets"].items():
        if "absent" in row:
            out.append(f"| {name} | absent | |")
        else:
            out.append(f"| {name} | {row['memory_kib_per_client']:.2f} | {row['idle_cpu_percent']:.2f} |")
    out.append("")
    return out


def _roundtrip(section: dict) -> list[str]:
    out = ["## Round trips", "",
           f"{section['connections']} connections, one request in flight each, {section['seconds']:.0f} s.", "",
           "| Server and request | per second | server CPU % | client CPU % |", "| --- | --- | --- | --- |"]
    for name, row in section["rows"].items():
        out.append(f"| {name} | {row['per_second']:,.0f} | {row['server_cpu_percent']:.0f} | {row['client_cpu_percent']:.0f} |")
    out.append("")
    return out


def _ingest(section: dict) -> list[str]:
    out = ["## Ingest", "",
           f"- `notifctl add classified TEXT`: wall p50 {section['add_p50_ms']:.0f} ms, p99 {section['add_p99_ms']:.0f} ms "
           f"over {section['add_runs']} runs (import time of the command: {section.get('import_ms', 0):.0f} ms).",
           f"- `notifctl add --batch FILE` of {section['batch_items']:,} items: {section['batch_seconds']:.2f} s, "
           f"{section['batch_items_per_s']:,.0f} items/s; from stdin: {section['stdin_items_per_s']:,.0f} items/s."]
    if "normal_add_p50_ms" in section:
        syncs = section.get("syncs") or {}

        def described(counts) -> str:
            if counts is None:
                return "not counted (no strace)"
            files = {"wal": "the WAL", "directory": "its directory", "database": "the database file"}
            return ", ".join(f"{n} of {files.get(kind, kind)}" for kind, n in sorted(counts.items(), reverse=True)) or "none"

        out += [
            f"- What durability costs, measured in the same run: the posting transaction at `synchronous=NORMAL` "
            f"(the WAL not synced at commit, as before posts were durable; `bench/normal_notifctl.py`, notifctl "
            f"with that one pragma changed) against FULL through the same launcher: `notifctl add` p50 "
            f"{section['normal_add_p50_ms']:.0f} ms against {section['control_add_p50_ms']:.0f} ms, p99 "
            f"{section['normal_add_p99_ms']:.0f} ms against {section['control_add_p99_ms']:.0f} ms; `--batch` "
            f"{section['normal_batch_items_per_s']:,.0f} items/s against {section['batch_items_per_s']:,.0f} "
            f"(median of {section['batch_runs']} each).",
            f"- Syncs of one `notifctl add` (strace): at FULL {described(syncs.get('full'))}; at NORMAL "
            f"{described(syncs.get('normal'))}."]
    return out + [""]


def _sustained(section: dict) -> list[str]:
    out = ["## Sustained fan-out", "",
           f"{section['posts']:,} posts at {section['rate']:.0f}/s for {section['seconds']:.0f} s to {section['clients']:,} "
           f"clients that acknowledge at once. Latency of a post: until the last client heard of it (its first "
           f"notification after the commit; the C floor's: after the publish). The C floor (bench/floor.c) keeps "
           f"notifd's rule of one notification until `OK`, in one epoll loop with no framework or database, "
           f"measured the same way just after.", ""]
    floor = section.get("floor") or {}
    for name, figures in (("notifd", section), ("C floor", floor)):
        if "p99_ms" not in figures:
            if figures.get("absent"):
                out.append(f"- {name}: absent ({figures['absent']})")
            continue
        out += [
            f"- {name}: p50 {format_ms(figures['p50_ms'])} ms, p99 {format_ms(figures['p99_ms'])} ms "
            f"({format_ratio(figures.get('p99_ratio'))} its single-post p50), max {format_ms(figures['max_ms'])} ms; "
            f"single-post fan-out at that N: p50 {format_ms(figures['single_p50_ms'])} ms; server CPU "
            f"{figures['server_cpu_percent']:.0f} % of a core.",
            f"  Posts some client never heard of: {figures['unheard_posts']}; notifications received: "
            f"{figures['notifications']:,}. RSS first/last 10 s: {figures['rss_first_kib']:,} / "
            f"{figures['rss_last_kib']:,} KiB; socket queues (send, receive bytes) first/last: "
            f"{figures['sendq_first']:,}/{figures['sendq_last']:,}, {figures['recvq_first']:,}/{figures['recvq_last']:,}.",
        ]
    return out + [""]


def _sustained_read_targets(section: dict) -> list[str]:
    out = []
    for label, setup in section.get("setups", {}).items():
        rows = [row for row in setup["minutes"] if row["reads"]]
        name = f"sustained read, {label}, {setup['clients']:,} clients at {setup['rate']:.0f} posts/s"
        worst50 = max((row["p50_ms"] for row in rows), default=None)
        worst99 = max((row["p99_ms"] for row in rows), default=None)
        share = setup.get("db_answered_share")
        met = setup["targets"]
        out.append(f"| {name}: post→read p50, worst minute | {format_ms(worst50)} ms | – | – | ≤ 50 ms every minute | "
                   f"{_verdict(met['read_p50'])} |")
        out.append(f"| {name}: post→read p99, worst minute | {format_ms(worst99)} ms | – | – | ≤ 200 ms every minute | "
                   f"{_verdict(met['read_p99'])} |")
        out.append(f"| {name}: client reads answered by the database | "
                   f"{'–' if share is None else f'{100 * share:.2f} %'} | – | – | ≤ 1 % | {_verdict(met['db_share'])} |")
        out.append(f"| {name}: notification p50 | {format_ms(setup['notif_p50_ms'])} ms | – | – | ≤ 20 ms | "
                   f"{_verdict(met['notif_p50'])} |")
    return out


def _http_targets(section: dict) -> list[str]:
    if not section:
        return []
    out = []
    fan = section["targets"]
    mine, nchan = _row(fan, NOTIFD, "5000"), _row(fan, NCHAN, "5000")
    if mine:
        r = ratio(mine["last_p50_ms"], nchan and nchan["last_p50_ms"])
        out.append(f"| SSE fan-out N=5,000 last p50 (HTTP post → last event) | {format_ms(mine['last_p50_ms'])} ms, "
                   f"{format_ratio(r)} nchan's {format_ms(nchan and nchan['last_p50_ms'])} ms | – | – | ≤ 1.5× nchan | "
                   f"{_verdict(None if r is None else r <= 1.5)} |")
    posting = section.get("posting", {})
    if NOTIFD in posting:
        row, theirs = posting[NOTIFD], posting.get(NCHAN)
        versus = f", nchan (in memory) {theirs['per_second']:,.0f}/s" if theirs else ""
        out.append(f"| durable HTTP posts, {row['publishers']} concurrent publishers | {row['per_second']:,.0f}/s"
                   f"{versus} | – | – | ≥ 5,000/s | {_verdict(row['per_second'] >= 5000)} |")
    return out


def _load(section: dict) -> str:
    if "load_before" not in section:
        return ""
    return f" Load average {section['load_before'][0]:.2f} before, {section['load_after'][0]:.2f} after."


def _sustained_read(section: dict) -> list[str]:
    out = ["## Sustained read", "",
           f"{section['clients']:,} named clients run the tutorial's loop (on `notif: classified`: `stop_notif`, "
           f"`classified?` until the empty line, `notif` again) while items are posted at {section['rate']:g}/s, "
           "each committed as `notifctl add` commits it. Post→read: from the commit to a client receiving the item "
           "(kernel receipt time), over every client and item posted in that minute. Notification: from the commit "
           "to the `notif:` that announced it, pushed while the client listened. A client read is one `classified?` "
           "(each drain's final empty answer included). Database calls are transactions (the daemon's "
           "`notifd_database_seconds_count`), split by query: answers (client queries the database answered), "
           f"read-mark groups, the hub's catch-ups.{_load(section)}", ""]
    for label, setup in section.get("setups", {}).items():
        out += [f"### {label}", "",
                f"{setup['posts']:,} posts at {setup['rate']:.1f}/s for {setup['seconds']:.0f} s; "
                f"{setup['reader_processes']} reader processes using {setup['reader_cpu_percent']:.0f} % of a core; "
                f"load average after: {setup['load_after'][0]:.2f}.", "",
                "| minute | posts | post→read p50 ms | p99 ms | max ms | notification p50 ms | p99 ms | client reads | "
                "database calls | per read | answers | read-mark groups | catch-ups | node CPU % |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in setup["minutes"]:
            per_read = row["db_calls"] / row["queries"] if row["queries"] else None
            out.append(
                f"| {row['minute']} | {row['posts']:,} | {format_ms(row['p50_ms'])} | {format_ms(row['p99_ms'])} | "
                f"{format_ms(row['max_ms'])} | {format_ms(row['notif_p50_ms'])} | {format_ms(row['notif_p99_ms'])} | "
                f"{row['queries']:,} | {row['db_calls']:,} | {'–' if per_read is None else f'{per_read:.3f}'} | "
                f"{row['db_next_unread']:,} | {row['db_mark_read']:,} | {row['db_catch_ups']:,} | "
                f"{' + '.join(f'{cpu:.0f}' for cpu in row['node_cpu_percent'])} |")
        share = setup["db_answered_share"]
        out += ["",
                f"- Database calls per client read: {setup['db_calls_per_read']:.3f} in all, "
                f"{setup['db_calls_per_read_without_marks']:.3f} without the read-mark groups; client reads answered "
                f"by the database: {setup['db_next_unread']:,} of {setup['queries']:,} "
                f"({'–' if share is None else f'{100 * share:.2f} %'}).",
                f"- Notifications: {setup['notifications_pushed']:,} pushed while listening (p50 "
                f"{format_ms(setup['notif_p50_ms'])} ms, p99 {format_ms(setup['notif_p99_ms'])} ms), "
                f"{setup['notifications_on_entering']:,} sent on re-entering notification mode.",
                f"- Items never read by a client: {setup['unread']:,}; read twice: {setup['duplicates']:,}; "
                f"node CPU over the run: {' + '.join(f'{cpu:.0f}' for cpu in setup['node_cpu_percent'])} % of a core.", ""]
    return out


def _http(section: dict) -> list[str]:
    fan = section["targets"]
    versions = section.get("versions", {})
    out = ["## HTTP", "",
           "notifd's HTTP API beside nginx with nchan (one worker process), both started by the benchmark. "
           "Fan-out: time from sending the POST to the kernel's receipt of the event at the first and the last of N "
           f"Server-Sent Events subscribers; {section['subscriber_processes']} subscriber processes. notifd's post is "
           f"durable (on disk before it is fanned out and answered); nchan keeps its messages in memory.{_load(section)}", "",
           "| Target | N | last p50 ms | last p99 ms | first p50 ms | server CPU ms/post | client CPU ms/post | "
           "missing | p50 vs nchan |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in fan.items():
        for clients, row in sorted(rows.items(), key=lambda kv: int(kv[0])):
            if "absent" in row:
                out.append(f"| {name} | {int(clients):,} | absent: {row['absent']} | | | | | | |")
                continue
            nchan = _row(fan, NCHAN, clients)
            out.append(
                f"| {name} {versions.get(name, '')} | {int(clients):,} | {format_ms(row['last_p50_ms'])} | "
                f"{format_ms(row['last_p99_ms'])} | {format_ms(row['first_p50_ms'])} | "
                f"{format_ms(row['server_cpu_ms_per_post'])} | {format_ms(row['client_cpu_ms_per_post'])} | "
                f"{row['missing']} | {format_ratio(ratio(row['last_p50_ms'], nchan and nchan['last_p50_ms']))} |")
    posting = section.get("posting", {})
    if posting:
        out += ["", "Posting over keep-alive connections, one POST in flight on each, no subscribers:", "",
                "| Target | publishers | posts/s | request p50 ms | p99 ms | statuses | posts per transaction | "
                "database call ms (mean) | disk fdatasync ms (p50) | server CPU % | client CPU % |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in posting.items():
            group = row.get("posts_per_transaction")
            kept = "durable" if name == NOTIFD else "in memory"
            out.append(
                f"| {name} ({kept}) | {row['publishers']} | {row['per_second']:,.0f} | {format_ms(row['latency_p50_ms'])} | "
                f"{format_ms(row['latency_p99_ms'])} | {', '.join(f'{k}: {v:,}' for k, v in sorted(row['statuses'].items()))} | "
                f"{'–' if group is None else f'{group:.1f}'} | {format_ms(row.get('database_call_ms'))} | "
                f"{format_ms(row.get('fdatasync_p50_ms'))} | {row['server_cpu_percent']:.0f} | "
                f"{row['client_cpu_percent']:.0f} |")
    out.append("")
    return out


def plot(section: dict, file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in section["targets"].items():
        points = sorted((int(c), r) for c, r in rows.items() if "absent" not in r and r.get("last_p50_ms") is not None)
        if not points:
            continue
        xs = [c for c, _ in points]
        line, = ax.plot(xs, [r["last_p50_ms"] for _, r in points], marker="o", label=f"{name} p50")
        ax.plot(xs, [r["last_p99_ms"] for _, r in points], linestyle=":", color=line.get_color(), label=f"{name} p99")
    ax.set_xlabel("idle subscribers (N)")
    ax.set_ylabel("publish → last receipt (ms)")
    ax.set_title("Fan-out of one short line, loopback, 2 cores")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)
