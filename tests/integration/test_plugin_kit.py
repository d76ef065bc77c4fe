"""What a plugin author relies on, in a real notifd: startup and shutdown hooks with their
context, paths relative to the configuration file, the types each daemon serves (and the
warning when a post's type is served by none), and the warning for a forgotten @hookimpl."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap

import pytest

from notifd.testing import script

pytestmark = pytest.mark.integration

KIT = """
    import json
    from pathlib import Path

    from notifd import ItemType, hookimpl


    @hookimpl
    def register_item_types(register):
        register(ItemType("kit"))


    @hookimpl
    def startup(context):
        if context.settings.get("refuse"):
            raise RuntimeError("the station is offline")
        if "log_file" in context.settings:
            Path(context.settings["log_file"]).write_text(json.dumps({
                "name": context.name, "config_dir": str(context.config_dir), "state_dir": str(context.state_dir),
            }))
        context.log.info("kit started")


    @hookimpl
    def shutdown(context):
        from twisted.internet import task

        # Work that takes a while: the daemon waits for it before it exits.
        def done():
            (context.state_dir / "kit-stopped").write_text("clean")

        return task.deferLater(context.reactor, 0.3, done)
"""


@pytest.fixture
def notifd_plugins(tmp_path):
    source = tmp_path / "source" / "kit.py"
    source.parent.mkdir()
    source.write_text(textwrap.dedent(KIT))
    return [source]


@pytest.fixture
def notifd_config():
    return {"plugins": {"kit": {"log_file": "logs/kit.json"}}}


def test_hook_startup_and_shutdown_in_a_real_daemon(notifd_harness, tmp_path):
    (tmp_path / "logs").mkdir()
    daemon = notifd_harness.start()
    daemon.logged(re.compile(r"notifd\.plugin\.kit: kit started"))
    # The relative log_file is the config file's directory's; the state directory is the database's.
    assert json.loads((tmp_path / "logs" / "kit.json").read_text()) == {
        "name": "kit", "config_dir": str(tmp_path), "state_dir": str(tmp_path),
    }
    assert daemon.kill(signal.SIGTERM) == 0
    assert (tmp_path / "kit-stopped").read_text() == "clean"


def test_startup_and_shutdown_run_only_in_the_daemon(notifd_harness, tmp_path):
    # notifctl and `notifd --check-config` load every plugin (to validate, to list, to check
    # settings) but start nothing: a plugin's threads or connections belong to the daemon.
    (tmp_path / "logs").mkdir()
    notifd_harness.notifctl("plugins")
    notifd_harness.notifctl("add", "kit", "hello")
    checked = subprocess.run(
        [*script("notifd"), "--config", str(notifd_harness.config_path), "--check-config"],
        capture_output=True, text=True, env={**os.environ, **notifd_harness.env}, timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert not (tmp_path / "logs" / "kit.json").exists() and not (tmp_path / "kit-stopped").exists()
    daemon = notifd_harness.start()  # the same plugin and settings: the hook does run there
    daemon.logged(re.compile(r"notifd\.plugin\.kit: kit started"))
    assert (tmp_path / "logs" / "kit.json").exists()


@pytest.mark.parametrize("notifd_config", [{"plugins": {"kit": {"refuse": True}}}])
def test_a_startup_that_raises_stops_the_start_with_one_line(notifd_harness, tmp_path):
    with pytest.raises(AssertionError, match="notifd exited"):
        notifd_harness.start()
    [daemon] = notifd_harness.daemons
    assert daemon.proc.wait() == 1
    [line] = [line for line in daemon.drained_log() if "cannot start" in line]
    assert line.rstrip().endswith(
        "cannot start: plugin kit: startup failed: RuntimeError: the station is offline"
    )
    assert not (tmp_path / "kit-stopped").exists()  # it never started: no shutdown


def test_the_heartbeat_says_which_types_a_daemon_serves(notifd_harness):
    (notifd_harness.dir / "logs").mkdir()
    notifd_harness.start()
    [node] = json.loads(notifd_harness.notifctl("status", "--json").stdout)["nodes"]
    assert node["types"] == ["classified", "kit", "random"]


@pytest.mark.parametrize("notifd_plugins, notifd_config", [([], {})])
def test_posting_a_type_no_running_daemon_serves_warns(notifd_harness, tmp_path):
    notifd_harness.start()  # without the plugin
    plugins = tmp_path / "only-notifctl"
    plugins.mkdir(mode=0o755)
    (plugins / "kit.py").write_text(textwrap.dedent(KIT))
    posted = notifd_harness.notifctl("--plugins-dir", str(plugins), "add", "kit", "hello")
    assert posted.stdout.strip().isdigit()  # stored all the same
    node = json.loads(notifd_harness.notifctl("status", "--json").stdout)["nodes"][0]["node"]
    assert posted.stderr == (
        f"notifctl: warning: kit: served by no running notifd ({node} serves classified, random)\n"
    )
    assert notifd_harness.notifctl("add", "classified", "served").stderr == ""


@pytest.mark.parametrize("notifd_plugins, notifd_config", [([], {})])
def test_no_warning_when_no_daemon_runs(notifd_harness, tmp_path):
    plugins = tmp_path / "only-notifctl"
    plugins.mkdir(mode=0o755)
    (plugins / "kit.py").write_text(textwrap.dedent(KIT))
    assert notifd_harness.notifctl("--plugins-dir", str(plugins), "add", "kit", "hello").stderr == ""


@pytest.mark.parametrize("notifd_config", [{}])
def test_a_hook_without_hookimpl_is_warned_about_by_both_programs(notifd_harness, tmp_path):
    plugin = notifd_harness.plugins_dir / "kit.py"
    plugin.write_text(plugin.read_text().replace("@hookimpl\ndef register_item_types", "def register_item_types"))
    warning = f"plugin kit ({plugin}): register_item_types() is not marked @hookimpl, so notifd never calls it"
    assert notifd_harness.notifctl("plugins").stderr == f"notifctl: warning: {warning}\n"
    daemon = notifd_harness.start()
    assert warning in "".join(daemon.drained_log())
