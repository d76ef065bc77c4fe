# `ingest`: the wall time of `notifctl add` (a new process each time, the daemon running,
# as an admin or a script calls it) and the rate of `notifctl add --batch`.
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench import targets as targetmod
from bench.stats import percentile

RUNS = 30
BATCH = 100_000


def _notifctl() -> list[str]:
    beside = Path(sys.executable).with_name("notifctl")
    return [str(beside)] if beside.exists() else [sys.executable, "-c", "from notifd.cli import notifctl_main; notifctl_main()"]


def _timed(command: list[str], stdin: bytes | None = None) -> float:
    env = {**os.environ, "NOTIFD_CONFIG": ""}
    started = time.perf_counter()
    result = subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=600)
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
        command = [*_notifctl(), "--db", db, "add", "classified", "Nice appart in the 11e."]
        _timed(command)  # warm the page cache
        walls = [1000 * _timed(command) for _ in range(RUNS)]
        lines = "".join(f"classified Bel appartement numéro {i}, 3 pièces\n" if i % 2 else f"random {i}\n" for i in range(BATCH))
        batch_file = Path(target.tmp.name) / "batch.txt"
        batch_file.write_text(lines)
        batch_s = _timed([*_notifctl(), "--db", db, "add", "--batch", str(batch_file)])
        stdin_s = _timed([*_notifctl(), "--db", db, "add", "--batch", "-"], stdin=lines.encode())
        section = {
            "add_runs": RUNS,
            "add_ms": walls,
            "add_p50_ms": percentile(walls, 50),
            "add_p99_ms": percentile(walls, 99),
            "import_ms": _import_ms(db),
            "batch_items": BATCH,
            "batch_seconds": batch_s,
            "batch_items_per_s": BATCH / batch_s,
            "stdin_items_per_s": BATCH / stdin_s,
        }
    finally:
        target.stop()
    log(f"  notifctl add p50 {section['add_p50_ms']:.0f} ms (imports {section['import_ms']:.0f} ms); "
        f"batch {section['batch_items_per_s']:,.0f} items/s, stdin {section['stdin_items_per_s']:,.0f} items/s")
    return section
