"""`notifctl plugin new` writes a package that installs with pip and passes its own tests as
generated, against a real notifd: done here exactly so, for each kind of plugin."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from notifd.testing import ENV, TIMEOUT, script

pytestmark = pytest.mark.integration


def notifd_environment(tmp_path: Path) -> Path:
    """A Python environment of its own with notifd in it: this one's packages, seen through a
    .pth file, so that installing a plugin there leaves the suite's environment as it is."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT * 6)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    ours = sysconfig.get_paths()["purelib"]
    # addsitedir, unlike a plain path line, also reads the .pth files there (notifd's editable install).
    (site / "notifd-suite.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return venv / "bin" / "python"


@pytest.mark.parametrize("kind, name, adds", [
    ("--type", "parcel", "type parcel"),
    ("--notifier", "parcel-log", "-"),  # adds nothing until configured
])
def test_a_new_plugin_installs_and_passes_its_tests_as_printed(tmp_path, kind, name, adds):
    python = notifd_environment(tmp_path)
    # notifctl of that environment, with none of this one's programs on PATH.
    env = {**ENV, "PATH": f"{python.parent}:/usr/bin:/bin", "PYTEST_ADDOPTS": ""}
    notifctl = [str(python), "-c", "from notifd.cli import notifctl_main; notifctl_main()"]
    made = subprocess.run([*notifctl, "plugin", "new", name, kind, "--dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    identifier = name.replace("-", "_")
    package = tmp_path / f"notifd-{name}"
    assert made.stdout.splitlines() == [
        f"created {package}: README.md, notifd_{identifier}.py, pyproject.toml, test_{identifier}.py",
        f"next: cd {package} && {python} -m pip install -e '.[test]' && {python} -m pytest",
    ]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in [package, *package.iterdir()]} == {
        package.name: "0o755", "README.md": "0o644", f"notifd_{identifier}.py": "0o644",
        "pyproject.toml": "0o644", f"test_{identifier}.py": "0o644",
    }
    assert 'dependencies = ["notifd>=0.1.0"]' in (package / "pyproject.toml").read_text()

    # The printed next step, as a user would paste it: pip install, then the generated tests
    # (with the fixtures notifd.testing registers as a pytest plugin).
    next_step = made.stdout.splitlines()[1].removeprefix("next: ")
    done = subprocess.run(["sh", "-c", next_step], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=TIMEOUT * 12)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.splitlines()[-1]
    assert " passed" in last and "failed" not in last, done.stdout

    listed = subprocess.run([*notifctl, "plugins"], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=TIMEOUT)
    assert f"{name}\tentry point notifd_{identifier} in notifd-{name} 0.1.0\t{adds}\n" in listed.stdout, listed.stderr


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
