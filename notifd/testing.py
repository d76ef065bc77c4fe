"""Test a notifd plugin end to end: a real daemon, a protocol client, notifctl, an HTTP receiver.

Installed with notifd and registered as a pytest plugin (entry point group ``pytest11``), so
its fixtures need no import and no conftest.py:

``notifd_config``
    Override it to give the daemon a configuration: a dict (written as TOML) or TOML
    text. ``db``, ``listen`` and a quick ``poll_interval`` (0.1 s) are filled in.
``notifd_plugins``
    Override it to load plugins that are not installed: paths to plugin files (loaded
    from a plugins directory, named after the file) or to project directories with a
    ``pyproject.toml`` (their ``notifd`` entry points, as ``pip install`` would declare
    them). Installed packages' entry points are always loaded.
``notifd_harness``
    Where it all lives (``dir``, ``config_path``, ``db_path``) and how to start more daemons.
``notifd_daemon``
    A running ``notifd`` on a free port of 127.0.0.1 with a temporary SQLite database.
``notifd_client``
    A ``LineClient`` connected to it: ``ask``, ``expect``, ``notif`` (every wait has a timeout).
``notifctl``
    Runs ``notifctl`` on the same configuration and database; returns a CompletedProcess.
``http_receiver``
    A real HTTP server recording the requests it gets: the far end of a webhook.

The configuration file is written in the test's ``tmp_path``, so relative paths in plugin
settings are resolved against ``tmp_path``. Nothing here sleeps to synchronise: every wait is
for a line, a process exit, or a condition polled against a deadline (`eventually`).
Disable the plugin with ``pytest -p no:notifd``.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable

import pytest

TIMEOUT = 10.0  # seconds any single expected event may take before the test fails
LISTENING = re.compile(r"notifd listening on (?:TCP|TLS) ([\d.]+):(\d+)")
HTTP_ON = re.compile(r"HTTP API and live page on https?://([\d.]+):(\d+)/")


def script(name: str) -> list[str]:
    """The command line that runs `notifd` or `notifctl` of this Python environment."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    entry = {"notifd": "notifd_main", "notifctl": "notifctl_main"}[name]
    return [sys.executable, "-c", f"from notifd.cli import {entry}; {entry}()"]


# The environment of the programs run here: none of the caller's NOTIFD_* settings (a
# database, a plugins directory) or systemd's state directory leaks into a test.
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("NOTIFD_") and k != "STATE_DIRECTORY"},
    "NOTIFD_CONFIG": "",
}


class DaemonProcess:
    """One `notifd` process; `start()` returns once it listens, and may be called again after a stop."""

    def __init__(
        self, db_path: Path, *extra: str, env: dict | None = None, listen: str = "tcp:0:interface=127.0.0.1",
        prefix: tuple[str, ...] = (), new_database: bool = True, **popen
    ) -> None:
        self.db_path = db_path
        # A new SQLite database is copied in at head before the start (as ensure_database does),
        # which spares each daemon the migrations; False lets notifd create it itself.
        self.new_database = new_database and isinstance(db_path, Path)
        self.prefix = prefix
        self.extra = extra
        self.env = env
        self.listen = listen
        self.popen = popen
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.http_port: int | None = None  # the HTTP API's, unless the test turned it off
        self.log_lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []

    def start(self) -> "DaemonProcess":
        if self.new_database:
            ensure_database(self.db_path)
        self.log_lines = queue.Queue()  # a previous run's end of output must not end this one
        # The HTTP API on a free port too: its default port would be shared by every daemon.
        http = [] if "--http" in self.extra else ["--http", "tcp:0:interface=127.0.0.1"]
        self.proc = subprocess.Popen(
            [*self.prefix, *script("notifd"), "--db", str(self.db_path), "--listen", self.listen, *http, *self.extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**ENV, "NOTIFD_LOG_FORMAT": "text", **(self.env or {})},
            **self.popen,
        )
        threading.Thread(target=self._drain, args=(self.proc, self.log_lines), daemon=True).start()
        line = self.wait_for_log(LISTENING)
        self.port = int(LISTENING.search(line).group(2))
        self.http_port = int(HTTP_ON.search(self.wait_for_log(HTTP_ON)).group(2)) if http else None
        return self

    @staticmethod
    def _drain(proc, lines: queue.Queue) -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put("")  # end of output

    def wait_for_log(self, pattern: re.Pattern | str, timeout: float = TIMEOUT) -> str:
        """The next log line matching `pattern` (a regular expression); fails after `timeout`."""
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.log_lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"notifd did not log {pattern.pattern!r}; log so far: {self.log}") from None
            if line == "":
                self.log_lines.put("")  # still the end for the next wait
                raise AssertionError(f"notifd exited ({self.proc.wait()}) before logging {pattern.pattern!r}: {self.log}")
            self.log.append(line)
            if pattern.search(line):
                return line

    def logged(self, pattern: re.Pattern | str, timeout: float = TIMEOUT) -> str:
        """The first log line matching `pattern`, logged already or within `timeout`."""
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in self.drained_log():
            if pattern.search(line):
                return line
        return self.wait_for_log(pattern, timeout)

    def drained_log(self) -> list[str]:
        """Everything logged so far (without waiting), for failure messages."""
        while not self.log_lines.empty():
            line = self.log_lines.get_nowait()
            if not line:
                self.log_lines.put("")  # the end stays the end for a wait
                break
            self.log.append(line)
        return self.log

    def connect(self) -> "LineClient":
        return LineClient(self.port)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` and return the exit status once the process is gone."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=TIMEOUT)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> int | None:
        """Stop it as systemd would (SIGTERM); returns its exit status."""
        if self.proc is not None and self.proc.poll() is None:
            return self.kill(signal.SIGTERM)
        return None if self.proc is None else self.proc.returncode


class LineClient:
    """A protocol client on a plain socket, with timeouts; `read_line` gives bytes with their ending."""

    def __init__(self, port: int, source: str | None = None, timeout: float = TIMEOUT) -> None:
        # `source`: another loopback address (127.0.0.2...) to connect from, as another host would.
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.buffer = b""

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def read_line(self, timeout: float | None = None) -> bytes:
        """The next line with its ending; raises TimeoutError after `timeout` (the socket's, by default)."""
        kept = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            while b"\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed by the server; unread: {self.buffer!r}")
                self.buffer += chunk
        finally:
            self.sock.settimeout(kept)
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def line(self, timeout: float | None = None) -> str:
        """The next line, without its line ending."""
        return self.read_line(timeout).decode().removesuffix("\n").removesuffix("\r")

    def ask(self, line: str) -> str:
        """Send a line, return the reply without its line ending."""
        self.send(line)
        return self.line()

    def expect(self, expected: str | re.Pattern, timeout: float | None = None) -> str:
        """Read the next line and fail unless it is `expected` (or matches it); returns the line."""
        got = self.line(timeout)
        matched = expected.fullmatch(got) if isinstance(expected, re.Pattern) else got == expected
        assert matched, f"expected {expected!r}, got {got!r}"
        return got

    def notif(self, *types: str) -> None:
        """Enter notification mode (for these types only, if any are given)."""
        self.send(" ".join(("notif", *types)))
        self.expect("will send notifs")

    def stop_notif(self) -> None:
        self.send("stop_notif")
        self.expect("OK")

    def close(self) -> None:
        self.sock.close()


def notifctl_command(db_path: Path, *args: str) -> list[str]:
    return [*script("notifctl"), "--db", str(db_path), *args]


def run_notifctl(
    db_path: Path, *args: str, stdin: str | None = None, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run notifctl on `db_path`; with `check`, fail the test unless it exits 0."""
    result = subprocess.run(
        notifctl_command(db_path, *args), input=stdin, capture_output=True, text=True, timeout=TIMEOUT * 3,
        env={**ENV, **(env or {})},
    )
    if check:
        assert result.returncode == 0, f"notifctl {args} failed: {result.stderr}"
    return result


def ensure_database(db: Path | str) -> None:
    """Create the database (a SQLite file or a PostgreSQL URL) at head if it has no schema,
    as `notifctl db upgrade` would: notifctl refuses to create one by accident, and a test
    may post before notifd ran."""
    if isinstance(db, Path):
        if not db.exists():
            _copy_new_database(db)
        return
    from notifd import db as dbmod

    dbmod.open_engine(dbmod.database_url(str(db))).dispose()


_new_database: list[bytes] = []  # a database at head, as notifd creates it; built once per process


def _copy_new_database(path: Path) -> None:
    """Write a new SQLite database at head to `path`: a copy of one this process built once.

    Running the migrations costs about 0.3 s of CPU, and a test suite creates hundreds
    of databases; the copy holds what notifd would have built, written as notifd writes a
    new database file (owner-only, and owned as notifd gives it when run as root).
    """
    from notifd import db as dbmod

    if not _new_database:
        import tempfile

        with tempfile.TemporaryDirectory() as directory:
            built = Path(directory) / "notifd.db"
            dbmod.open_engine(dbmod.database_url(str(built))).dispose()
            _new_database.append(built.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    dbmod.write_database_file(path, _new_database[0], exclusive=True)


def eventually(condition, timeout: float = TIMEOUT, every: float = 0.02):
    """Poll `condition()` until it returns something true, against a deadline; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(every)


def read_line(stream, timeout: float = TIMEOUT) -> str:
    """The next line of a process's pipe, or an AssertionError after `timeout` (never a hang)."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        raise AssertionError(f"no line within {timeout} s")
    return result[0]


# --- plugins that are not installed ------------------------------------------------------------


def declare_entry_points(project_dir: Path, site: Path) -> list[Path]:
    """Make a project's `notifd` entry points visible as `pip install` would; returns the
    directories to put on PYTHONPATH (none when the project is installed already).

    A dist-info with its entry points is written in `site`; its modules are imported from
    the project directory itself (or its `src/`).
    """
    project = tomllib.loads((project_dir / "pyproject.toml").read_text())["project"]
    try:
        importlib.metadata.distribution(project["name"])
        return []  # installed (pip install -e .): its entry points are found already
    except importlib.metadata.PackageNotFoundError:
        pass
    entry_points = project.get("entry-points", {}).get("notifd", {})
    if not entry_points:
        raise ValueError(f"{project_dir / 'pyproject.toml'}: no [project.entry-points.notifd] table")
    info = site / f"{project['name'].replace('-', '_')}-{project.get('version', '0')}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project.get('version', '0')}\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[notifd]\n{lines}")
    source = project_dir / "src" if (project_dir / "src").is_dir() else project_dir
    return [site, source]


def _toml(config: dict | str | None) -> dict[str, Any]:
    if config is None:
        return {}
    return tomllib.loads(config) if isinstance(config, str) else dict(config)


class Harness:
    """A directory holding a notifd configuration, a database and plugins; runs the programs on them."""

    def __init__(self, directory: Path, config: dict | str | None = None, plugins: Iterable[str | Path] = ()) -> None:
        self.dir = directory
        self.db_path = directory / "notifd.db"
        self.config_path = directory / "notifd.toml"
        self.plugins_dir = directory / "plugins"
        self.env: dict[str, str] = {}
        self.daemons: list[DaemonProcess] = []
        settings = {"poll_interval": 0.1, **_toml(config), "db": str(self.db_path)}
        python_path: list[Path] = []
        for given in plugins:
            path = Path(given).resolve()
            if path.is_dir():
                python_path += declare_entry_points(path, directory / "site-packages")
            elif path.suffix == ".py" and path.is_file():
                self._add_plugin_file(path)
            else:
                raise ValueError(f"notifd_plugins: {given}: expected a plugin file (.py) or a project directory")
        if self.plugins_dir.exists():
            settings["plugins_dirs"] = [*settings.get("plugins_dirs", []), str(self.plugins_dir)]
        if python_path:
            self.env["PYTHONPATH"] = os.pathsep.join(
                [*dict.fromkeys(str(p) for p in python_path), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        import tomli_w

        self.config_path.write_text(tomli_w.dumps(settings))
        self.config_path.chmod(0o600)  # it may hold secrets, and notifd refuses one others could write

    def _add_plugin_file(self, path: Path) -> None:
        # notifd refuses plugins that anyone but us could have written: modes 0755 and 0644.
        self.plugins_dir.mkdir(mode=0o755, exist_ok=True)
        self.plugins_dir.chmod(0o755)
        target = self.plugins_dir / path.name
        shutil.copyfile(path, target)
        target.chmod(0o644)

    def start(self, *args: str, **options) -> DaemonProcess:
        """Start another notifd on this configuration (stopped at the end of the test)."""
        daemon = DaemonProcess(self.db_path, "--config", str(self.config_path), *args, env=self.env, **options)
        self.daemons.append(daemon)
        return daemon.start()

    def notifctl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run notifctl on this configuration; with `check`, fail unless it exits 0."""
        ensure_database(self.db_path)  # notifctl would refuse to create it
        return run_notifctl(
            self.db_path, "--config", str(self.config_path), *args, stdin=input, check=check, env=self.env
        )

    def outbox(self) -> list[dict[str, Any]]:
        """The deliveries waiting for durable notifiers, as `notifctl outbox --json` lists them."""
        return json.loads(self.notifctl("outbox", "--json").stdout)

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.stop()


@pytest.fixture
def notifd_config() -> dict | str:
    """The daemon's configuration: override this fixture (a dict, or TOML text)."""
    return {}


@pytest.fixture
def notifd_plugins() -> list[str | Path]:
    """Plugins to load that are not installed: override this fixture (plugin files, project directories)."""
    return []


@pytest.fixture
def notifd_harness(tmp_path, notifd_config, notifd_plugins):
    harness = Harness(tmp_path, notifd_config, notifd_plugins)
    yield harness
    harness.close()


@pytest.fixture
def notifd_daemon(notifd_harness) -> DaemonProcess:
    """A running notifd; `.port`, `.connect()`, `.wait_for_log(pattern)`, `.stop()`, `.kill()`, `.start()`."""
    return notifd_harness.start()


@pytest.fixture
def notifd_client(notifd_daemon):
    client = notifd_daemon.connect()
    yield client
    client.close()


@pytest.fixture
def notifctl(notifd_harness):
    """`notifctl(*args, input=None, check=True)`: run notifctl on the test's configuration."""
    return notifd_harness.notifctl


@pytest.fixture
def notifd_outbox(notifd_harness):
    """`notifd_outbox()`: the deliveries waiting for durable notifiers (`notifctl outbox --json`)."""
    return notifd_harness.outbox


# --- the far end of a webhook -------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def json(self):
        return json.loads(self.body)


class HttpReceiver:
    """A real HTTP server in a thread, recording each request; answers `status` (200), or the next of `statuses`."""

    def __init__(self) -> None:
        self.requests: queue.Queue[Request] = queue.Queue()
        self.statuses: deque[int] = deque()
        self.status = 200  # when `statuses` is empty
        self.hold = threading.Event()  # cleared: requests hang until it is set
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.put(Request(self.command, self.path, dict(self.headers), body, time.monotonic()))
                receiver.hold.wait(TIMEOUT)
                status = receiver.statuses.popleft() if receiver.statuses else receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def next(self, timeout: float = TIMEOUT) -> Request:
        """The next request received; fails after `timeout`."""
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no request came") from None

    def __enter__(self) -> "HttpReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_receiver():
    """An HTTP server on 127.0.0.1: `.url`, `.next()` (the next Request), `.status`, `.statuses`, `.hold`."""
    with HttpReceiver() as receiver:
        yield receiver
