"""The documentation says what the code does: hooks, the transcript, the README's commands."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from notifd import hookspecs
from notifd.plugins import get_plugin_manager
from notifd.protocol import Err
from tests import transcript

ROOT = Path(__file__).parent.parent
HOOKS = sorted(name for name, f in vars(hookspecs).items() if inspect.isfunction(f))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    args = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"### {hook}({args})" in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_tested(hook):
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py")
    assert re.search(rf"def test_hook_{hook}\b", tests), f"no test_hook_{hook}"


def test_hookspecs_are_known_to_the_plugin_manager():
    pm = get_plugin_manager()
    assert sorted(name for name in vars(pm.hook) if not name.startswith("_")) == HOOKS


def test_the_transcript_in_protocol_md_is_the_one_the_tests_replay():
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    assert "```\n" + transcript.TUTORIAL.read_text() + "```" in protocol


def test_every_error_reply_is_documented():
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    for name, send in vars(Err).items():
        if not name.startswith("_"):
            assert f"`{send.data.decode().strip()}`" in protocol, name


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```sh\n{ci}\n```" in (ROOT / "README.md").read_text()


def test_the_example_config_is_valid_and_shows_every_key():
    from notifd.config import KEYS, TYPE_KEYS, read_file

    example = ROOT / "contrib" / "notifd.toml"
    read_file(example)
    text = example.read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    for path in list(KEYS) + [f"types.<name>.{key}" for key in TYPE_KEYS]:
        table, _, key = path.rpartition(".")
        assert re.search(rf"^#? ?{re.escape(key)} = ", text, re.MULTILINE), f"{path} not in contrib/notifd.toml"
        assert f"`{key}`" in operations or f"`{path}`" in operations or f".{key}`" in operations, path


def test_the_systemd_unit_is_what_the_docs_promise():
    unit = (ROOT / "contrib" / "systemd" / "notifd.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "StateDirectory=notifd", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in unit
    socket_unit = (ROOT / "contrib" / "systemd" / "notifd.socket").read_text()
    assert "FileDescriptorName=notifd" in socket_unit
