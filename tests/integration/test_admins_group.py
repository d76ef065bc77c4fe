"""docs/security.md's "To let a group of admins post without sudo", followed as an operator
would, with the translation of docs/operations.md's tests (tests/integration/
test_operations_guide.py): a throw-away group stands for `notifd-admins`, throw-away users
for `notifd` and `alice`, and what systemd does with the drop-in (the service's group, the
state directory's owner and mode, the umask) is done here. The recipe's own commands run
as written otherwise. Then alice posts without sudo, and the daemon is woken at once."""
from __future__ import annotations

import grp
import pwd
import re
import secrets
import shlex
import subprocess

import pytest

from tests.integration.conftest import _ENV, TIMEOUT, DaemonProcess, _script, _shadow_utility
from tests.integration.test_operations_guide import OPERATIONS, Guide, sh_blocks

pytestmark = pytest.mark.integration

SECURITY = OPERATIONS.parent / "security.md"
SYSTEMD_LINES = ("sudo mkdir -p /etc/systemd/", "sudo tee /etc/systemd/", "[Service]", "Group=", "StateDirectoryMode=",
                 "UMask=", "EOF")


def recipe() -> str:
    text = SECURITY.read_text()
    start = text.index("To let a group of admins post without `sudo`:")
    return sh_blocks(text[start:])[0]


def as_user(prefix: tuple[str, ...], user: str, uid: int, gid: int) -> tuple[str, ...]:
    """The service user's command prefix (setpriv, after the interpreter trick) for another user and group."""
    swapped = [f"--reuid={uid}" if part.startswith("--reuid=") else f"--regid={gid}" if part.startswith("--regid=")
               else part for part in prefix]
    assert f"--reuid={uid}" in swapped, prefix
    return tuple(swapped)


@pytest.fixture
def people(service_user):
    """(a name for the admins' group, which the recipe creates; alice's name): removed after."""
    tag = secrets.token_hex(3)
    group, alice = f"notifd-adm-{tag}", f"notifd-alice-{tag}"
    _shadow_utility("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", alice)
    try:
        yield group, alice
    finally:
        _shadow_utility("userdel", alice)
        try:
            grp.getgrnam(group)
        except KeyError:
            pass
        else:
            _shadow_utility("groupdel", group)


def test_a_group_of_admins_posts_without_sudo_and_wakes_the_daemon(system_root, service_user, people, tmp_path):
    group, alice = people
    user = service_user
    # The service as installed by docs/operations.md: its config root:notifd 0640, its state directory.
    for directory in ("etc/notifd", "var/lib/notifd"):
        (system_root / directory).mkdir(parents=True)
    (system_root / "etc").chmod(0o755)
    (system_root / "etc" / "notifd").chmod(0o755)
    (system_root / "var").chmod(0o755)
    (system_root / "var" / "lib").chmod(0o755)
    state = system_root / "var" / "lib" / "notifd"
    config = system_root / "etc" / "notifd" / "notifd.toml"
    # A long safety poll: a post is seen at once only if its wake-up reaches the daemon.
    config.write_text(f'db = "{state}/notifd.db"\nlisten = ["tcp:0:interface=127.0.0.1"]\npoll_interval = 60\n')
    subprocess.run(["chown", f"root:{user.name}", str(config)], check=True)
    config.chmod(0o640)
    subprocess.run(["chown", f"{user.name}:{user.name}", str(state)], check=True)
    state.chmod(0o700)
    guide = Guide(system_root, user, config)
    guide.as_user("db", "upgrade")  # the database as it was before the recipe: 0600, the service's
    guide.start()
    try:
        follow_the_recipe(guide, group, alice, state, config)
    finally:
        if guide.daemon is not None:
            guide.daemon.stop()  # before its user is removed


def follow_the_recipe(guide: Guide, group: str, alice: str, state, config) -> None:
    user = guide.user

    admins_gid = None
    daemon_prefix = None
    for line in recipe().splitlines():
        line = re.sub(r"\s+# .*$", "", line).strip()
        if not line or line.startswith("#") or line.startswith(SYSTEMD_LINES):
            continue  # comments; the drop-in: done below, as systemd would
        line = line.replace("notifd-admins", group).replace(" alice", f" {alice}")
        line = re.sub(r"-aG (\S+) notifd$", rf"-aG \1 {user.name}", line)
        if line == "sudo systemctl daemon-reload && sudo systemctl stop notifd":
            guide.stop()
            continue
        if line == "sudo systemctl start notifd":
            # What systemd does with the drop-in at this start: the state directory and its
            # files to User:Group, the directory's mode, the service's group and umask.
            admins_gid = grp.getgrnam(group).gr_gid
            subprocess.run(["chown", "-R", f"{user.name}:{group}", str(state)], check=True)
            state.chmod(0o2770)
            daemon_prefix = ("sh", "-c", 'umask 0007; exec "$@"', "sh",
                             *as_user(user.prefix, user.name, user.uid, admins_gid))
            guide.daemon = DaemonProcess(guide.db, prefix=daemon_prefix, env={"NOTIFD_CONFIG": str(config)}).start()
            continue
        assert line.startswith("sudo "), line
        command = guide.translate(line)
        if line.startswith(("sudo groupadd", "sudo usermod")):  # /etc/group's lock: retried as the fixtures do
            _shadow_utility(*shlex.split(command))
        else:
            done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=TIMEOUT)
            assert done.returncode == 0, f"{line}\n  ran as: {command}\n  {done.stderr}"
    assert daemon_prefix is not None, "the recipe no longer starts notifd"

    client = guide.daemon.connect()
    assert client.ask("notif") == "will send notifs"
    entry = pwd.getpwnam(alice)
    alice_prefix = as_user(user.prefix, alice, entry.pw_uid, entry.pw_gid)
    posted = subprocess.run([*alice_prefix, *_script("notifctl"), "add", "classified", "Posted by alice."],
                            capture_output=True, text=True, timeout=TIMEOUT * 3, env={**_ENV, "NOTIFD_CONFIG": str(config)})
    assert (posted.returncode, posted.stderr) == (0, ""), posted.stderr  # no "cannot wake" warning
    assert client.read_line(timeout=TIMEOUT) == b"notif: classified\r\n"  # woken, not the 60 s poll
    # The service user, as `sudo -u notifd notifctl` runs it, still reads the configuration.
    assert "Posted by alice." in guide.as_user("list")
    assert (state / "notifd.db-wakeup").stat().st_gid == admins_gid
