"""The systemd units of contrib/systemd/, installed as docs/operations.md says: they load
without a warning, with the drop-ins the guide writes, and notifd makes no system call
their filter refuses.

`systemd-analyze` checks the units without a running systemd; strace shows what notifd
calls. Without them, these tests skip, saying so.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import _ENV, TIMEOUT, LineClient, _script
from tests.integration.test_tls import TLSClient, certificate  # noqa: F401 (a fixture)
from tests.require import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent.parent
UNITS = ROOT / "contrib" / "systemd"
OPERATIONS = ROOT / "docs" / "operations.md"
INSTALLED_NOTIFD = "/opt/notifd/bin/notifd"


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values]}} of a unit file; keys may repeat, as systemd allows."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def documented_drop_ins(guide: Path = OPERATIONS) -> dict[str, str]:
    """The drop-ins a guide writes: {file name: text}, from its `sudo tee ... <<'EOF'` steps."""
    found = re.findall(
        r"^sudo tee /etc/systemd/system/notifd\.service\.d/(\S+\.conf) <<'EOF'\n(.*?)^EOF$",
        guide.read_text(), flags=re.S | re.M,
    )
    return dict(found)


def systemd_analyze() -> str:
    return require_tool("systemd-analyze", "systemd", "to check the units")


def installed_units(tmp_path: Path) -> Path:
    """The units as the guide installs them, ExecStart pointed at this checkout's notifd."""
    units = tmp_path / "system"
    (units / "notifd.service.d").mkdir(parents=True)
    notifd = _script("notifd")[0]
    service = (UNITS / "notifd.service").read_text()
    assert INSTALLED_NOTIFD in service
    (units / "notifd.service").write_text(service.replace(INSTALLED_NOTIFD, notifd))
    shutil.copy(UNITS / "notifd.socket", units)
    for name, text in documented_drop_ins().items():
        (units / "notifd.service.d" / name).write_text(text)
    return units


def test_the_guide_writes_the_drop_ins_for_socket_activation_and_a_database_elsewhere():
    drop_ins = documented_drop_ins()
    assert set(drop_ins) == {"socket.conf", "database.conf"}
    assert "Requires=notifd.socket\nAfter=notifd.socket\n" in drop_ins["socket.conf"]
    assert re.search(r"^ReadWritePaths=/\S+$", drop_ins["database.conf"], re.M)


def test_the_units_point_at_no_documentation_that_is_not_installed():
    # pip installs notifd's code, not its docs/: a file:// link would name a missing file.
    for unit in UNITS.glob("notifd.*"):
        links = [v for section in unit_settings(unit).values() for v in section.get("Documentation", [])]
        assert [link for link in links if link.startswith("file:")] == [], unit.name


def test_the_units_and_the_guides_drop_ins_load_without_a_warning(tmp_path):
    units = installed_units(tmp_path)
    result = subprocess.run(
        [systemd_analyze(), "verify", str(units / "notifd.service"), str(units / "notifd.socket")],
        capture_output=True, text=True, timeout=TIMEOUT * 3,
    )
    # A misspelt key or value is only a warning to systemd: any output fails the test.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_group_of_admins_drop_in_loads_and_sets_what_systemd_would_otherwise_reset(tmp_path):
    # systemd gives the state directory to User=/Group= and StateDirectoryMode= at each start:
    # the group and its setgid mode must be the unit's, not a chmod by hand.
    (admins,) = documented_drop_ins(OPERATIONS.parent / "security.md").items()
    assert admins[0] == "admins.conf"
    units = installed_units(tmp_path)
    (units / "notifd.service.d" / "admins.conf").write_text(admins[1])
    settings = unit_settings(units / "notifd.service.d" / "admins.conf")["Service"]
    assert settings == {"Group": ["notifd-admins"], "StateDirectoryMode": ["2770"], "UMask": ["0007"]}
    result = subprocess.run([systemd_analyze(), "verify", str(units / "notifd.service")],
                            capture_output=True, text=True, timeout=TIMEOUT * 3)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_service_is_hardened_as_the_guide_says(tmp_path):
    service = unit_settings(UNITS / "notifd.service")["Service"]
    expected = {
        "User": ["notifd"], "NoNewPrivileges": ["yes"], "ProtectSystem": ["strict"], "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"], "PrivateDevices": ["yes"], "PrivateMounts": ["yes"], "PrivateUsers": ["yes"],
        "ProtectProc": ["invisible"], "RemoveIPC": ["yes"], "CapabilityBoundingSet": [""],
        "AmbientCapabilities": [""], "SystemCallFilter": ["@system-service", "~@privileged @resources"],
        "SystemCallErrorNumber": ["EPERM"], "UMask": ["0077"], "StateDirectoryMode": ["0700"],
    }
    assert {key: service.get(key) for key in expected} == expected
    assert "ProcSubset" not in service  # it hides /proc/stat, and with it every process_* metric
    operations = OPERATIONS.read_text()
    for key in ("ProtectProc=invisible", "PrivateUsers", "RemoveIPC", "~@privileged @resources", "ProcSubset"):
        assert key in operations, key
    # systemd's own rating of the unit: 1.9 before ProtectProc, PrivateUsers and the rest.
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", str(installed_units(tmp_path) / "notifd.service")],
        capture_output=True, text=True, timeout=TIMEOUT * 3,
    )
    exposure = float(re.search(r"Overall exposure level for notifd\.service: ([\d.]+)", result.stdout).group(1))
    assert exposure <= 1.1


# --- what notifd calls ----------------------------------------------------------------------


def syscall_set(analyze: str, name: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd set (@name), nested sets expanded."""
    seen = seen if seen is not None else set()
    listing = subprocess.run([analyze, "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    calls = set()
    for line in listing.splitlines()[1:]:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith("@"):
            if entry not in seen:
                seen.add(entry)
                calls |= syscall_set(analyze, entry, seen)
        else:
            calls.add(entry)
    return calls


def unit_filter(analyze: str) -> tuple[set[str], set[str]]:
    """(allowed, refused) system calls of the unit's SystemCallFilter= lines."""
    allowed: set[str] = set()
    refused: set[str] = set()
    for value in unit_settings(UNITS / "notifd.service")["Service"]["SystemCallFilter"]:
        target = refused if value.startswith("~") else allowed
        for name in value.removeprefix("~").split():
            target |= syscall_set(analyze, name) if name.startswith("@") else {name}
    return allowed - refused, refused


def strace_counts(path: Path) -> set[str]:
    """The system calls in strace's `-c` summary."""
    calls = set()
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and re.fullmatch(r"[\d.]+", fields[0]) and fields[-1] != "total":
            calls.add(fields[-1])
    return calls


@pytest.mark.parametrize("workers", [1, 2])
def test_notifd_makes_no_system_call_the_unit_refuses(workers, service_user, system_root, certificate):  # noqa: F811
    analyze = systemd_analyze()
    strace = require_tool("strace", "strace", "to see which system calls notifd makes")
    allowed, refused = unit_filter(analyze)
    assert {"chown", "fchown", "setuid", "setrlimit", "sched_setaffinity"} <= refused  # the sets meant
    user = service_user
    # As the unit runs it: as the service user (SQLite, for one, changes owners only as
    # root), its state directory 0700, its TLS key 0640 root:notifd.
    state = system_root / "notifd"
    subprocess.run(["install", "-d", "-o", user.name, "-g", user.name, "-m", "0700", str(state)], check=True)
    cert, key = certificate
    subprocess.run(["install", "-o", "root", "-g", user.name, "-m", "0640", str(key), str(system_root / "key.pem")],
                   check=True)
    subprocess.run(["install", "-m", "0644", str(cert), str(system_root / "cert.pem")], check=True)
    db = state / "notifd.db"

    def notifctl(*argv: str) -> str:
        return subprocess.run(user.command(*_script("notifctl"), "--db", str(db), *argv), env=_ENV,
                              capture_output=True, text=True, check=True, timeout=TIMEOUT * 3).stdout

    notifctl("db", "upgrade")
    token = notifctl("client", "add", "kiosk").splitlines()[-1]
    counts = state / "strace.txt"
    listen = ["--listen", "tcp:0:interface=127.0.0.1",
              "--listen", f"ssl:0:interface=127.0.0.1:privateKey={system_root}/key.pem:certKey={system_root}/cert.pem",
              "--http", "tcp:0:interface=127.0.0.1"]  # not the default port, which another notifd may hold
    extra = ["--workers", "2"] if workers == 2 else ["--metrics", "tcp:0:interface=127.0.0.1"]
    # Everything a running notifd does, under strace: start (and start workers), TCP and
    # TLS clients, a named hello, a wake-up and its fan-out, metrics, SIGHUP, SIGTERM.
    traced = subprocess.Popen(
        user.command(strace, "-f", "-qq", "-c", "-o", str(counts), *_script("notifd"), "--db", str(db), *listen, *extra),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**_ENV, "NOTIFD_LOG_FORMAT": "text"}, start_new_session=True,
    )
    log: list[str] = []

    def logged(pattern: str, times: int = 1) -> list[re.Match]:
        found = []
        while len(found) < times:
            line = traced.stderr.readline()
            assert line, f"notifd ended before logging {pattern!r}: {log}"
            log.append(line)
            if match := re.search(pattern, line):
                found.append(match)
        return found

    try:
        # Each worker logs its own ports, the same two, in whatever order the workers run.
        ports = {m.group(1): int(m.group(2))
                 for m in logged(r"notifd listening on (TCP|TLS) [\d.]+:(\d+)", 2 * workers)}
        plain, tls = LineClient(ports["TCP"]), TLSClient(ports["TLS"], cert)
        assert plain.ask(f"hello kiosk {token}") == "OK"
        assert plain.ask("notif") == "will send notifs"
        notifctl("add", "classified", "ad")  # a wake-up datagram, a fan-out
        assert plain.read_line() == b"notif: classified\r\n"
        assert tls.ask("classified?") == "ad"
        assert tls.ask("random?").isdigit()
        if workers == 1:
            metrics = int(logged(r"metrics on http TCP [\d.]+:(\d+)")[0].group(1))
            page = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=TIMEOUT).read()
            assert b"process_start_time_seconds" in page
        # strace's child is notifd (the parent of the workers).
        notifd = int(Path(f"/proc/{traced.pid}/task/{traced.pid}/children").read_text().split()[0])
        os.kill(notifd, signal.SIGHUP)
        logged("SIGHUP: configuration reloaded", workers)
        os.kill(notifd, signal.SIGTERM)
        assert plain.sock.recv(100) == b""
        assert traced.wait(timeout=TIMEOUT * 3) == 0
    finally:
        if traced.poll() is None:
            os.killpg(traced.pid, signal.SIGKILL)  # strace, notifd and its workers
            traced.wait()
        traced.stderr.close()
    made = strace_counts(counts)
    assert {"execve", "socket", "bind", "setsockopt", "sendto"} <= made  # strace saw notifd at work
    assert made & refused == set()
    assert made - allowed == set()
