"""contrib/notifd.toml as shipped, its paths moved into a temporary directory: every notifctl
command, `notifd --check-config` and the daemon itself run with it, through the installed
programs. The commands are found in the click groups, so a new one cannot be forgotten:
it runs with no arguments, or the test says which arguments to give it."""
from __future__ import annotations

import re
import signal
import subprocess
import tomllib
from pathlib import Path

import click
import pytest

from notifd.cli import notifctl
from tests.integration.conftest import (
    _ENV,
    TIMEOUT,
    DaemonProcess,
    _script,
    eventually,
    read_line,
)

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "contrib" / "notifd.toml"
# Where the example puts files, and where this test puts them instead (under the temporary directory).
MOVED = {"/var/lib/notifd/": "state/", "/etc/notifd/": "etc/"}

# Each command, in this order, with the arguments it needs and its expected exit code;
# "{tmp}" is the temporary directory. Commands not listed run with no arguments, after these.
RUNS = [
    (("add",), ["classified", "Nice appart in the 11e."], 0),
    (("add",), ["--batch", "{tmp}/batch.txt"], 0),
    (("list",), ["--json"], 0),
    (("rm",), ["1"], 0),  # the ad posted above
    (("rm",), ["1"], 1),  # gone: one line, nothing removed
    (("client", "add"), ["kiosk"], 0),
    (("client", "rotate"), ["kiosk"], 0),
    (("client", "list"), [], 0),
    (("clients",), [], 0),
    (("client", "remove"), ["kiosk"], 0),
    (("client", "add"), ["reader", "--types", "classified"], 0),
    (("token", "add"), ["shop", "--publish", "classified"], 0),
    (("token", "add"), ["bad", "--publish", "nope"], 1),  # an unknown type: one line
    (("token", "list"), ["--json"], 0),
    (("token", "rotate"), ["shop"], 0),
    (("token", "remove"), ["shop"], 0),
    (("plugins",), [], 0),
    (("plugin", "new"), ["example", "--dir", "{tmp}"], 0),
    (("outbox",), [], 0),
    (("outbox", "retry"), ["1"], 1),  # the built-ins have no durable notifier: no delivery 1
    (("db", "check"), [], 0),
    (("db", "backup"), ["{tmp}/backup.db"], 0),
    (("db", "copy"), ["--to", "{tmp}/copy.db"], 0),
    (("db", "restore"), ["{tmp}/backup.db"], 1),  # a daemon runs on the file: refused, one line
    (("prune",), ["--dry-run"], 0),
    (("prune",), [], 0),
    (("status",), [], 0),  # a daemon runs with the same file
]
# Run on their own below: `db upgrade` first (nothing else creates the database), `watch`
# against the daemon.
SEPARATE = {("db", "upgrade"), ("watch",)}


def commands(group: click.Group, path: tuple[str, ...] = ()):
    """Every command of `group`, recursively, by its path of names; groups that do something
    without a subcommand count as commands too."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if not isinstance(command, click.Group) or command.invoke_without_command:
            yield path + (name,), command
        if isinstance(command, click.Group):
            yield from commands(command, path + (name,))


def example_config(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text()
    for shipped, moved in MOVED.items():
        text = text.replace(f'"{shipped}', f'"{tmp_path}/{moved}')
    for directory in MOVED.values():
        (tmp_path / directory).mkdir(mode=0o700)
    outside = [value for value in _strings(tomllib.loads(text)) if value.startswith("/") and not value.startswith(str(tmp_path))]
    assert not outside, f"contrib/notifd.toml sets paths this test does not move into its directory: {outside}; add them to MOVED"
    path = tmp_path / "etc" / "notifd.toml"
    path.write_text(text)
    return path


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def run(program: str, config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_script(program), *args], capture_output=True, text=True, timeout=TIMEOUT * 3,
        env={**_ENV, "NOTIFD_CONFIG": str(config)}, stdin=subprocess.DEVNULL,
    )


def assert_clean(result: subprocess.CompletedProcess, code: int, what: str) -> None:
    assert result.returncode == code, f"{what}: exit {result.returncode}, expected {code}: {result.stderr}"
    if code == 0:
        assert result.stderr == "", f"{what}: {result.stderr}"
    else:
        assert re.fullmatch(r"notifctl: [^\n]+\n", result.stderr), f"{what}: not one line: {result.stderr}"


def test_every_notifctl_command_runs_with_the_example_config(tmp_path):
    found = dict(commands(notifctl))
    listed = {path for path, _, _ in RUNS} | SEPARATE
    assert listed <= set(found), f"RUNS names commands notifctl no longer has: {listed - set(found)}"
    runs = RUNS + [(path, [], 0) for path in found if path not in listed]
    for path, args, _ in runs:
        needed = [p.name for p in found[path].params if p.required]
        assert args or not needed, f"notifctl {' '.join(path)} needs {needed}: give it arguments in RUNS"

    config = example_config(tmp_path)
    (tmp_path / "batch.txt").write_text("classified Studio near the canal.\nrandom\n")
    assert_clean(run("notifctl", config, "db", "upgrade"), 0, "db upgrade")
    db_path = Path(tomllib.loads(config.read_text())["db"])
    assert db_path.is_relative_to(tmp_path) and db_path.exists()

    # The daemon on the same file, on a free port instead of the example's 8789 (a flag beats the file).
    daemon = DaemonProcess(db_path, env={"NOTIFD_CONFIG": str(config)}).start()
    try:
        eventually(lambda: run("notifctl", config, "status").returncode == 0)  # its first heartbeat
        for path, args, code in runs:
            args = [arg.format(tmp=tmp_path) for arg in args]
            assert_clean(run("notifctl", config, *path, *args), code, f"notifctl {' '.join(path + tuple(args))}")
        watch_prints_the_items(config, daemon.port)
    finally:
        daemon.stop()
    assert not any("Traceback" in line for line in daemon.drained_log()), daemon.log
    assert (tmp_path / "backup.db").exists() and (tmp_path / "copy.db").exists()


SHIPPED_LISTEN = '\nlisten = ["tcp:8789:interface=127.0.0.1"]\n'


def watch_prints_the_items(config: Path, port: int) -> None:
    # With no --connect, watch goes where the file's `listen` says the daemon listens: the
    # example's entry, moved to the daemon's port.
    text = config.read_text()
    assert SHIPPED_LISTEN in text
    config.write_text(text.replace(SHIPPED_LISTEN, SHIPPED_LISTEN.replace("8789", str(port)), 1))
    env = {key: value for key, value in _ENV.items() if key != "NOTIFD_CONNECT"}
    watcher = subprocess.Popen(
        [*_script("notifctl"), "watch"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**env, "NOTIFD_CONFIG": str(config)},
    )
    try:
        printed = sorted(read_line(watcher.stdout) for _ in range(2))  # every item posted above and not removed
        assert printed[0] == "classified: Studio near the canal.\n"
        assert re.fullmatch(r"random: \d+\n", printed[1])
    finally:
        watcher.send_signal(signal.SIGINT)
        _, stderr = watcher.communicate(timeout=TIMEOUT)
    assert (watcher.returncode, stderr) == (0, "")
    # --connect (or NOTIFD_CONNECT) beats the file: here, a port nothing listens on.
    refused = run("notifctl", config, "watch", "--connect", "tcp:127.0.0.1:1")
    assert refused.returncode == 1 and refused.stderr.startswith("notifctl: cannot connect to tcp:127.0.0.1:1: ")


def test_notifd_check_config_accepts_the_example_config(tmp_path):
    config = example_config(tmp_path)
    result = run("notifd", config, "--check-config")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    shown = tomllib.loads(result.stdout)
    assert shown["db"] == f"sqlite:///{tmp_path}/state/notifd.db"
    assert shown["listen"] == ["tcp:8789:interface=127.0.0.1"]
