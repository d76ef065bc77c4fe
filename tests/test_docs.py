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
