# The servers the benchmark measures, seen from the coordinator: how to start (or find)
# each one, how to publish one message, and which process to watch for CPU and memory.
#
# notifd and the bare-Twisted anchor are started fresh for each run, on a temporary
# database and a free port. Redis, Mosquitto and NATS are the ones already running on
# this machine; one that does not answer is reported absent, not as a failure.
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import wire
from bench.stats import proc_cpu_seconds, proc_rss_kib

TICKS = os.sysconf("SC_CLK_TCK")
LISTENING = re.compile(r"notifd listening on TCP [\d.]+:(\d+)")
HTTP_ON = re.compile(r"HTTP API and live page on http://[\d.]+:(\d+)/")
METRICS_ON = re.compile(r"metrics on http TCP [\d.]+:(\d+)")
REPO = Path(__file__).resolve().parent.parent


class Absent(Exception):
    """The target is not running here."""


def pid_listening_on(port: int) -> int | None:
    """The pid of the process listening on a local TCP port (needs `ss`)."""
    try:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"pid=(\d+)", out)
    return int(match.group(1)) if match else None


def _read_exact(sock: socket.socket, done) -> bytes:
    data = b""
    while not done(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed; got {data!r}")
        data += chunk
    return data


class Target:
    name = "?"
    kind = "?"  # the subscriber protocol, see bench.subscriber.Target
    host = "127.0.0.1"
    port = 0
    path = ""  # sse: the event stream's path
    pid: int | None = None

    def subscribe_port(self) -> int:
        """Where subscribers connect."""
        return self.port

    def start(self) -> None:
        """Start or find the server; raises Absent."""

    def stop(self) -> None:
        """Stop what start() started; close the publisher connection."""

    def publish(self) -> int:
        """Publish one message; returns time.time_ns() of the moment it was handed over."""
        raise NotImplementedError

    def after_publish(self) -> dict:
        """Read what the publish returned, if anything, after the round was measured."""
        return {}

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(Path(f"/proc/{self.pid}/stat").read_text(), TICKS)

    def rss_kib(self) -> int:
        return proc_rss_kib(Path(f"/proc/{self.pid}/status").read_text())

    def version(self) -> str:
        return ""


def _free_port_connection(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError as e:
        raise Absent(f"nothing answers on {host}:{port} ({e.strerror or e})") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Notifd(Target):
    """A notifd process on a temporary SQLite file; posts are committed here, as notifctl does."""

    name = "notifd"
    kind = "notifd"

    def __init__(self, config: str = "", workers: int = 1, metrics: bool = False) -> None:
        # Thousands of subscribers from one address: the per-address limit is for the network.
        self.config_text = "[limits]\nmax_connections = 0\nmax_connections_per_address = 0\n\n" + config
        if workers > 1:
            # `notifd --workers N`: N processes sharing the port. Server CPU and
            # memory figures add up the parent and its workers.
            self.config_text = f"workers = {workers}\n" + self.config_text
            self.name = f"notifd --workers {workers}"
        self.metrics = metrics
        self.proc: subprocess.Popen | None = None
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.engine = None
        self.log: list[str] = []
        self.http_port = 0  # the HTTP API's: a free port, not the default every daemon would share
        self.metrics_port = 0

    def start(self) -> None:
        from notifd import db as dbmod

        self.tmp = tempfile.TemporaryDirectory(prefix="notifd-bench-")
        self.db_path = Path(self.tmp.name) / "bench.db"
        config = Path(self.tmp.name) / "notifd.toml"
        config.write_text(self.config_text)
        self.engine = dbmod.open_engine(dbmod.database_url(str(self.db_path)))
        notifd = Path(sys.executable).with_name("notifd")
        command = [str(notifd)] if notifd.exists() else [sys.executable, "-c", "from notifd.cli import notifd_main; notifd_main()"]
        metrics = ["--metrics", "tcp:0:interface=127.0.0.1"] if self.metrics else []
        self.proc = subprocess.Popen(
            [*command, "--config", str(config), "--db", str(self.db_path), "--listen", "tcp:0:interface=127.0.0.1:backlog=1024",
             "--http", "tcp:0:interface=127.0.0.1", *metrics],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NOTIFD_CONFIG": "", "NOTIFD_LOG_FORMAT": "text"},
        )
        found = threading.Event()
        wanted = {"port": LISTENING, "http_port": HTTP_ON, **({"metrics_port": METRICS_ON} if self.metrics else {})}

        def drain() -> None:
            for line in self.proc.stderr:
                self.log.append(line)
                for field, pattern in wanted.items():
                    if (match := pattern.search(line)) and not getattr(self, field):
                        setattr(self, field, int(match.group(1)))
                if all(getattr(self, field) for field in wanted):
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(30):
            self.stop()
            raise RuntimeError(f"notifd did not start: {''.join(self.log)}")
        self.pid = self.proc.pid

    def _pids(self) -> list[int]:
        """notifd's process and its workers (`--workers`), if any."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [self.pid, *map(int, children)]

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), TICKS) for pid in self._pids())

    def rss_kib(self) -> int:
        return sum(proc_rss_kib(Path(f"/proc/{pid}/status").read_text()) for pid in self._pids())

    def post(self, type_name: str = "classified", text: str = "bench") -> int:
        """Commit an item the way `notifctl add` does and wake the daemon; returns the commit time."""
        from notifd import store
        from notifd.posting import Post
        from notifd.wakeup import send_wakeup

        from notifd.db import Database

        Database.synchronous(self.engine).call(store.post_items, [Post(type_name, text)])  # durable, as notifctl's
        committed = time.time_ns()
        send_wakeup(self.engine)
        return committed

    def publish(self) -> int:
        return self.post()

    def call(self, f, *args):
        with self.engine.begin() as conn:
            return f(conn, *args)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    def version(self) -> str:
        import notifd

        return notifd.__version__


class Anchor(Target):
    """bench/anchor.py: bare Twisted, no database, no state."""

    name = "bare Twisted"
    kind = "anchor"

    def __init__(self) -> None:
        self.proc = None
        self.control = None
        self.tmp = None

    def command(self, directory: Path) -> list[str]:
        return [sys.executable, "-m", "bench.anchor"]

    def start(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="anchor-bench-")
        port_file = Path(self.tmp.name) / "port"
        try:
            command = self.command(Path(self.tmp.name))
        except Absent:
            self.stop()
            raise
        self.proc = subprocess.Popen([*command, str(port_file)], cwd=REPO, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the anchor did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.pid = self.proc.pid
        self.control = _free_port_connection(self.host, self.port)

    def publish(self) -> int:
        t0 = time.time_ns()
        self.control.sendall(b"publish\r\n")
        return t0

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    def version(self) -> str:
        import twisted

        return twisted.__version__


class Floor(Anchor):
    """bench/floor.c, built here: notifd's notification mode (coalescing until OK) in plain C."""

    name = "C floor"
    kind = "notifd"

    def command(self, directory: Path) -> list[str]:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise Absent("no C compiler (cc) to build bench/floor.c")
        binary = directory / "floor"
        subprocess.run([compiler, "-O2", "-o", str(binary), str(REPO / "bench" / "floor.c")], check=True)
        return [str(binary)]

    def version(self) -> str:
        return "epoll"


class Redis(Target):
    name = "Redis"
    kind = "redis"
    port = 6379

    def __init__(self, clients: int = 0) -> None:
        self.publisher = None
        self.clients = clients
        self._restore_maxclients = None

    def _command(self, *words: bytes) -> bytes:
        self.publisher.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
        return _read_exact(self.publisher, lambda d: d.endswith(b"\r\n") and (not d.startswith(b"*") or d.count(b"\r\n") >= 5))

    def start(self) -> None:
        self.publisher = _free_port_connection(self.host, self.port)
        self.pid = pid_listening_on(self.port)
        # maxclients defaults to 10,000: N subscribers and the publisher need a few more.
        reply = self._command(b"CONFIG", b"GET", b"maxclients")
        current = int(reply.split(b"\r\n")[-2])
        if current < self.clients + 16:
            self._command(b"CONFIG", b"SET", b"maxclients", str(self.clients + 64).encode())
            self._restore_maxclients = current

    def publish(self) -> int:
        t0 = time.time_ns()
        self.publisher.sendall(wire.redis_publish())
        return t0

    def after_publish(self) -> dict:
        reply = _read_exact(self.publisher, lambda d: d.endswith(b"\r\n"))
        return {"receivers": wire.redis_receivers(reply)}

    def stop(self) -> None:
        if self.publisher is not None:
            if self._restore_maxclients is not None:
                self._command(b"CONFIG", b"SET", b"maxclients", str(self._restore_maxclients).encode())
            self.publisher.close()
            self.publisher = None

    def version(self) -> str:
        try:
            self.publisher = self.publisher or _free_port_connection(self.host, self.port)
            info = self._command(b"INFO", b"server").decode(errors="replace")
            return re.search(r"redis_version:(\S+)", info).group(1)
        except Exception:
            return ""


class Mosquitto(Target):
    name = "Mosquitto"
    kind = "mqtt"
    port = 1883

    def __init__(self) -> None:
        self.publisher = None

    def start(self) -> None:
        self.publisher = _free_port_connection(self.host, self.port)
        self.publisher.sendall(wire.mqtt_connect(f"bench-pub-{os.getpid()}"))
        _read_exact(self.publisher, lambda d: len(d) >= 4)
        self.pid = pid_listening_on(self.port)

    def publish(self) -> int:
        t0 = time.time_ns()
        self.publisher.sendall(wire.mqtt_publish())
        return t0

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.sendall(b"\xe0\x00")  # DISCONNECT
            self.publisher.close()
            self.publisher = None

    def version(self) -> str:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        try:
            out = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=5).stdout
            return re.search(r"version (\S+)", out).group(1)
        except Exception:
            return ""


class Nats(Target):
    name = "NATS"
    kind = "nats"
    port = 4222

    def __init__(self) -> None:
        self.publisher = None
        self.info = ""

    def start(self) -> None:
        self.publisher = _free_port_connection(self.host, self.port)
        self.info = _read_exact(self.publisher, lambda d: d.endswith(b"\r\n")).decode(errors="replace")
        self.publisher.sendall(wire.nats_connect_publisher())
        _read_exact(self.publisher, lambda d: d.endswith(wire.NATS_PONG))
        self.pid = pid_listening_on(self.port)

    def publish(self) -> int:
        t0 = time.time_ns()
        self.publisher.sendall(wire.nats_publish())
        return t0

    def after_publish(self) -> dict:
        # Answer the server's keep-alive pings on the publisher connection too.
        self.publisher.setblocking(False)
        try:
            data = self.publisher.recv(65536)
        except BlockingIOError:
            data = b""
        finally:
            self.publisher.setblocking(True)
        if wire.nats_pings(data):
            self.publisher.sendall(wire.NATS_PONG * wire.nats_pings(data))
        return {}

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None

    def version(self) -> str:
        match = re.search(r'"version":"([^"]+)"', self.info)
        return match.group(1) if match else ""


class _HttpPublisher:
    """One keep-alive connection that posts and reads each answer."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request
        self.sock = None
        self.responses = None

    def post(self) -> int:
        if self.sock is None:
            self.sock = _free_port_connection("127.0.0.1", self.port)
            self.responses = wire.HttpResponses()
        t0 = time.time_ns()
        self.sock.sendall(self.request)
        return t0

    def answer(self) -> int:
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the publisher's connection")
            done = self.responses.feed(data)
            if done:
                status, close = done[0]
                if close:
                    self.close()
                return status

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class NotifdHttp(Notifd):
    """notifd over HTTP: posts with a publisher token (durable, committed in groups), event streams."""

    kind = "sse"
    path = "/v1/events?types=classified"
    name = "notifd"

    def __init__(self, workers: int = 1) -> None:
        super().__init__(workers=workers, metrics=True)
        self.token = ""
        self.publisher = None

    def start(self) -> None:
        super().start()
        from notifd import store

        self.token = self.call(store.add_publisher, "bench", ["classified"])
        self.publisher = _HttpPublisher(self.http_port, self.post_request())

    def subscribe_port(self) -> int:
        return self.http_port

    def post_request(self) -> bytes:
        return wire.http_post("/v1/items/classified", "bench post", self.token)

    def publish(self) -> int:
        return self.publisher.post()

    def after_publish(self) -> dict:
        status = self.publisher.answer()
        if status != 201:
            raise RuntimeError(f"notifd answered the post with {status}")
        return {}

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        super().stop()


NCHAN_MODULES = ("/usr/lib/nginx/modules/ngx_nchan_module.so", "/usr/share/nginx/modules/ngx_nchan_module.so")
NCHAN_CONFIG = """\
load_module {module};
worker_processes 1;
worker_rlimit_nofile 65536;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 32768; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location = /pub {{ nchan_publisher; nchan_channel_id bench; }}
        location = /sub {{ nchan_subscriber eventsource; nchan_channel_id bench; }}
    }}
}}
"""


def _nginx() -> str | None:
    return shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _nchan_module() -> str | None:
    return next((path for path in NCHAN_MODULES if Path(path).exists()), None)


def install_nchan(log) -> None:
    """apt-get install nginx and its nchan module when they are missing (root only)."""
    if _nginx() and _nchan_module():
        return
    if os.geteuid() != 0:
        raise Absent("nginx with nchan is not installed (apt-get install nginx libnginx-mod-nchan)")
    log("  installing nginx and libnginx-mod-nchan with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx", "libnginx-mod-nchan"]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # a stale package list: update it once
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not (_nginx() and _nchan_module()):
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise Absent(f"apt-get could not install nginx and nchan: {lines[-1] if lines else result.returncode}")


class Nchan(Target):
    """nginx with its pub/sub module nchan, started here on 127.0.0.1 with a config of our own:
    one worker process (notifd serves from one), messages kept in memory (nchan's way)."""

    name = "nchan"
    kind = "sse"
    path = "/sub"

    def __init__(self, log=lambda message: None) -> None:
        self.log = log
        self.proc = None
        self.tmp = None
        self.publisher = None

    def start(self) -> None:
        install_nchan(self.log)
        self.tmp = tempfile.TemporaryDirectory(prefix="nchan-bench-")
        os.chmod(self.tmp.name, 0o755)  # nginx's worker runs as nobody
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = Path(self.tmp.name) / "nginx.conf"
        config.write_text(NCHAN_CONFIG.format(module=_nchan_module(), tmp=self.tmp.name, port=self.port))
        self.proc = subprocess.Popen(
            [_nginx(), "-p", self.tmp.name, "-e", f"{self.tmp.name}/error.log", "-c", str(config), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    error = Path(self.tmp.name, "error.log")
                    log = error.read_text() if error.exists() else ""
                    self.stop()
                    raise RuntimeError(f"nginx did not start: {log}")
                time.sleep(0.05)
        self.pid = self.proc.pid
        self.publisher = _HttpPublisher(self.port, self.post_request())

    def post_request(self) -> bytes:
        return wire.http_post("/pub", "bench post")

    def publish(self) -> int:
        return self.publisher.post()

    def after_publish(self) -> dict:
        status = self.publisher.answer()
        if not 200 <= status < 300:
            raise RuntimeError(f"nchan answered the post with {status}")
        return {}

    def _pids(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [self.pid, *map(int, children)]

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), TICKS) for pid in self._pids())

    def rss_kib(self) -> int:
        return sum(proc_rss_kib(Path(f"/proc/{pid}/status").read_text()) for pid in self._pids())

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()  # nginx's fast shutdown
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    def version(self) -> str:
        try:
            nginx = subprocess.run([_nginx(), "-v"], capture_output=True, text=True, timeout=10).stderr.strip()
            nchan = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            # "1:1.3.6+dfsg-2": the upstream version, without epoch and Debian revision.
            upstream = nchan.partition(":")[2] or nchan
            return f"{upstream.split('+')[0].split('-')[0]} (nginx {nginx.rpartition('/')[2]})"
        except Exception:
            return ""


def peers(clients: int) -> list[Target]:
    return [Redis(clients), Nats(), Mosquitto()]
