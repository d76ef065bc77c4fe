"""Plugins in a real notifd: a bad plugin stops the start with one line; a plugin failing at
run time (validation, a notifier) leaves the daemon and its clients unaffected."""
from __future__ import annotations

import os
import pwd
import re
import subprocess
import textwrap
import tomllib

import pytest

from tests.integration.conftest import TIMEOUT, _script
from tests.require import require_root

pytestmark = pytest.mark.integration

FRAGILE = """
    from notifd import ItemType, Notifier, hookimpl


    def validate(text):
        if text == "crash":
            raise ZeroDivisionError("division by zero")
        return text


    def notify(item):
        raise RuntimeError(f"cannot notify item {item.id}")


    @hookimpl
    def register_item_types(register):
        register(ItemType("fragile", validate=validate))


    @hookimpl
    def register_notifiers(register):
        register(Notifier("fragile-notifier", notify))
"""


@pytest.fixture
def plugins_dir(tmp_path):
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "fragile.py").write_text(textwrap.dedent(FRAGILE))
    return directory


def test_a_failing_plugin_leaves_the_daemon_and_its_clients_unaffected(daemon, notifctl, plugins_dir):
    server = daemon("--plugins-dir", str(plugins_dir))
    client = server.connect()
    assert client.ask("notif") == "will send notifs"

    crashed = notifctl("--plugins-dir", str(plugins_dir), "add", "fragile", "crash", check=False)
    assert crashed.returncode == 1
    assert crashed.stderr == (
        "notifctl: the fragile plugin failed to validate the text: ZeroDivisionError: division by zero\n"
    )

    item_id = notifctl("--plugins-dir", str(plugins_dir), "add", "fragile", "fine").stdout.strip()
    assert client.read_line() == b"notif: fragile\r\n"  # the raising notifier did not stop the push
    server.wait_for_log(re.compile(
        rf" error notifd\.plugin\.fragile: plugin fragile failed in notifier fragile-notifier: "
        rf"RuntimeError: cannot notify item {item_id}"
    ))
    assert client.ask("stop_notif") == "OK"
    assert client.ask("fragile?") == "fine"


def test_a_plugin_that_cannot_load_stops_the_start_with_one_line(plugins_dir, db_path):
    (plugins_dir / "fragile.py").write_text("import weather_station_driver\n")
    result = subprocess.run(
        [*_script("notifd"), "--db", str(db_path), "--listen", "tcp:0", "--plugins-dir", str(plugins_dir)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert line.endswith(
        f"cannot start: plugin fragile ({plugins_dir / 'fragile.py'}): cannot import: "
        "ModuleNotFoundError: No module named 'weather_station_driver'"
    )


# --- only files that no one else could have written are read ----------------------------------

NOBODY = pwd.getpwnam("nobody").pw_uid


def tamper_dir(directory, plugin):
    directory.chmod(0o777)
    return directory, "is writable by its group and others (mode 0777)"


def tamper_file(directory, plugin):
    plugin.chmod(0o664)
    return plugin, "is writable by its group (mode 0664)"


def tamper_owner(directory, plugin):
    os.chown(plugin, NOBODY, -1)
    return plugin, f"is owned by nobody (uid {NOBODY}), not by root"


def tamper_parent(directory, plugin):
    directory.parent.chmod(0o770)
    return directory.parent, "is writable by its group (mode 0770)"


def run_program(program, config, *args):
    return subprocess.run(
        [*_script(program), "--config", str(config), *args], capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "NOTIFD_CONFIG": ""},
    )


@pytest.mark.parametrize("program, args", [("notifctl", ["plugins"]), ("notifd", ["--check-config"])])
@pytest.mark.parametrize("tamper", [tamper_dir, tamper_file, tamper_owner, tamper_parent])
def test_a_plugin_someone_else_could_write_is_refused_and_never_runs(tmp_path, program, args, tamper):
    require_root("to give a file to another user")
    base = tmp_path / "etc"
    base.mkdir(mode=0o755)
    directory = base / "plugins"
    directory.mkdir(mode=0o755)
    marker = tmp_path / "ran"
    plugin = directory / "planted.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').close()\n")
    plugin.chmod(0o644)
    config = tmp_path / "notifd.toml"
    config.write_text(f'db = "{tmp_path / "notifd.db"}"\nplugins_dirs = ["{directory}"]\n')
    config.chmod(0o600)
    assert run_program(program, config, *args).returncode == 0 and marker.exists()  # trusted, it runs
    marker.unlink()

    culprit, problem = tamper(directory, plugin)
    result = run_program(program, config, *args)
    assert result.returncode == 1 and result.stdout == ""
    what = f"plugin planted ({plugin})" if culprit == plugin else f"plugins directory {directory}"
    assert result.stderr == f"{program}: {what}: refused: {culprit} {problem}; fix: " + (
        f"chown root {culprit}\n" if tamper is tamper_owner else f"chmod go-w {culprit}\n"
    )
    assert not marker.exists()


@pytest.mark.parametrize("program, args", [("notifctl", ["status"]), ("notifd", ["--check-config"])])
@pytest.mark.parametrize("mode, owner, problem", [
    (0o620, 0, "is writable by its group (mode 0620)"),
    (0o600, NOBODY, f"is owned by nobody (uid {NOBODY}), not by root"),
], ids=["group-writable", "owned-by-nobody"])
def test_a_config_file_someone_else_could_write_is_refused(tmp_path, program, args, mode, owner, problem):
    require_root("to give a file to another user")
    config = tmp_path / "notifd.toml"
    config.write_text(f'db = "{tmp_path / "notifd.db"}"\n')
    config.chmod(mode)
    os.chown(config, owner, -1)
    result = run_program(program, config, *args)
    assert result.returncode == 1 and result.stdout == ""
    fix = f"chown root {config}" if owner else f"chmod go-w {config}"
    assert result.stderr == f"{program}: config file {config}: refused: {config} {problem}; fix: {fix}\n"


def test_check_config_prints_valid_toml_with_plugin_secrets_masked_at_any_depth(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "hook.py").write_text('"""Only takes settings."""\n')
    config = tmp_path / "notifd.toml"
    config.write_text(textwrap.dedent("""
        db = "postgresql+psycopg://notifd:Qz9-db@db.example/notifd"
        plugins_dirs = ["plugins"]

        [plugins.hook]
        url = "https://hooks.example/notifd?token=Qz9-query&page=2"
        headers = { Authorization = "Bearer Qz9-header", "X-Api-Key" = "Qz9-key", Accept = "application/json" }
        max_attempts = 3

        [plugins.hook.smtp]
        url = "smtp://alerts:Qz9-userinfo@mail.example:587"
        servers = [{ host = "a.example", password = "Qz9-in-a-list" }]

        [plugins.hook.smtp.login]
        secret = "Qz9-deep"
        verify = true
    """))
    result = run_program("notifd", config, "--check-config")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "Qz9" not in result.stdout
    shown = tomllib.loads(result.stdout)
    assert shown["db"] == "postgresql+psycopg://notifd:********@db.example/notifd"
    assert shown["plugins"] == {"hook": {
        "url": "https://hooks.example/notifd?token=********&page=2",
        "headers": {"Authorization": "********", "X-Api-Key": "********", "Accept": "application/json"},
        "max_attempts": 3,
        "smtp": {
            "url": "smtp://alerts:********@mail.example:587",
            "servers": [{"host": "a.example", "password": "********"}],
            "login": {"secret": "********", "verify": True},
        },
    }}
