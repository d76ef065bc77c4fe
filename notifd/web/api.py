# The HTTP API's routes: posting, reading the next item, the status the live page shows.
#
# Rules: the same rules as the line protocol and notifctl, in their words: a post goes
# through the one posting function (publish.py); `GET /v1/items/{type}/next` answers what
# `<type>?` would, with the same cursor moves (wire.Server.next_answer, read marks); a named
# client may be restricted to types (403, as `ERR not allowed`); anonymous reads only where
# `auth.anonymous` allows them. Nothing here blocks: every database call is a Deferred.
from __future__ import annotations

import json
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http import NO_BODY_CODES

from .. import store
from ..items import InvalidItem, Item, PluginFailed, check_post
from ..posting import Post, key_problem
from .problems import problem

JSON = b"application/json"


def item_json(item: Item | None, type_name: str, line: str | None = None) -> dict[str, Any]:
    if item is None:  # a fresh value, drawn for this answer and not stored
        return {"id": None, "type": type_name, "text": line, "created_at": None}
    return {"id": item.id, "type": item.type, "text": item.text,
            "created_at": item.created_at.isoformat(timespec="milliseconds") + "Z"}


def send_json(request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON)
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def bearer(request) -> str | None:
    """The token of `Authorization: Bearer TOKEN`; "" when the header is there but not a bearer token."""
    value = request.getHeader(b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


def finish(request, body: bytes) -> None:
    """Write an answer that came later, unless the client has gone.

    With its length, not chunked (one piece less to write and for the client to parse), and
    in one send() (channel.Channel.gather): headers and body are sent before `finish()`,
    which may go on to the connection's next request, whose answer must come after.
    """
    if request.finished or getattr(request, "_gone", False):
        return
    if request.code not in NO_BODY_CODES:
        request.setHeader(b"content-length", b"%d" % len(body))
    channel = request.channel
    gather = getattr(channel, "gather", None)  # absent from test channels
    if gather is not None:
        gather()
        try:
            request.write(body)
        finally:
            channel.send_gathered()
    else:
        request.write(body)
    request.finish()


def watch_disconnect(request) -> None:
    request.notifyFinish().addErrback(lambda _: setattr(request, "_gone", True))


class Api(resource.Resource):
    """Everything under /v1/."""

    isLeaf = True
    log = Logger()

    def __init__(self, web: Any) -> None:
        super().__init__()
        self.web = web

    def render(self, request) -> bytes | int:
        self.web.cors(request)
        path = [part.decode("utf-8", "replace") for part in request.postpath]
        method = request.method.decode("ascii", "replace")
        if method == "OPTIONS":  # a CORS preflight
            request.setResponseCode(204)
            return b""
        match path:
            case ["items", type_name] if method == "POST":
                return self.post(request, type_name)
            case ["items", type_name, "next"] if method == "GET":
                return self.next(request, type_name)
            case ["events"] if method == "GET":
                return self.web.events.render(request)
            case ["status"] if method == "GET":
                return self.status(request)
            case ["items", _] | ["items", _, "next"] | ["events"] | ["status"]:
                request.setHeader(b"allow", b"POST" if len(path) == 2 and path[0] == "items" else b"GET")
                return problem(request, 405, f"{method} is not allowed here")
        return problem(request, 404, "no such resource")

    # --- posting ------------------------------------------------------------------------------

    def post(self, request, type_name: str) -> bytes | int:
        # The token first: nothing of the plugin's (its validation, a fresh value) runs for a
        # caller without one, and the answer to a bad token says so, whatever the body.
        token = bearer(request)
        if not token:
            return problem(request, 401, "no token: send Authorization: Bearer TOKEN (notifctl token add)")
        watch_disconnect(request)
        body = request.content.read()  # now: a connection lost during the check closes it
        d = self.web.publisher(request, token)
        d.addCallback(self._authenticated, request, type_name, token, body)
        d.addErrback(self._unavailable, request)
        return server.NOT_DONE_YET

    def _authenticated(self, publisher: store.Publisher | bytes | None, request, type_name: str, token: str,
                       body: bytes):
        if isinstance(publisher, bytes):  # too many failed tokens: 429
            return finish(request, publisher)
        if publisher is None:
            return finish(request, problem(request, 401, "unknown token (notifctl token list)"))
        item_type = self.web.server.types.get(type_name)
        if item_type is None:
            return finish(request, problem(
                request, 404, f"unknown item type {type_name!r} (known: {', '.join(self.web.server.types)})"))
        if type_name not in publisher.types:
            return finish(request, problem(request, 403, f"this token may not post {type_name}"))
        content_type = (request.getHeader(b"content-type") or b"text/plain").decode("latin-1").split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            content_type = "text/plain"  # `curl -d TEXT` says so; the body is the text, as it came
        if content_type not in ("text/plain", "application/json"):
            return finish(request, problem(
                request, 415, "send text/plain (the item's text) or application/json {\"text\", \"id\"}"))
        try:
            text, key = _parse_post(body, content_type)
        except ValueError as e:
            return finish(request, problem(request, 400, str(e)))
        if key is not None and (wrong := key_problem(key)):
            return finish(request, problem(request, 400, f"id {wrong}"))
        # A plugin's code (its validation, a fresh value) may be slow: in a worker thread, not
        # the reactor. notifd's own (the built-in types) takes microseconds and no I/O: the
        # thread's two hops would cost more than it does.
        max_line = self.web.server.max_line
        d = (defer.succeed(_checked_post(item_type, text, max_line)) if _notifd_s_own(item_type)
             else threads.deferToThread(_checked_post, item_type, text, max_line))
        d.addCallback(self._checked, request, token, type_name, key)
        return d

    def _checked(self, checked: tuple, request, token: str, type_name: str, key: str | None):
        if isinstance(checked[0], int):
            return finish(request, problem(request, *checked))
        text, drawn = checked
        # The token is checked again in the transaction that stores the post: one removed or
        # rotated since posts nothing.
        d = self.web.batcher.submit(store.Publication(token, Post(type_name, text, key, drawn)))
        d.addCallback(self._posted, request, type_name, key)
        return d

    def _posted(self, published: store.Published, request, type_name: str, key: str | None) -> None:
        match published.outcome:
            case "created":
                body = send_json(request, 201, item_json(published.item, type_name))
            case "found":
                body = send_json(request, 200, item_json(published.item, type_name))
            case "unauthorized":
                body = problem(request, 401, "unknown token (notifctl token list)")
            case "forbidden":
                body = problem(request, 403, f"this token may not post {type_name}")
            case "conflict":
                body = problem(request, 409, f"id {key}: key already used by item {published.conflict_with} "
                                             "with another type or text")
        finish(request, body)

    def _unavailable(self, failure: Failure, request) -> None:
        if not failure.check(SQLAlchemyError):
            self.log.failure("posting over HTTP", failure)
            return finish(request, problem(request, 500, "internal error; nothing was stored (see the daemon's log)"))
        finish(request, problem(request, 503, "database unavailable; nothing was stored, try again"))

    # --- reading ------------------------------------------------------------------------------

    def next(self, request, type_name: str) -> bytes | int:
        watch_disconnect(request)
        d = self.web.reader(request)
        d.addCallback(self._read, request, type_name)
        d.addErrback(self._read_failed, request)
        return server.NOT_DONE_YET

    def _read(self, reader, request, type_name: str) -> Any:
        if isinstance(reader, bytes):  # refused: 401 (or 429); whoever is refused learns nothing of the types
            return finish(request, reader)
        item_type = self.web.server.types.get(type_name)
        if item_type is None:
            return finish(request, problem(
                request, 404, f"unknown item type {type_name!r} (known: {', '.join(self.web.server.types)})"))
        if not reader.allows(item_type.name):
            return finish(request, problem(request, 403, f"not allowed to read {item_type.name}"))
        after = reader.cursor(item_type.name)
        d = self.web.server.next_answer(item_type, after)
        d.addCallback(self._answered, request, reader, item_type, after)
        return d

    def _answered(self, answer, request, reader, item_type, after: int) -> None:
        item, line, cursor = answer
        if line is None:
            finish(request, problem(request, 500, f"the {item_type.name} plugin failed to draw a value"))
            return
        if cursor > after:
            reader.moved(item_type.name, cursor)  # sent, or skipped as unsendable: as `<type>?` does
        if item is None and line == "":
            request.setResponseCode(204)  # nothing unread (oldest-first types)
            finish(request, b"")
            return
        shown = item_json(item, item_type.name, line)
        if item is not None:
            shown["text"] = line  # what `<type>?` sends: the type's own rendering
        finish(request, send_json(request, 200, shown))

    def _read_failed(self, failure: Failure, request) -> None:
        finish(request, problem(request, 503, "database unavailable; try again"))

    # --- the live page's view -----------------------------------------------------------------

    def status(self, request) -> bytes | int:
        # Readable by whoever may read items: it shows the newest ones.
        watch_disconnect(request)
        d = self.web.reader(request)
        d.addCallback(lambda reader: finish(request, reader if isinstance(reader, bytes) else self._status(request, reader)))
        d.addErrback(self._read_failed, request)
        return server.NOT_DONE_YET

    def _status(self, request, reader) -> bytes:
        web = self.web
        hub = web.server.hub
        newest = {}
        for name in web.server.types:
            memory = hub.recent.get(name)
            items = [] if memory is None or not reader.allows(name) else memory.newest_items(5)
            newest[name] = [item_json(item, name) for item in reversed(items)]
        line = [c for c in web.server.connections if not getattr(c, "over_websocket", False)]
        body = {
            "node": web.server.node,
            "types": list(web.server.types),
            "connections": {
                "line": len(line),
                "notif_mode": len(hub.subscribers),
                "websocket": len(web.server.connections) - len(line),
                "events": len(web.events.streams),
                "http": len(web.server.others) - len(web.events.streams),
            },
            "newest": newest,
        }
        request.setHeader(b"cache-control", b"no-store")
        return send_json(request, 200, body)


def _notifd_s_own(item_type) -> bool:
    """Whether a type's validation and fresh value are notifd's own code, not a plugin's (a
    plugin file is loaded as `notifd_plugin_<name>`, a package under its own name)."""
    return all(f is None or (getattr(f, "__module__", None) or "").startswith("notifd.")
               for f in (item_type.validate, item_type.fresh))


def _checked_post(item_type, text: str, max_line: int) -> tuple[str, bool] | tuple[int, str]:
    """(the text to store, whether it was drawn), or (status, detail) of the refusal.

    In a worker thread for a plugin's type; at once for notifd's own (`_notifd_s_own`)."""
    drawn = not text and item_type.fresh is not None
    try:
        if drawn:
            text = item_type.fresh()  # `random` draws its value, as `notifctl add random` does
        return check_post(item_type, text, max_line), drawn
    except PluginFailed as e:
        return 500, str(e)
    except InvalidItem as e:
        return 413 if len(text.encode("utf-8", "surrogatepass")) > max_line else 400, str(e)
    except Exception as e:  # from fresh()
        return 500, f"the {item_type.name} plugin failed to draw a fresh value: {type(e).__name__}: {e}"


def _parse_post(body: bytes, content_type: str) -> tuple[str, str | None]:
    """(text, idempotency key) of a post's body; ValueError with the one line to answer."""
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("text is not valid UTF-8") from None
    if content_type == "text/plain":
        if decoded.endswith("\n"):  # one final line ending, as `notifctl add` reads stdin
            decoded = decoded[:-1].removesuffix("\r")
        return decoded, None
    try:
        data = json.loads(decoded)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise ValueError('expected a JSON object {"text": "...", "id": "optional key"}') from None
    if not isinstance(data, dict) or set(data) - {"text", "id"}:
        raise ValueError('expected a JSON object {"text": "...", "id": "optional key"}')
    text, key = data.get("text", ""), data.get("id")
    if not isinstance(text, str) or not (key is None or isinstance(key, str)):
        raise ValueError('"text" and "id" must be strings')
    return text, key


class NotFound(resource.Resource):
    """404 as problem JSON, for any path the site does not serve."""

    isLeaf = True

    def render(self, request) -> bytes:
        return problem(request, 404, "no such resource")
