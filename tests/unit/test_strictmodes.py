"""Which files notifd trusts: owned by root or the running user, writable by no one else, and
so is every directory above them (a sticky one like /tmp may be writable by all)."""
from __future__ import annotations

import os
import pwd

import pytest

from notifd.strictmodes import Untrusted, check_path, check_stat


@pytest.fixture
def safe(tmp_path):
    directory = tmp_path / "etc"
    directory.mkdir(mode=0o755)
    (directory / "notifd.toml").write_text("")
    (directory / "notifd.toml").chmod(0o644)
    return directory


def test_a_file_only_root_can_write_is_trusted(safe):
    check_path(safe / "notifd.toml")
    check_path(safe)


def test_a_sticky_directory_above_may_be_writable_by_all(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp: only an entry's owner may rename or delete it
    (shared / "mine").mkdir(mode=0o755)
    check_path(shared / "mine")
    with pytest.raises(Untrusted, match=r"shared is writable by its group and others \(mode 1777\)"):
        check_path(shared)  # but not as the directory itself: anyone could add a plugin


def test_a_directory_above_writable_by_others_is_refused(safe):
    safe.chmod(0o757)
    with pytest.raises(Untrusted, match=rf"^{safe} is writable by others \(mode 0757\); fix: chmod go-w {safe}$"):
        check_path(safe / "notifd.toml")


def test_a_symbolic_link_is_checked_where_it_is_and_where_it_leads(tmp_path, safe):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    link = open_dir / "plugins"
    link.symlink_to(safe)  # whoever can write open/ can point the link elsewhere
    with pytest.raises(Untrusted, match=rf"^{open_dir} is writable"):
        check_path(link)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (elsewhere / "notifd.toml").symlink_to(open_dir / "real.toml")
    (open_dir / "real.toml").write_text("")
    with pytest.raises(Untrusted, match=rf"^{open_dir} is writable"):
        check_path(elsewhere / "notifd.toml")


def test_the_running_user_may_own_its_files(tmp_path, monkeypatch):
    me = pwd.getpwnam("nobody").pw_uid
    monkeypatch.setattr(os, "geteuid", lambda: me)
    st = os.stat(tmp_path)
    check_stat(tmp_path, os.stat_result((0o40700, *st[1:4], me, *st[5:])))
    check_stat(tmp_path, os.stat_result((0o40755, *st[1:4], 0, *st[5:])))
    with pytest.raises(Untrusted, match=r"owned by uid 4242, not by root or nobody; fix: chown nobody "):
        check_stat(tmp_path, os.stat_result((0o40700, *st[1:4], 4242, *st[5:])))


def test_a_directory_above_owned_by_another_user_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "notifd.toml").write_text("")
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(home, nobody, -1)  # nobody could swap the file: root must not read it
    with pytest.raises(Untrusted, match=rf"^{home} is owned by nobody \(uid {nobody}\), not by root; fix: move it out of {home}$"):
        check_path(home / "notifd.toml")
