"""Skips that show: a test that needs what this machine may not have (PostgreSQL, root, a
system tool) skips with the reason, unless NOTIFD_TEST_REQUIRE names that need, and then it
fails. .ci/run sets it, so a CI machine where such tests would silently skip cannot pass."""
from __future__ import annotations

import os

import pytest

REQUIRED = frozenset(name.strip() for name in os.environ.get("NOTIFD_TEST_REQUIRE", "").split(",") if name.strip())


def unavailable(need: str, reason: str):
    """Skip the running test for want of `need` ("postgresql", "root", "strace", ...), or fail it if required."""
    if need in REQUIRED:
        pytest.fail(f"{reason} (NOTIFD_TEST_REQUIRE={','.join(sorted(REQUIRED))} requires {need})", pytrace=False)
    pytest.skip(reason)


def require_root(reason: str) -> None:
    if os.geteuid() != 0:
        unavailable("root", f"needs root: {reason}")


def require_tool(name: str, package: str, reason: str) -> str:
    """The path of a system tool, or skip (fail if required) naming the Debian package."""
    import shutil

    found = shutil.which(name)
    if not found:
        unavailable(name, f"needs {name} (Debian's {package} package) {reason}")
    return found
