# The HTTP connection itself: twisted.web's channel and request, with notifd's limits.
#
# Rules: every HTTP connection counts against the daemon's connection limits, in all and
# per address, with the line protocol's connections (wire.Server.admit); a request must
# arrive whole (headers and body) within `request_timeout` seconds of its first byte,
# however slowly it is trickled (twisted.web's own idle timeout is reset by every byte);
# a body over `max_body` bytes is refused with 413 before it is read; a new connection must
# deliver its first request within the same time, so a silent one cannot hold a slot for
# the idle timeout; headers are limited in size and number; a connection serves at most
# `max_requests` requests, then closes.
from __future__ import annotations

from http import HTTPStatus
from typing import Any

from twisted.web import http, server
from twisted.web.http_headers import Headers

from ..wire import direct_socket, write

MAX_HEADERS = 64
MAX_HEADER_BYTES = 16384
IDLE_TIMEOUT = 60.0  # seconds a keep-alive connection may wait for its next request


class Request(server.Request):
    """A request whose body is refused past the channel's limit."""

    def __init__(self, *args, **kwargs) -> None:
        # The body of a post is the item's text, whatever form encoding a client claims (`curl -d`).
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)

    def process(self) -> None:
        # Before any resource: a page that re-pointed its own name at this address (DNS
        # rebinding) would otherwise read the API as its own origin.
        host = self.getHeader(b"host")
        if host is None and self.clientproto != b"HTTP/1.0":
            status, refused = 400, "an HTTP/1.1 request needs a Host header"  # RFC 9112, 3.2
        else:
            status, refused = 421, self.channel.web.host_refused(host)
        if refused is None:
            return super().process()
        from .problems import problem

        self.site = self.channel.site
        body = problem(self, status, refused)
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.channel.max_body:
            self._too_large()
            return
        super().gotLength(length)
        self._received = 0

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel.transport.disconnecting:
            return  # refused already (413): the rest of this body goes nowhere
        self._received = getattr(self, "_received", 0) + len(data)
        if self._received > self.channel.max_body:
            self._too_large()
            return
        super().handleContentChunk(data)

    def _too_large(self) -> None:
        # Answered at once, before the body is read; the connection then closes.
        from .problems import problem_bytes

        body = problem_bytes(413, f"the request body is over {self.channel.max_body} bytes")
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\ncontent-type: application/problem+json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        transport.loseConnection()  # the channel parses nothing more (Channel.rawDataReceived)


class Channel(http.HTTPChannel):
    """One HTTP connection, counted and time-limited."""

    maxHeaders = MAX_HEADERS
    totalHeadersSize = MAX_HEADER_BYTES

    def __init__(self, web: Any, address: str) -> None:
        super().__init__()
        self.web = web
        self.address = address
        self.counted = True  # in web.server's connection counts until closed or upgraded
        self.served = 0
        self._deadline = None
        self._host = None
        self._gathered: list[bytes] | None = None  # see gather()
        self._socket = None  # see gather()

    def getHost(self):
        # twisted.web's Request asks at each request, and a TCP transport answers with a
        # getsockname() system call each time: the local address of a connection does not change.
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    # --- one send() per answer ------------------------------------------------------------------
    #
    # twisted.web writes an answer in pieces (the headers, then the body) to the transport,
    # which buffers them and asks epoll to watch the socket; they leave at the next reactor
    # turn, through doWrite, and the socket is unwatched again: two epoll_ctl calls and a
    # reactor turn per answer. An answer written later (a post, once its group is stored) is
    # gathered here instead and sent with one send() on the line protocol's write fast path
    # (wire.write: plain TCP with nothing buffered before it, else the transport as before).

    def gather(self) -> None:
        """Collect what is written from now on, until send_gathered()."""
        if self._socket is None:
            self._socket = direct_socket(self.transport) or False
        self._gathered = []

    def send_gathered(self) -> None:
        gathered, self._gathered = self._gathered, None
        if gathered:
            write(self.transport, self._socket or None, b"".join(gathered))

    def writeHeaders(self, version, code, reason, headers) -> None:
        if self._gathered is None:
            return super().writeHeaders(version, code, reason, headers)
        # As twisted.web's own, which writes them to the transport: Headers sanitises names
        # and values as they are set; an older Twisted passes (name, value) pairs.
        if not isinstance(headers, Headers):
            sanitized = Headers()
            for name, value in headers:
                sanitized.addRawHeader(name, value)
            headers = sanitized
        gathered = self._gathered
        gathered += (version, b" ", code, b" ", reason, b"\r\n")
        for name, values in headers.getAllRawHeaders():
            for value in values:
                gathered += (name, b": ", value, b"\r\n")
        gathered.append(b"\r\n")

    def write(self, data: bytes) -> None:
        if self._gathered is None:
            return super().write(data)
        self._gathered.append(data)

    def writeSequence(self, iovec) -> None:
        if self._gathered is None:
            return super().writeSequence(iovec)
        self._gathered += iovec

    @property
    def max_body(self) -> int:
        return self.web.max_body

    def connectionMade(self) -> None:
        super().connectionMade()
        self.web.server.others.add(self)
        # A silent connection: its first request must arrive whole within the timeout.
        self._deadline = self.web.clock.callLater(self.web.config.http_request_timeout, self._too_slow)

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest:
            # The first byte of a request: all of it must follow within the timeout.
            self._deadline = self.web.clock.callLater(self.web.config.http_request_timeout, self._too_slow)
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        # Once the connection is closing (a body refused with 413, a malformed request), what
        # else arrived is not parsed: twisted.web would go on decoding the chunks of the same
        # read, and a refused body's first chunks would complete a request and be posted.
        if not self.transport.disconnecting:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if self.transport.disconnecting:
            return  # see rawDataReceived
        self._cancel_deadline()
        self.served += 1
        super().allContentReceived()

    def checkPersistence(self, request, version) -> bool:
        if self.served + 1 >= self.web.config.http_max_requests:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return super().checkPersistence(request, version)

    def lineLengthExceeded(self, line: bytes) -> None:
        # One header line over the limit: a 400 like the other malformed requests, not a silent close.
        self._respondToBadRequestAndDisconnect()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's answer to a request it cannot parse (a bad Content-Length, too many
        # or too long headers, garbage) is a bare 400; the API's errors are problem JSON.
        self._cancel_deadline()
        self.transport.write(_closing_problem(400, "malformed HTTP request (or headers over 64 lines or 16 KiB)"))
        self.loseConnection()

    def _too_slow(self) -> None:
        self._deadline = None
        self.web.server.metrics.closed["http_request_timeout"].inc()
        self.transport.loseConnection()  # nothing is being written: a plain close, not a reset

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def uncount(self) -> None:
        """This connection is no longer an HTTP connection (a WebSocket now counts it)."""
        if self.counted:
            self.counted = False
            self.web.server.others.discard(self)
            self.web.server.left(self.address)

    def connectionLost(self, reason) -> None:
        self._cancel_deadline()
        self.uncount()
        super().connectionLost(reason)


class Site(server.Site):
    """twisted.web's Site with notifd's channel: admitted against the connection limits."""

    requestFactory = Request

    def __init__(self, resource, web: Any) -> None:
        super().__init__(resource, timeout=IDLE_TIMEOUT)
        self.web = web
        self.noisy = False

    def log(self, request) -> None:
        pass  # no access log: it would be the place a token or a text leaks; metrics count requests

    def buildProtocol(self, addr):
        address = getattr(addr, "host", "local")
        refusal = self.web.server.admit(address, waits_for_hello=False)
        if refusal is not None:
            return _Refused(refusal)
        channel = Channel(self.web, address)
        channel.factory = self
        channel.requestFactory = self.requestFactory
        channel.site = self
        channel.timeOut = self.timeOut
        channel.callLater = self.web.clock.callLater
        return channel


class _Refused(http.HTTPChannel):
    """A connection over a limit: 503 at once, then closed (counted and logged by admit).
    Refused as it opens, before any request: a WebSocket handshake gets this answer too."""

    def __init__(self, line: bytes) -> None:
        super().__init__()
        # The line protocol's reason ("ERR too many connections from your address"), in its words.
        self.reason = line.decode().strip().removeprefix("ERR ")

    def connectionMade(self) -> None:
        self.transport.write(_closing_problem(503, f"{self.reason}; try again later", b"retry-after: 5\r\n"))
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        pass


def _closing_problem(status: int, detail: str, headers: bytes = b"") -> bytes:
    """A whole problem-JSON answer, written raw before the connection is closed: for what
    twisted.web's request machinery never sees (a refused connection, an unparsable request)."""
    from .problems import problem_bytes

    body = problem_bytes(status, detail)
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\n%scontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, HTTPStatus(status).phrase.encode(), headers, len(body), body)
    )
