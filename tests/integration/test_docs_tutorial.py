"""docs/plugins.md's tutorial, run as written: the plugin is taken from the page, every
`$` command is run and its output compared, and the protocol transcript is replayed
against the real notifd the tutorial starts."""
from __future__ import annotations

import os
import shlex
import subprocess
import tomllib

import pytest

from tests.dist import install
from tests.integration.conftest import TIMEOUT, DaemonProcess, _script
from tests.test_docs import code_blocks

pytestmark = pytest.mark.integration

HOME_IN_DOCS = "/home/you"


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    """[(command, expected output lines)] of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def test_the_plugin_tutorial_works_as_written(tmp_path, db_path):
    home = tmp_path / "home"
    (home / "notifd-plugins").mkdir(parents=True)
    blocks = code_blocks()
    plugin_source = next(text for language, text in blocks if language == "python")
    pyproject = next(text for language, text in blocks if language == "toml" and "[project]" in text)
    (home / "notifd-plugins" / "weather.py").write_text(plugin_source)
    env = {**os.environ, "NOTIFD_CONFIG": "", "NOTIFD_DB": str(db_path)}
    env.pop("NOTIFD_PLUGINS_DIR", None)
    daemon = None
    try:
        for language, text in blocks:
            if language == "text":  # the protocol transcript
                client = daemon.connect()
                for line in text.splitlines():
                    who, _, said = line.partition(":  ")
                    if who == "C":
                        client.send(said)
                    else:
                        assert client.read_line().decode() == said + "\r\n"
                client.close()
            if language != "console":
                continue
            for command, expected in console_steps(text.replace("~", str(home))):
                argv = shlex.split(command)
                if argv[0] == "notifd":
                    assert argv[-1] == "&"
                    daemon = DaemonProcess(db_path, *argv[1:-1]).start()
                elif argv[:2] == ["pip", "install"]:
                    install(tmp_path / "site", tomllib.loads(pyproject)["project"], plugin_source)
                    env["PYTHONPATH"] = str(tmp_path / "site")
                else:
                    assert argv[0] == "notifctl", command
                    result = subprocess.run(
                        [*_script("notifctl"), *argv[1:]], capture_output=True, text=True, env=env, timeout=TIMEOUT
                    )
                    shown = [line.replace(str(home), HOME_IN_DOCS) for line in (result.stdout + result.stderr).splitlines()]
                    assert shown == expected, command
    finally:
        if daemon is not None:
            daemon.stop()
