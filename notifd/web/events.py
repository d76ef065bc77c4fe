# `GET /v1/events`: new items as Server-Sent Events.
#
# Rules: each event is one item (`id:` its id, `event:` its type, `data:` JSON with id,
# type, text, created_at), in id order; nothing is skipped across reconnects: a stream
# resumes after `Last-Event-ID` (browsers send it when they reconnect), or, for a named
# client, after its stored cursors (and every event sent moves them, as an answer to
# `<type>?` does); a new anonymous stream starts with what comes next. The items come from
# the hub, as it reads them from the store (an internal live notifier: no database work per
# stream); the items a stream resumes after are read once, from the store, while new ones
# wait in the stream's buffer, so none falls between the two. A stream that lets more than
# `limits.max_unsent_bytes` pile up is dropped; comments keep idle streams (and proxies)
# alive. Streams count against the connection limits as the HTTP connections they are.
from __future__ import annotations

import json
from typing import Any

from twisted.internet import task
from twisted.logger import Logger
from twisted.web import server

from .. import store
from ..items import Item
from ..posting import ID_MAX
from ..wire import direct_socket, unsent, write
from .api import item_json
from .problems import problem

KEEPALIVE_SECONDS = 15.0
ENCODED_KEPT = 4096  # items whose encoded event is kept for the streams still to send it
REPLAY_LIMIT = 1000  # items a stream is sent on resuming, at most per type (the recent window bounds it too)


class Events:
    """Every SSE stream of this daemon."""

    log = Logger()

    def __init__(self, web: Any) -> None:
        self.web = web
        self.streams: set[Stream] = set()
        self._encoded: dict[int, bytes | None] = {}  # item id -> its event, built once for every stream
        self._keepalive = task.LoopingCall(self._ping)
        self._keepalive.clock = web.clock

    def start(self) -> None:
        self._keepalive.start(KEEPALIVE_SECONDS, now=False)

    def stop(self) -> None:
        if self._keepalive.running:
            self._keepalive.stop()
        for stream in list(self.streams):
            stream.close()

    def render(self, request) -> bytes | int:
        wanted = (request.args.get(b"types") or [b""])[0].decode("utf-8", "replace")
        types = [name for name in wanted.split(",") if name]  # none: every type the reader may read
        resume = _last_event_id(request)
        if resume is False:
            return problem(request, 400, "Last-Event-ID must be an item id")
        d = self.web.reader(request)
        d.addCallback(self._open, request, types or None, resume)
        d.addErrback(lambda failure: _end(request, problem(request, 503, "database unavailable; try again")))
        return server.NOT_DONE_YET

    def _open(self, reader, request, types: list[str] | None, resume: int | None) -> None:
        if isinstance(reader, bytes):  # refused: 401 (or 429); whoever is refused learns nothing of the types
            return _end(request, reader)
        served = self.web.server.types
        unknown = [name for name in types or () if name not in served]
        if unknown:
            return _end(request, problem(request, 404, f"unknown item type {unknown[0]!r} (known: {', '.join(served)})"))
        if types is None:
            types = [name for name in self.web.server.types if reader.allows(name)]
        refused = [name for name in types if not reader.allows(name)]
        if refused:
            return _end(request, problem(request, 403, f"not allowed to read {refused[0]}"))
        Stream(self, request, reader, types, resume)

    def feed(self, item: Item) -> None:
        """A new item, from the hub (a live notifier): to every stream that wants it."""
        for stream in list(self.streams):
            stream.offer(item)

    def encoded(self, item: Item) -> bytes | None:
        """The event of an item, rendered and encoded once whatever the number of streams;
        None for an item that cannot be sent (it is skipped, as by `<type>?`)."""
        if item.id not in self._encoded:
            if len(self._encoded) >= ENCODED_KEPT:
                self._encoded.clear()  # the items of a moment ago: streams past them need none
            server_ = self.web.server
            line = server_.render(item, server_.types[item.type])
            self._encoded[item.id] = None if line is None else (
                f"id: {item.id}\nevent: {item.type}\n"
                f"data: {json.dumps(dict(item_json(item, item.type), text=line), ensure_ascii=False)}\n\n"
            ).encode()
        return self._encoded[item.id]

    def revoke(self, change: store.Change) -> None:
        """A client was removed or its token rotated: end its streams."""
        for stream in list(self.streams):
            if stream.reader.client_id == change.subject and stream.reader.as_of_change < change.id:
                stream.close("client removed" if change.kind == store.CLIENT_REMOVED else "token changed")

    def refuse_anonymous(self) -> None:
        for stream in list(self.streams):
            if stream.reader.client_id is None:
                stream.close("anonymous clients are no longer served")

    def _ping(self) -> None:
        for stream in list(self.streams):
            stream.write(b": keep-alive\n\n")


class Stream:
    """One client's event stream."""

    def __init__(self, events: Events, request, reader, types: list[str], resume: int | None) -> None:
        self.events = events
        self.request = request
        self.reader = reader
        self.types = frozenset(types)
        self.replaying: list[Item] | None = []  # new items held while the stream catches up
        hub = events.web.server.hub
        if resume is not None:
            self.sent = {name: resume for name in types}
        elif reader.client_id is not None:
            self.sent = {name: reader.cursor(name) for name in types}
        else:
            self.sent = {name: hub.high_water for name in types}  # from what comes next
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx in front: do not hold events back
        request.write(b": notifd events\n\n")  # the headers go with it
        # Events take the line protocol's write fast path (one send() per stream, not two
        # epoll_ctl calls): a fan-out is a loop over thousands of streams.
        self._socket = direct_socket(request.channel.transport)
        events.streams.add(self)
        request.notifyFinish().addBoth(lambda _: events.streams.discard(self))
        server_ = events.web.server
        windows = {name: server_.hub.windows[name] for name in types}
        d = server_.db.run(store.recent_after, dict(self.sent), windows, server_.now(), REPLAY_LIMIT)
        d.addCallbacks(self._replayed, self._replay_failed)

    def _replayed(self, items: list[Item]) -> None:
        held, self.replaying = self.replaying, None
        for item in sorted({item.id: item for item in [*items, *held]}.values(), key=lambda item: item.id):
            self.offer(item)

    def _replay_failed(self, failure) -> None:
        self.close("database unavailable")

    def offer(self, item: Item) -> None:
        if item.type not in self.types or item.id <= self.sent[item.type]:
            return
        if self.replaying is not None:
            self.replaying.append(item)
            return
        event = self.events.encoded(item)
        self.sent[item.type] = item.id
        if event is not None:
            self.write(event)
        self.reader.moved(item.type, item.id)

    def write(self, data: bytes) -> None:
        request = self.request
        if request.finished or request.channel is None:
            return
        transport = request.channel.transport
        # What Request.write would send once the headers are out (they are: see __init__).
        write(transport, self._socket, b"%x\r\n%b\r\n" % (len(data), data) if request.chunked else data)
        cap = self.events.web.server.max_unsent
        if cap is not None and unsent(transport) > cap:
            self.events.web.server.metrics.closed["max_unsent_bytes"].inc()
            self.events.streams.discard(self)
            transport.abortConnection()

    def close(self, reason: str | None = None) -> None:
        """End the stream, saying why in a last `error` event."""
        self.events.streams.discard(self)
        if self.request.finished or self.request.channel is None:
            return
        if reason is not None:
            self.request.write(f"event: error\ndata: {json.dumps({'detail': reason})}\n\n".encode())
        self.request.finish()


def _last_event_id(request) -> int | None | bool:
    """The id a stream resumes after: `Last-Event-ID`, or `?last_event_id=`; False when not an id."""
    value = request.getHeader(b"last-event-id")
    if value is None:
        value = (request.args.get(b"last_event_id") or [None])[0]
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()):  # int() would also take "+3", "1_0", " ３"
        return False
    number = int(value)
    return number if number <= ID_MAX else False  # past ID_MAX the database would fail the query


def _end(request, body: bytes) -> None:
    if not request.finished:
        request.write(body)
        request.finish()

