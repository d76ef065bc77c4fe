# Whether a file may be trusted to configure notifd or to run as its code: the config file,
# each plugins directory and each plugin file. As sshd's StrictModes: the file and every
# directory above it must be owned by root or the running user, and writable by no one
# else (no group or other write bit). Otherwise anyone who can write one of them can run
# code as the user of notifd or notifctl, often root.
#
# One exception to sshd's rule: a directory with the sticky bit (/tmp) may be writable by
# all, since there only an entry's owner (checked too) may rename or delete it.
from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


class Untrusted(Exception):
    """A file or a directory above it could be changed by someone else; the message says which, and the fix."""


def check_path(path: str | Path) -> None:
    """Raise Untrusted unless `path` and every directory above it are safe.

    Both the path as given and the one it resolves to are checked: whoever could replace
    a symbolic link on the way could choose what is read.
    """
    absolute = Path(os.path.abspath(path))
    resolved = Path(os.path.realpath(path))
    for p in dict.fromkeys([absolute, *absolute.parents, resolved, *resolved.parents]):
        try:
            st = os.stat(p)
        except OSError:  # the caller's own open or listing says what is wrong with the path
            continue
        check_stat(p, st, itself=p in (absolute, resolved))


def check_stat(path: Path, st: os.stat_result, itself: bool = True) -> None:
    """Raise Untrusted unless `st` (of `path`) is owned by root or us and writable by no one else."""
    me = os.geteuid()
    if st.st_uid not in (0, me):
        owners = "root" if me == 0 else f"root or {_name(me)}"
        owner = f"uid {st.st_uid}" if _name(st.st_uid) == str(st.st_uid) else f"{_name(st.st_uid)} (uid {st.st_uid})"
        # Taking a directory above away from its owner (a home directory) is no fix: move the file.
        fix = f"chown {_name(me)} {path}" if itself else f"move it out of {path}"
        raise Untrusted(f"{path} is owned by {owner}, not by {owners}; fix: {fix}")
    sticky_above = not itself and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if st.st_mode & 0o022 and not sticky_above:
        whom = {0o020: "its group", 0o002: "others", 0o022: "its group and others"}[st.st_mode & 0o022]
        raise Untrusted(f"{path} is writable by {whom} (mode {stat.S_IMODE(st.st_mode):04o}); fix: chmod go-w {path}")


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
