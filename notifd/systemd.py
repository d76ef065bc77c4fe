# sd_notify without a dependency: READY=1, STOPPING=1, WATCHDOG=1 and STATUS= to the socket
# systemd names in $NOTIFY_SOCKET (Type=notify units). Outside systemd, every call is a no-op.
#
# Rule: notifying never blocks and never fails the daemon: systemd not listening is
# systemd's problem, not a reason to stop serving.
from __future__ import annotations

import os
import socket
from typing import Mapping


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send one notification, e.g. "READY=1"; returns whether there was a socket to send it to."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode("utf-8"), address)
    except OSError:
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings when the unit sets WatchdogSec= (half of it), else None."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
