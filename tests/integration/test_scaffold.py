"""`notifctl plugin new` writes a package that installs with pip and passes its own tests as
generated, against a real notifd: done here exactly so, for each kind of plugin."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from notifd.testing import ENV, TIMEOUT, script

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind, name, adds", [
    ("--type", "parcel", "type parcel"),
    ("--notifier", "parcel-log", "-"),  # adds nothing until configured
])
def test_a_new_plugin_installs_and_passes_its_tests(tmp_path, kind, name, adds):
    made = subprocess.run([*script("notifctl"), "plugin", "new", name, kind, "--dir", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    identifier = name.replace("-", "_")
    package = tmp_path / f"notifd-{name}"
    assert made.stdout.splitlines()[0] == (
        f"created {package}: README.md, notifd_{identifier}.py, pyproject.toml, test_{identifier}.py"
    )
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in [package, *package.iterdir()]} == {
        package.name: "0o755", "README.md": "0o644", f"notifd_{identifier}.py": "0o644",
        "pyproject.toml": "0o644", f"test_{identifier}.py": "0o644",
    }

    # pip install, into a directory of its own (the running environment has notifd and hatchling).
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(package)], capture_output=True, text=True, timeout=TIMEOUT * 6,
    )
    assert installed.returncode == 0, installed.stderr
    env = {**ENV, "PYTHONPATH": str(site)}
    listed = subprocess.run([*script("notifctl"), "plugins"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=TIMEOUT)
    assert f"{name}\tentry point notifd_{identifier} in notifd-{name} 0.1.0\t{adds}\n" in listed.stdout, listed.stderr

    # Its tests, as generated, with the fixtures notifd.testing registers as a pytest plugin.
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"test_{identifier}.py"],
        capture_output=True, text=True, env={**env, "PYTEST_ADDOPTS": ""}, cwd=package, timeout=TIMEOUT * 6,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed" in tested.stdout.splitlines()[-1] and "failed" not in tested.stdout.splitlines()[-1]
    assert not any(p.name == ".pytest_cache" for p in package.iterdir())
    assert os.access(site / f"notifd_{identifier}.py", os.R_OK)


def test_a_package_is_never_written_over_and_a_bad_name_is_refused(tmp_path):
    def new(*args):
        return subprocess.run([*script("notifctl"), "plugin", "new", *args, "--dir", str(tmp_path)],
                              capture_output=True, text=True, env=ENV, timeout=TIMEOUT)

    assert new("parcel").returncode == 0
    again = new("parcel", "--notifier")
    assert (again.returncode, again.stderr) == (
        1, f"notifctl: {tmp_path / 'notifd-parcel'} exists already: choose another directory or name\n"
    )
    bad = new("Parcel")
    assert (bad.returncode, bad.stderr) == (
        1, "notifctl: plugin name 'Parcel': expected a lower-case letter, then letters, digits, '_' or '-' (at most 32)\n"
    )
