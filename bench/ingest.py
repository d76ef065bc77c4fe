# `ingest`: the wall time of `notifctl add` (a new process each time, the daemon running,
# as an admin or a script calls it) and the rate of `notifctl add --batch`.
#
# What durability costs: the same figures with the posting transaction at
# `synchronous=NORMAL` (the WAL not synced at commit, as before posts were made durable),
# measured in the same run on the same database and daemon by bench/normal_notifctl.py:
# notifctl itself with that one pragma changed. Its launcher (`python -m`) differs from the
# installed `notifctl` script, so it also runs unchanged (FULL) as a control: the cost of
# durability is NORMAL against that control, launcher for launcher. The three commands take
# turns, run by run, so that noise from the rest of the machine falls on each alike.
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import targets as targetmod
from bench.stats import percentile

RUNS = 30
BATCH = 100_000
BATCH_RUNS = 3  # batches per setting, taking turns; the median counts


def _notifctl() -> list[str]:
    beside = Path(sys.executable).with_name("notifctl")
    return [str(beside)] if beside.exists() else [sys.executable, "-c", "from notifd.cli import notifctl_main; notifctl_main()"]


def _normal(synchronous: str = "NORMAL") -> tuple[list[str], dict]:
    """bench/normal_notifctl.py, and its environment (NORMAL, or FULL for the control)."""
    return [sys.executable, "-m", "bench.normal_notifctl"], {"BENCH_SYNCHRONOUS": synchronous}


def _syncs(command: list[str], env: dict) -> dict[str, int] | None:
    """The fsync and fdatasync calls of one run of `command`, by file (strace); None without strace."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile(prefix="bench-strace-") as trace:
        subprocess.run(["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o", trace.name, *command],
                       capture_output=True, env={**os.environ, "NOTIFD_CONFIG": "", **env}, cwd=targetmod.REPO,
                       timeout=120, check=True)
        return sync_counts(Path(trace.name).read_text())


def sync_counts(trace: str) -> dict[str, int]:
    """fsync/fdatasync calls in an `strace -y` output, by file: the WAL, the database, a directory."""
    counts: dict[str, int] = {}
    for line in trace.splitlines():
        if "sync(" in line and "<" in line:
            path = line[line.index("<") + 1 : line.index(">")]
            kind = "wal" if path.endswith("-wal") else "database" if path.endswith(".db") else "directory"
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _timed(command: list[str], stdin: bytes | None = None, env: dict | None = None) -> float:
    env = {**os.environ, "NOTIFD_CONFIG": "", **(env or {})}
    started = time.perf_counter()
    result = subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=600, cwd=targetmod.REPO)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed: {result.stderr.decode(errors='replace')}")
    return elapsed


def _import_ms(db: str) -> float:
    """The imports of one `notifctl add`, from -X importtime (top-level modules only)."""
    command = [sys.executable, "-X", "importtime", "-c",
               f"import sys; sys.argv=['notifctl','--db',{db!r},'add','classified','import probe'];"
               "from notifd.cli import notifctl_main\ntry: notifctl_main()\nexcept SystemExit: pass"]
    err = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NOTIFD_CONFIG": ""}).stderr
    total = 0
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            _self, cumulative, name = line[len("import time:"):].split("|")
            if not name.startswith("  ") and cumulative.strip().isdigit():
                total += int(cumulative)
    return total / 1000


def run_ingest(log) -> dict:
    target = targetmod.Notifd()
    target.start()  # the daemon runs: each add also sends its wake-up, as in production
    try:
        db = str(target.db_path)
        add = ["--db", db, "add", "classified", "Nice appart in the 11e."]
        normal, normal_env = _normal()
        control, control_env = _normal("FULL")
        commands = {  # name -> (command, environment)
            "full": ([*_notifctl(), *add], {}),
            "full_control": ([*control, *add], control_env),
            "normal": ([*normal, *add], normal_env),
        }
        for command, env in commands.values():
            _timed(command, env=env)  # warm the page cache
        walls: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(RUNS):
            for name, (command, env) in commands.items():
                walls[name].append(1000 * _timed(command, env=env))
        syncs = {name: _syncs(command, env) for name, (command, env) in commands.items()}
        lines = "".join(f"classified Bel appartement numéro {i}, 3 pièces\n" if i % 2 else f"random {i}\n" for i in range(BATCH))
        batch_file = Path(target.tmp.name) / "batch.txt"
        batch_file.write_text(lines)
        batch = ["--db", db, "add", "--batch", str(batch_file)]
        batches: dict[str, list[float]] = {"full": [], "normal": []}
        for _ in range(BATCH_RUNS):
            batches["full"].append(_timed([*_notifctl(), *batch]))
            batches["normal"].append(_timed([*normal, *batch], env=normal_env))
        stdin_s = _timed([*_notifctl(), "--db", db, "add", "--batch", "-"], stdin=lines.encode())
        batch_s = percentile(batches["full"], 50)
        normal_batch_s = percentile(batches["normal"], 50)
        section = {
            "add_runs": RUNS,
            "add_ms": walls["full"],
            "add_p50_ms": percentile(walls["full"], 50),
            "add_p99_ms": percentile(walls["full"], 99),
            "import_ms": _import_ms(db),
            "batch_items": BATCH,
            "batch_seconds": batch_s,
            "batch_items_per_s": BATCH / batch_s,
            "stdin_items_per_s": BATCH / stdin_s,
            # The same at synchronous=NORMAL (bench/normal_notifctl.py), and its launcher at FULL.
            "normal_add_ms": walls["normal"],
            "normal_add_p50_ms": percentile(walls["normal"], 50),
            "normal_add_p99_ms": percentile(walls["normal"], 99),
            "control_add_ms": walls["full_control"],
            "control_add_p50_ms": percentile(walls["full_control"], 50),
            "control_add_p99_ms": percentile(walls["full_control"], 99),
            "batch_runs": BATCH_RUNS,
            "batch_seconds_runs": batches,
            "normal_batch_items_per_s": BATCH / normal_batch_s,
            "syncs": syncs,
        }
    finally:
        target.stop()
    log(f"  notifctl add p50 {section['add_p50_ms']:.0f} ms (imports {section['import_ms']:.0f} ms); "
        f"batch {section['batch_items_per_s']:,.0f} items/s, stdin {section['stdin_items_per_s']:,.0f} items/s")
    log(f"  synchronous=NORMAL: add p50 {section['normal_add_p50_ms']:.0f} ms p99 {section['normal_add_p99_ms']:.0f} ms "
        f"against FULL through the same launcher p50 {section['control_add_p50_ms']:.0f} ms "
        f"p99 {section['control_add_p99_ms']:.0f} ms; batch {section['normal_batch_items_per_s']:,.0f} items/s; "
        f"syncs per add: {syncs}")
    return section
