# The coordinator's side of the subscriber processes (bench/subscriber.py): start them,
# send every one a command, gather their answers, measure their CPU, and end them.
from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time

from bench import wire
from bench.targets import REPO


class WorkerError(Exception):
    pass


class Workers:
    """`count` subscriber processes (or those of another module speaking the same channel), driven together."""

    def __init__(self, count: int, module: str = "bench.subscriber") -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
            )
            for _ in range(count)
        ]
        self.buffers = {proc.stdout.fileno(): b"" for proc in self.procs}
        self.pids = [self.expect_one(proc, "hello", 30)["pid"] for proc in self.procs]

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, proc, command: str, **fields) -> None:
        proc.stdin.write(wire.encode_command(command, **fields))

    def broadcast(self, command: str, **fields) -> None:
        for proc in self.procs:
            self.send(proc, command, **fields)

    def _read_line(self, proc, deadline: float) -> dict | None:
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self.buffers[fd]:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise WorkerError(f"subscriber process {proc.pid} exited ({proc.wait()})")
                self.buffers[fd] += chunk
        line, _, self.buffers[fd] = self.buffers[fd].partition(b"\n")
        return wire.decode_command(line)

    def expect_one(self, proc, command: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_line(proc, deadline)
            if message is None:
                raise WorkerError(f"subscriber {proc.pid}: no {command!r} within {timeout}s")
            if message["cmd"] == "error":
                raise WorkerError(message["message"])
            if message["cmd"] == command:
                return message

    def expect(self, command: str, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        return [self.expect_one(proc, command, max(0.0, deadline - time.monotonic())) for proc in self.procs]

    def gather(self, command: str, timeout: float, on_late=None) -> list[dict]:
        """Wait for `command` from each; after `timeout`, call on_late() once and wait again."""
        try:
            return self.expect(command, timeout)
        except WorkerError:
            if on_late is None:
                raise
            on_late()
            return self.expect(command, 30)

    def split(self, total: int) -> list[int]:
        base, extra = divmod(total, len(self.procs))
        return [base + (1 if i < extra else 0) for i in range(len(self.procs))]

    def connect(self, target, total: int, ack: str = "round", timeout: float = 300) -> None:
        for i, (proc, count) in enumerate(zip(self.procs, self.split(total))):
            self.send(
                proc, "connect", group=target.name, target=target.kind, host=target.host, port=target.subscribe_port(),
                count=count, prefix=f"bench-{os.getpid()}-{i}", ack=ack, path=target.path,
            )
        self.expect("connected", timeout)

    def cpu_seconds(self) -> float:
        self.broadcast("cpu")
        return sum(m["seconds"] for m in self.expect("cpu", 30))

    def close_connections(self, group: str | None = None) -> None:
        self.broadcast("close", group=group)
        self.expect("closed", 60)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    self.send(proc, "exit")
                    proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
