"""A real HTTP server in a thread, recording the POSTs it receives: the far end of a webhook."""
from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.integration.conftest import TIMEOUT


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def json(self):
        return json.loads(self.body)


class Receiver:
    """Answers each POST with the next status of `statuses` (200 when empty)."""

    def __init__(self) -> None:
        self.requests: queue.Queue[Request] = queue.Queue()
        self.statuses: deque[int] = deque()
        self.status = 200  # when `statuses` is empty
        self.hold = threading.Event()  # cleared: requests hang until it is set
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.put(Request(self.path, dict(self.headers), body, time.monotonic()))
                receiver.hold.wait(TIMEOUT)
                status = receiver.statuses.popleft() if receiver.statuses else receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def next(self, timeout: float = TIMEOUT) -> Request:
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no request came") from None

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
