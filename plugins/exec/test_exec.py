"""The exec plugin against a real notifd: the command's input, a failure retried, a timeout."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from notifd.testing import eventually

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent

# The command the notifier runs: records what it was given, and fails while `fail` exists.
HANDLER = """
import json, os, pathlib, subprocess, sys, time
here = pathlib.Path(sys.argv[1])
if (here / "hang").exists():
    (here / "hung.pid").write_text(str(os.getpid()))
    helper = subprocess.Popen(["sleep", "60"])  # what a shell script's commands are
    (here / "helper.pid").write_text(str(helper.pid))
    time.sleep(60)
record = {k: v for k, v in os.environ.items() if k.startswith("NOTIFD_ITEM_")}
record["stdin"] = sys.stdin.read()
with open(here / "runs.jsonl", "a") as f:
    f.write(json.dumps(record) + "\\n")
if (here / "fail").exists():
    print("the printer is on fire", file=sys.stderr)
    sys.exit(3)
"""


@pytest.fixture
def notifd_plugins():
    return [HERE]  # this package, through its entry point


@pytest.fixture
def notifd_config(tmp_path):
    (tmp_path / "handler.py").write_text(HANDLER)
    return {
        "plugins": {"exec": {
            "command": [sys.executable, str(tmp_path / "handler.py"), str(tmp_path)], "types": ["classified"],
        }},
        "notifiers": {"exec": {"timeout": 2, "first_delay": 0.2}},
    }


def runs(tmp_path):
    path = tmp_path / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_command_gets_the_item_and_a_failure_is_retried(notifd_daemon, notifctl, tmp_path, notifd_outbox):
    (tmp_path / "fail").touch()
    item_id = int(notifctl("add", "classified", "Vélo à vendre").stdout)
    notifctl("add", "random", "42")  # not one of its types
    first = eventually(lambda: runs(tmp_path))[0]
    assert first == {
        "NOTIFD_ITEM_ID": str(item_id), "NOTIFD_ITEM_TYPE": "classified", "NOTIFD_ITEM_TEXT": "Vélo à vendre",
        "NOTIFD_ITEM_CREATED_AT": first["NOTIFD_ITEM_CREATED_AT"], "stdin": "Vélo à vendre\n",
    }
    [pending] = eventually(lambda: [d for d in notifd_outbox() if d["last_error"]])
    assert pending["last_error"] == "CommandFailed: exit status 3: the printer is on fire"
    (tmp_path / "fail").unlink()
    eventually(lambda: notifd_outbox() == [])
    assert [run["NOTIFD_ITEM_ID"] for run in runs(tmp_path)][-1] == str(item_id)
    assert {run["NOTIFD_ITEM_TYPE"] for run in runs(tmp_path)} == {"classified"}


def test_a_command_past_its_timeout_is_killed_and_retried(notifd_daemon, notifctl, tmp_path, notifd_outbox):
    (tmp_path / "hang").touch()
    notifctl("add", "classified", "slow")
    [pending] = eventually(lambda: [d for d in notifd_outbox() if d["last_error"]])
    assert pending["last_error"] == "timed out after 2.0 s"
    pid = int((tmp_path / "hung.pid").read_text())
    helper = int((tmp_path / "helper.pid").read_text())
    eventually(lambda: not _alive(pid) and not _alive(helper))  # killed with what it started, not left behind
    (tmp_path / "hang").unlink()
    eventually(lambda: notifd_outbox() == [])
    assert [run["stdin"] for run in runs(tmp_path)] == ["slow\n"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, waiting for its parent


@pytest.mark.parametrize("notifd_config", [{"plugins": {"exec": {"command": ["/no/such/handler"]}}}])
def test_a_command_that_does_not_exist_is_refused_at_start(notifctl):
    result = notifctl("plugins", check=False)
    assert result.stderr == "notifctl: plugin exec: [plugins.exec] command: '/no/such/handler' is not an executable file\n"
