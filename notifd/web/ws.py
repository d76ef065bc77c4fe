# `GET /v1/ws`: the tutorial's line protocol over a WebSocket, for browsers (autobahn).
#
# Rules: one text message is one line, each way; what happens in between is exactly the
# line protocol: the same `wire.Connection` and `protocol.Session` as over TCP, admitted
# against the same limits (it replaces its HTTP connection in the counts), and answering
# the same bytes, each line sent as one message without its CRLF. A message holding line
# breaks is taken as several lines, as those bytes would be over TCP. Binary messages are
# refused. A page from another origin may connect only if `http.cors_origins` lists it.
from __future__ import annotations

from typing import Any

import txaio
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from .problems import phrase as _phrase, problem, problem_bytes

MESSAGE_MAX = 65536  # bytes of one message before the framing refuses it
CLOSE_NORMAL = 1000
CLOSE_BINARY = 4003  # application codes: autobahn lets a server send 1000 or 3000-4999 only


class MessageTransport:
    """What a line-protocol Connection writes to, turned into WebSocket messages, one per line."""

    TLS = False

    def __init__(self, socket: "LineSocket") -> None:
        self.ws = socket
        self._pending = b""
        self.disconnecting = False
        self.connected = True

    # The TCP connection underneath: its buffer tells how much the client left unread.
    @property
    def dataBuffer(self) -> bytes:
        return getattr(self.ws.transport, "dataBuffer", b"")

    @property
    def _tempDataLen(self) -> int:
        return getattr(self.ws.transport, "_tempDataLen", 0)

    def write(self, data: bytes) -> None:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\r\n")
        for line in lines:
            self.ws.sendMessage(line, isBinary=False)

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self.ws.sendClose(CLOSE_NORMAL)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.ws.dropConnection(abort=True)

    def getPeer(self):
        return self.ws.transport.getPeer()

    def getHost(self):
        return self.ws.transport.getHost()

    # The Connection stops reading while a request is with the database: so does the socket.
    def pauseProducing(self) -> None:
        self.ws.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.ws.transport.resumeProducing()

    def registerProducer(self, producer, streaming: bool) -> None:
        pass  # the HTTP channel underneath is the TCP transport's producer already

    def unregisterProducer(self) -> None:
        pass

    def setTcpNoDelay(self, enabled: bool) -> None:
        set_option = getattr(self.ws.transport, "setTcpNoDelay", None)
        if set_option is not None:
            set_option(enabled)


class LineSocket(WebSocketServerProtocol):
    """One WebSocket carrying one line-protocol session."""

    # autobahn logs a client's bad frames and refused origins at warn and info, one line or
    # more each: any client could fill the log. The client is told (a close code, a 403);
    # autobahn's own errors still reach the log.
    log = txaio.make_logger(level="error")
    line: Any = None

    def onConnect(self, request):
        web = self.factory.web
        if not web.origin_allowed(request.origin, request.headers.get("host")):
            raise ConnectionDeny(403, "origin not allowed (http.cors_origins)")
        return None

    def sendHttpErrorResponse(self, code: int, reason: str, responseHeaders=None) -> None:
        # A refused handshake (a bad key, a missing version, another origin): answered in the
        # API's form, problem JSON with its length, instead of autobahn's bare status line
        # whose phrase is the reason. The connection is closed after it.
        body = problem_bytes(code, reason)
        head = [f"HTTP/1.1 {code} {_phrase(code)}", "Content-Type: application/problem+json",
                f"Content-Length: {len(body)}", "Connection: close",
                *(f"{name}: {value}" for name, value in responseHeaders or ())]
        self.sendData(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def onOpen(self) -> None:
        line = self.factory.web.line_factory.buildProtocol(self.transport.getPeer())
        line.over_websocket = True
        self.line = line
        line.makeConnection(MessageTransport(self))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.sendClose(CLOSE_BINARY, "text messages only: one line each")
            return
        if self.line is not None and getattr(self.line, "connected", False):
            self.line.dataReceived(payload + b"\n")

    def onClose(self, wasClean: bool, code, reason) -> None:
        line, self.line = self.line, None
        if line is not None:
            line.connectionLost(Failure(ConnectionDone()))


class Resource(WebSocketResource):
    """The WebSocket endpoint, mounted in the site: the HTTP connection becomes a WebSocket."""

    def __init__(self, web: Any) -> None:
        factory = WebSocketServerFactory()
        factory.protocol = LineSocket
        factory.web = web
        # A message is a line: one over the line limit is answered `ERR line too long`, as over
        # TCP, and one far over it is refused by the framing (close code 1009), unread.
        largest = max(MESSAGE_MAX, 2 * web.server.max_line)
        # failByDrop off: a protocol error (a message too big, invalid UTF-8, an unmasked
        # frame) is answered with its close code before the connection closes, so a browser
        # sees why (1009, 1007, 1002) instead of 1006.
        factory.setProtocolOptions(maxMessagePayloadSize=largest, maxFramePayloadSize=largest,
                                   autoPingInterval=30, autoPingTimeout=30, failByDrop=False)
        super().__init__(factory)
        self.web = web

    def render(self, request):
        if (request.getHeader("upgrade") or "").lower() != "websocket":
            # Not a handshake (a browser or curl opening the URL): an answer in the API's
            # form, instead of autobahn's status page.
            request.setHeader(b"upgrade", b"websocket")
            return problem(request, 426, "this is a WebSocket endpoint: connect with a WebSocket client")
        channel = request.channel
        if channel is not None and hasattr(channel, "uncount"):
            channel.uncount()  # the line-protocol Connection counts it from now on
        return super().render(request)
