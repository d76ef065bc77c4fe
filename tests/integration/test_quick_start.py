"""The README's quick start, as a new user runs it: `notifd` with no argument and no
configuration (its per-user database, the default ports 8789 and 8788), then the block of
commands "in another terminal", run as written by a shell. Only `.venv/bin/` is changed to
where the programs are installed here, and HOME to a new directory (a new user)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from notifd.config import DEFAULT_HTTP, DEFAULT_LISTEN
from tests.integration.conftest import _ENV, TIMEOUT, DaemonProcess, eventually, read_line
from tests.require import require_tool

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "README.md"
BIN = Path(sys.executable).parent


def blocks() -> list[str]:
    quick_start = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", quick_start, flags=re.S | re.M)


def port_of(entry: str) -> int:
    return int(entry.split(":")[1])


def test_the_readme_quick_start_works_as_written(tmp_path):
    require_tool("nc", "netcat-openbsd", "to run the README's quick start")
    require_tool("curl", "curl", "to run the README's quick start")
    install, _test_command, terminal = blocks()
    assert install.rstrip().endswith("&& .venv/bin/notifd")  # the daemon with no argument
    for entry in (*DEFAULT_LISTEN, *DEFAULT_HTTP):
        with socket.socket() as probe:
            busy = probe.connect_ex(("127.0.0.1", port_of(entry))) == 0
        assert not busy, f"port {port_of(entry)} is in use: the quick start needs notifd's default ports free"
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in _ENV.items() if not key.startswith(("NOTIFD_", "XDG_"))}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")

    # Started by hand: the harness would give it a database and ports.
    daemon = DaemonProcess(Path("unused"), new_database=False, env=env)
    daemon.proc = subprocess.Popen(
        [str(BIN / "notifd")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env={**env, "NOTIFD_LOG_FORMAT": "text"},
    )
    threading.Thread(target=daemon._drain, args=(daemon.proc, daemon.log_lines), daemon=True).start()
    shell = None
    try:
        daemon.wait_for_log(r"notifd listening on TCP 127\.0\.0\.1:8789")
        daemon.wait_for_log(r"HTTP API and live page on http://127\.0\.0\.1:8788/")
        assert list(home.glob(".local/share/notifd/notifd.db")), "no per-user database"
        script = terminal.replace(".venv/bin/", f"{BIN}/")
        shell = subprocess.Popen(
            ["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            cwd=tmp_path, start_new_session=True,
        )
        seen: list[str] = []
        # What the block prints, in whatever order the background watch interleaves it (curl
        # ends its JSON without a line ending, so the next line may follow it on the same line).
        wanted = [
            "classified: Nice appart in the 11e.\n",  # watch, at once
            "\nNice appart in the 11e.\n",  # nc's classified?
            "classified: Studio near the canal\n",  # watch, hearing the HTTP post
            ": notifd events\n",  # curl -N: the stream is open
        ]
        while not all(text in "".join(seen) for text in wanted):
            try:
                seen.append(read_line(shell.stdout, TIMEOUT))
            except AssertionError:
                raise AssertionError(f"printed only {seen}") from None
        printed = "".join(seen)
        assert re.search(r"^1$", printed, flags=re.M)  # notifctl add printed the id
        assert re.search(r"^\d{2,}$", printed, flags=re.M)  # nc's random?
        posted = json.loads(re.search(r"^\{.*?\}", printed, flags=re.M).group(0))
        assert (posted["id"], posted["type"], posted["text"]) == (2, "classified", "Studio near the canal")
    finally:
        if shell is not None:
            # SIGTERM, not Ctrl-C's SIGINT: a non-interactive shell starts `watch &` with
            # SIGINT ignored, so it would outlive the test.
            os.killpg(shell.pid, signal.SIGTERM)
            try:
                shell.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(shell.pid, signal.SIGKILL)
        daemon.stop()
    assert not any("Traceback" in line for line in daemon.drained_log()), daemon.log
    assert shell is not None
    eventually(lambda: not _still_running(shell.pid))  # no program of the block outlives it


def _still_running(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
