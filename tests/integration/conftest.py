"""A real notifd process on a free TCP port, real notifctl processes, and plain-socket clients.

Nothing here sleeps to synchronise: every wait is for a line, a process exit, or a
condition polled against a deadline.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# The harness itself is notifd.testing, which plugin authors use too; these names stay
# importable from here for the suite's tests.
from notifd.testing import (  # noqa: F401
    ENV as _ENV,
    LISTENING,
    TIMEOUT,
    DaemonProcess,
    LineClient,
    ensure_database,
    eventually,
    notifctl_command as _notifctl_command,
    read_line,
    run_notifctl,
    script as _script,
)
from tests.require import require_root

@pytest.fixture
def report(request):
    """Record a measured figure; tests/conftest.py prints it at the end of the test run."""
    return lambda line: request.node.user_properties.append(("notifd measurement", line))


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
    _shadow_utility("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name)
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
        _shadow_utility("userdel", name)


def _shadow_utility(*argv: str) -> None:
    """Run useradd or userdel, again while another test's holds /etc/passwd's lock (parallel
    workers add and remove users at once; the tools give up at once, exit code 1 or 10)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode == 0:
            return
        if "lock" not in done.stderr or time.monotonic() > deadline:
            raise AssertionError(f"{' '.join(argv)}: {done.stderr.strip()}")
        time.sleep(0.05)


@pytest.fixture
def system_root():
    """An empty directory every user may enter, standing for / (pytest's own are root-only)."""
    root = Path(tempfile.mkdtemp(prefix="notifd-root-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)
