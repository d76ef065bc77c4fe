"""A real notifd process on a free TCP port, real notifctl processes, and plain-socket clients.

Nothing here sleeps to synchronise: every wait is for a line, a process exit, or a
condition polled against a deadline.
"""
from __future__ import annotations

import os
import pwd
import queue
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.require import require_root

TIMEOUT = 10.0  # seconds any single expected event may take before the test fails
LISTENING = re.compile(r"notifd listening on (?:TCP|TLS) ([\d.]+):(\d+)")
HTTP_ON = re.compile(r"HTTP API and live page on https?://([\d.]+):(\d+)/")

_measurements: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if _measurements:
        terminalreporter.section("notifd measurements")
        for line in _measurements:
            terminalreporter.write_line(line)


@pytest.fixture
def report():
    """Record a measured figure; it is printed at the end of the test run."""
    return _measurements.append


def _script(name: str) -> list[str]:
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    entry = {"notifd": "notifd_main", "notifctl": "notifctl_main"}[name]
    return [sys.executable, "-c", f"from notifd.cli import {entry}; {entry}()"]


_ENV = {**os.environ, "NOTIFD_CONFIG": ""}


class DaemonProcess:
    """One `notifd` process; `start()` returns once it listens."""

    def __init__(
        self, db_path: Path, *extra: str, env: dict | None = None, listen: str = "tcp:0:interface=127.0.0.1",
        prefix: tuple[str, ...] = (), **popen
    ) -> None:
        self.db_path = db_path
        self.prefix = prefix
        self.extra = extra
        self.env = env
        self.listen = listen
        self.popen = popen
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.http_port: int | None = None
        self.log_lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []

    def start(self) -> "DaemonProcess":
        # The HTTP API on a free port too (its default port would be shared by every daemon of a test).
        http = [] if "--http" in self.extra else ["--http", "tcp:0:interface=127.0.0.1"]
        self.proc = subprocess.Popen(
            [*self.prefix, *_script("notifd"), "--db", str(self.db_path), "--listen", self.listen, *http, *self.extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**_ENV, "NOTIFD_LOG_FORMAT": "text", **(self.env or {})},
            **self.popen,
        )
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        line = self.wait_for_log(LISTENING)
        self.port = int(LISTENING.search(line).group(2))
        self.http_port = int(HTTP_ON.search(self.wait_for_log(HTTP_ON)).group(2)) if http else None
        return self

    def _drain(self, proc) -> None:
        for line in proc.stderr:
            self.log_lines.put(line)
        self.log_lines.put("")  # end of output

    def wait_for_log(self, pattern: re.Pattern, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.log_lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"notifd did not log {pattern.pattern!r}; log so far: {self.log}") from None
            if line == "":
                raise AssertionError(f"notifd exited ({self.proc.wait()}) before logging {pattern.pattern!r}: {self.log}")
            self.log.append(line)
            if pattern.search(line):
                return line

    def drained_log(self) -> list[str]:
        """Everything logged so far (without waiting), for failure messages."""
        while not self.log_lines.empty():
            self.log.append(self.log_lines.get_nowait())
        return self.log

    def connect(self) -> "LineClient":
        return LineClient(self.port)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=TIMEOUT)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)


class LineClient:
    """A protocol client on a plain socket, with timeouts; lines are bytes with their ending."""

    def __init__(self, port: int, source: str | None = None) -> None:
        # `source`: another loopback address (127.0.0.2...) to connect from, as another host would.
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0) if source else None
        )
        self.buffer = b""

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def read_line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the server; unread: {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def ask(self, line: str) -> str:
        """Send a line, return the reply without its line ending."""
        self.send(line)
        return self.read_line().decode().removesuffix("\r\n")

    def close(self) -> None:
        self.sock.close()


def _notifctl_command(db_path: Path, *args: str) -> list[str]:
    return [*_script("notifctl"), "--db", str(db_path), *args]



def run_notifctl(db_path: Path, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        _notifctl_command(db_path, *args), input=stdin, capture_output=True, text=True, timeout=TIMEOUT * 3, env=_ENV
    )
    if check:
        assert result.returncode == 0, f"notifctl {args} failed: {result.stderr}"
    return result


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "notifd.db"


@pytest.fixture
def daemon(db_path):
    started: list[DaemonProcess] = []

    def start(*extra: str, **options) -> DaemonProcess:
        process = DaemonProcess(db_path, *extra, **options).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def ensure_database(db: Path | str) -> None:
    """Create the database (a SQLite file or a PostgreSQL URL) at head if it has no schema,
    as `notifctl db upgrade` would: notifctl refuses to create one by accident, and a test
    may post before notifd ran."""
    if isinstance(db, Path) and db.exists():
        return
    from notifd import db as dbmod

    dbmod.open_engine(dbmod.database_url(str(db))).dispose()


@pytest.fixture
def notifctl(db_path):
    """Run notifctl on the test database (created first if needed)."""

    def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
        ensure_database(db_path)
        return run_notifctl(db_path, *args, **kwargs)

    return run


@pytest.fixture
def start_notifctl(db_path):
    """Start notifctl without waiting for it; its stdout is a pipe."""
    started = []

    def start(*args: str) -> subprocess.Popen:
        ensure_database(db_path)
        proc = subprocess.Popen(
            _notifctl_command(db_path, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ENV
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


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


# --- a service user, as `useradd --system` makes `notifd` -----------------------------------------


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    prefix: tuple[str, ...]  # runs the command that follows as this user

    def command(self, *argv: str) -> list[str]:
        return [*self.prefix, *argv]


# Run as root in a mount namespace of the command's own: show other users the one entry of
# a directory they cannot enter (pyenv's Python under /root, 0700), then run the command.
_SHOW_ENTRY = """set -e
hidden=$1 entry=$2 view=$3
shift 3
mount --bind "$hidden/$entry" "$view"
mount -t tmpfs -o mode=0755,size=1m tmpfs "$hidden"
mkdir "$hidden/$entry"
mount --bind "$view" "$hidden/$entry"
exec "$@"
"""


def _hidden_interpreter() -> tuple[Path, str] | None:
    """(a directory other users cannot enter, its entry holding this Python), or None."""
    path = Path(os.path.realpath(sys.executable))
    for parent in reversed(path.parents):
        if parent != Path(parent.anchor) and not parent.stat().st_mode & stat.S_IXOTH:
            return parent, path.relative_to(parent).parts[0]
    return None


@pytest.fixture
def service_user(tmp_path_factory):
    """A throw-away system user (and its group) for commands run as the service's user; removed after.

    Its processes must have ended by the end of the test: userdel refuses a user still running.
    """
    require_root("it creates a throw-away system user to run notifd and notifctl as")
    name = f"notifd-test-{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )
    try:
        entry = pwd.getpwnam(name)
        prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"]
        hidden = _hidden_interpreter()
        if hidden is not None:
            view = tmp_path_factory.mktemp("interpreter")
            prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SHOW_ENTRY, "sh",
                      str(hidden[0]), hidden[1], str(view), *prefix]
        yield ServiceUser(name, entry.pw_uid, entry.pw_gid, tuple(prefix))
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


@pytest.fixture
def system_root():
    """An empty directory every user may enter, standing for / (pytest's own are root-only)."""
    root = Path(tempfile.mkdtemp(prefix="notifd-root-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


def read_line(stream, timeout: float = TIMEOUT) -> str:
    """The next line of a process's pipe, or an AssertionError after `timeout` (never a hang)."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        raise AssertionError(f"no line within {timeout} s")
    return result[0]
