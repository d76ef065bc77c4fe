"""An `exec` notifier for notifd: run a command for every new item, at least once.

Installed as a package (`pip install plugins/exec`), the plugin is named `exec`; copied into
a plugins directory, it is named after its file, `notifd_exec`: its table is then
`[plugins.notifd_exec]` (`notifctl plugins` lists the names loaded).

    [plugins.exec]
    command = ["/usr/local/bin/on-new-item", "--quiet"]
    types = ["classified"]     # optional; default: every type

The command runs without a shell, with the item's text on its standard input and
NOTIFD_ITEM_ID, NOTIFD_ITEM_TYPE, NOTIFD_ITEM_TEXT and NOTIFD_ITEM_CREATED_AT added to the
daemon's environment. Exit status 0 is a delivery; another status, or running past the
notifier's timeout (the process is then killed, with the processes it started), is retried
from notifd's outbox.
"""
import functools
import os
import shutil
import signal

from notifd import ConfigError, Notifier, hookimpl

_KEYS = {"command", "types"}
_SETSID = shutil.which("setsid")  # util-linux: runs a command as the leader of a new process group
_STDERR_KEPT = 500  # bytes of the command's stderr kept for the error message


class CommandFailed(Exception):
    """The command exited with a non-zero status or was killed."""


class Command:
    """Runs one command per item through the reactor's process support."""

    def __init__(self, argv: list[str], types: frozenset[str] | None, reactor) -> None:
        self.argv = argv
        self.types = types
        self.reactor = reactor

    def notify(self, item):
        if self.types is not None and item.type not in self.types:
            return None
        from twisted.internet import defer

        env = {
            **os.environ,
            "NOTIFD_ITEM_ID": str(item.id),
            "NOTIFD_ITEM_TYPE": item.type,
            "NOTIFD_ITEM_TEXT": item.text,
            "NOTIFD_ITEM_CREATED_AT": item.created_at.isoformat() + "Z",
        }
        run = _run_class()(item.text.encode("utf-8") + b"\n")
        # Cancelled by notifd after the notifier's timeout: kill the process, and what it started.
        run.done = defer.Deferred(canceller=lambda _: run.kill())
        argv = self.argv
        if _SETSID is not None:
            # In a process group of its own, whose id is its pid (setsid(1) execs in place):
            # the kill reaches a shell script's commands too.
            argv = [_SETSID, *argv]
        self.reactor.spawnProcess(run, argv[0], argv, env=env)
        return run.done


@functools.cache
def _run_class():
    # Twisted is imported on first use, not at the top: `notifctl add` loads this plugin
    # too, and stays fast.
    from twisted.internet.protocol import ProcessProtocol

    class Run(ProcessProtocol):
        """One run of the command; `done` fires when it exits."""

        def __init__(self, stdin: bytes) -> None:
            self.stdin = stdin
            self.stderr = b""
            self.done = None

        def connectionMade(self):
            self.transport.write(self.stdin)
            self.transport.closeStdin()

        def errReceived(self, data: bytes) -> None:
            self.stderr = (self.stderr + data)[-_STDERR_KEPT:]

        def kill(self) -> None:
            try:
                if _SETSID is not None:
                    os.killpg(self.transport.pid, signal.SIGKILL)
                else:
                    self.transport.signalProcess("KILL")
            except Exception:  # already gone
                pass

        def processEnded(self, reason) -> None:
            if self.done.called:  # cancelled: the timeout was already reported
                return
            code = getattr(reason.value, "exitCode", None)
            if code == 0:
                self.done.callback(None)
                return
            why = f"exit status {code}" if code is not None else f"killed by signal {reason.value.signal}"
            tail = self.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            self.done.errback(CommandFailed(f"{why}: {tail[0]}" if tail else why))

    return Run


def _check(settings: dict) -> tuple[list[str], frozenset[str] | None]:
    unknown = set(settings) - _KEYS
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}")
    argv = settings.get("command")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ConfigError('command: expected a list of strings, like ["/usr/local/bin/on-new-item"]')
    executable = shutil.which(argv[0])
    if executable is None:
        raise ConfigError(f"command: {argv[0]!r} is not an executable file")
    types = settings.get("types")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        raise ConfigError("types: expected a list of item type names")
    return [executable, *argv[1:]], None if types is None else frozenset(types)


@hookimpl
def register_notifiers(register, settings, reactor):
    if not settings:
        return  # not configured: nothing to do
    argv, types = _check(settings)
    register(Notifier("exec", Command(argv, types, reactor).notify, durable=True, timeout=60.0))
