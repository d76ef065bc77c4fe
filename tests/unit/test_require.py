"""Skips that show: NOTIFD_TEST_REQUIRE turns a named need's skip into a failure."""
from __future__ import annotations

import importlib

import pytest

import tests.require


@pytest.fixture
def required(monkeypatch):
    def load(value: str | None):
        if value is None:
            monkeypatch.delenv("NOTIFD_TEST_REQUIRE", raising=False)
        else:
            monkeypatch.setenv("NOTIFD_TEST_REQUIRE", value)
        return importlib.reload(tests.require)

    yield load
    monkeypatch.undo()
    importlib.reload(tests.require)  # as the run's own environment says


def test_a_need_not_required_skips_saying_why(required):
    require = required(None)
    with pytest.raises(pytest.skip.Exception, match="needs strace"):
        require.unavailable("strace", "needs strace")


def test_a_required_need_fails_instead_naming_the_setting(required):
    require = required(" postgresql , strace ")
    assert require.REQUIRED == {"postgresql", "strace"}
    with pytest.raises(pytest.fail.Exception, match=r"needs strace \(NOTIFD_TEST_REQUIRE=postgresql,strace requires strace\)"):
        require.unavailable("strace", "needs strace")
    with pytest.raises(pytest.skip.Exception):
        require.unavailable("root", "needs root")  # not named: still a skip


def test_a_missing_tool_names_its_debian_package(required):
    require = required("")
    with pytest.raises(pytest.skip.Exception, match=r"needs no-such-tool-here \(Debian's some-package package\) to run"):
        require.require_tool("no-such-tool-here", "some-package", "to run")
    assert require.require_tool("sh", "dash", "to run").endswith("/sh")
