"""docs/operations.md as an operator follows it: its commands, taken from the page, run as
root and as a service user made for the test, in a directory standing for `/`.

What is translated, and nothing else: `/etc/` and `/var/` move under that directory, the
user `notifd` is the test's, `sudo -u notifd` becomes setpriv, `sudo` is dropped (the tests
run as root), `notifctl` is this checkout's, and `systemctl stop/start notifd` stop and
start a notifd run as the service user. A step the page changes (a path, a mode, an owner)
changes what runs here.
"""
from __future__ import annotations

import re
import shlex
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import _ENV, TIMEOUT, DaemonProcess, _script

pytestmark = pytest.mark.integration

OPERATIONS = Path(__file__).parent.parent.parent / "docs" / "operations.md"
DATE = "2026-11-26"  # the date in the page's restore example


def section(title: str) -> str:
    text = OPERATIONS.read_text()
    start = text.index(f"\n{title}\n")
    following = re.compile(r"^#{1,%d} " % title.index(" "), re.M)
    end = following.search(text, start + len(title) + 2)
    return text[start:end.start() if end else len(text)]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


class Guide:
    """Runs the page's shell steps here, as the module docstring says."""

    def __init__(self, root: Path, user, config: Path) -> None:
        self.root = root
        self.user = user
        self.config = config
        self.daemon: DaemonProcess | None = None
        self.db = root / "var" / "lib" / "notifd" / "notifd.db"

    def translate(self, line: str) -> str:
        line = re.sub(r"\s+# .*$", "", line)
        line = line.replace("$(date +%F)", DATE)
        line = re.sub(r"(?<=[\s=])/(etc|var)/", lambda m: f"{self.root}/{m.group(1)}/", line)
        line = re.sub(r"(-[og]) notifd\b", rf"\1 {self.user.name}", line)
        line = line.replace("sudo -u notifd ", shlex.join(self.user.prefix) + " ")
        line = re.sub(r"^sudo ", "", line)
        return re.sub(r"(^|\s)notifctl\b", lambda m: m.group(1) + shlex.quote(_script("notifctl")[0]), line)

    def run(self, block: str) -> list[str]:
        """Run each line of a block; returns their outputs."""
        outputs = []
        for line in block.strip().splitlines():
            if line == "sudo systemctl stop notifd":
                self.stop()
            elif line == "sudo systemctl start notifd":
                self.start()
            else:
                command = self.translate(line)
                result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=TIMEOUT * 3,
                                        env={**_ENV, "NOTIFD_CONFIG": str(self.config)})
                assert result.returncode == 0, f"{line}\n  ran as: {command}\n  {result.stderr}"
                outputs.append(result.stdout)
        return outputs

    def as_user(self, *argv: str) -> str:
        result = subprocess.run(self.user.command(*_script("notifctl"), *argv), capture_output=True, text=True,
                                timeout=TIMEOUT * 3, env={**_ENV, "NOTIFD_CONFIG": str(self.config)})
        assert result.returncode == 0, result.stderr
        return result.stdout

    def start(self) -> None:
        self.daemon = DaemonProcess(self.db, prefix=self.user.prefix, env={"NOTIFD_CONFIG": str(self.config)}).start()

    def stop(self) -> None:
        assert self.daemon.kill(signal.SIGTERM) == 0
        self.daemon = None


def owner_and_mode(path: Path, user) -> tuple[str, str, str]:
    """(owner, group, mode) of a file, the test's user and group by name."""
    found = path.stat()
    owner = {0: "root", user.uid: user.name}.get(found.st_uid, str(found.st_uid))
    group = {0: "root", user.gid: user.name}.get(found.st_gid, str(found.st_gid))
    return owner, group, oct(stat.S_IMODE(found.st_mode))


@pytest.fixture
def guide(system_root, service_user, tmp_path):
    for directory in ("etc", "var/lib", "var/backups"):
        (system_root / directory).mkdir(parents=True)
        (system_root / directory).chmod(0o755)
    # The state directory, as StateDirectory= and StateDirectoryMode= make it.
    state = system_root / "var" / "lib" / "notifd"
    subprocess.run(["install", "-d", "-o", service_user.name, "-g", service_user.name, "-m", "0700", str(state)],
                   check=True)
    # The configuration, put in place by the page's own steps, from a file of the test's.
    source = tmp_path / "notifd.toml"
    source.write_text(f'db = "{state}/notifd.db"\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    config = system_root / "etc" / "notifd" / "notifd.toml"
    found = Guide(system_root, service_user, config)
    install = sh_blocks(section("## Install as a service"))[0]
    found.run("\n".join(line.replace("contrib/notifd.toml", str(source))
                        for line in install.splitlines() if "/etc/notifd" in line))
    yield found
    if found.daemon is not None:
        found.daemon.stop()  # before the user is removed


@pytest.mark.parametrize("backed_up_by", ["the service user", "root"])
def test_the_backup_and_restore_steps_work_as_written(guide, service_user, backed_up_by):
    user = service_user
    # The configuration may hold secrets: root's, readable by the service's group only.
    assert owner_and_mode(guide.config, user) == ("root", user.name, "0o640")
    assert "created" in guide.as_user("db", "upgrade")
    guide.as_user("add", "classified", "before the backup")
    guide.start()

    backup, restore = sh_blocks(section("## Back up and restore"))
    if backed_up_by == "root":  # as an admin might: the restore must read it all the same
        backup = backup.replace("sudo -u notifd notifctl db backup", "sudo notifctl db backup")
    outputs = guide.run(backup)
    backups = guide.root / "var" / "backups" / "notifd"
    assert owner_and_mode(backups, user) == (user.name, user.name, "0o750")
    maker = "root" if backed_up_by == "root" else user.name
    assert owner_and_mode(backups / f"notifd-{DATE}.db", user) == (maker, maker, "0o600")
    assert "1 items" in outputs[1]
    assert "ok" in outputs[2].lower()

    lost = int(guide.as_user("add", "classified", "after the backup"))
    restored = guide.run(restore)  # stops the daemon, puts the backup in place, starts the daemon again
    assert f"1 items; new item ids start after {lost}" in restored[0]

    assert owner_and_mode(guide.db, user) == (user.name, user.name, "0o600")
    assert [line.split("\t")[3] for line in guide.as_user("list").splitlines()] == ["before the backup"]
    client = guide.daemon.connect()
    assert client.ask("classified?") == "before the backup"
    assert client.ask("classified?") == ""  # the item posted after the backup is gone with it
    assert int(guide.as_user("add", "classified", "after the restore")) > lost  # its id is not given again
    assert client.ask("classified?") == "after the restore"
    # All notifd and SQLite write is in the database's directory: why ReadWritePaths= names it.
    assert {p.name for p in guide.db.parent.iterdir()} <= {"notifd.db", "notifd.db-wal", "notifd.db-shm", "notifd.db-wakeup"}
    assert (guide.db.parent / "notifd.db-wakeup").is_dir()
