"""notifd over HTTP, on the daemon's own reactor, store and read-state rules.

    POST /v1/items/{type}        post an item (publisher token)              api.py, publish.py
    GET  /v1/items/{type}/next   what `<type>?` answers (named client token) api.py
    GET  /v1/events              new items as Server-Sent Events             events.py
    GET  /v1/ws                  the line protocol over a WebSocket          ws.py
    GET  /v1/status              what the live page shows                    api.py
    GET  /healthz                200 when the database answers
    GET  /                       the live page (static files in static/)

`Web` is what every part shares; `site(web)` is the twisted.web Site the daemon listens
with (channel.py holds its limits). docs/http.md is the reference.
"""
from __future__ import annotations

import ipaddress
from importlib.resources import files
from typing import Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import resource, static

from .. import store
from ..config import Config
from ..metrics import HealthPage
from .api import Api, NotFound, bearer
from .channel import Site
from .events import Events
from .problems import problem
from .publish import Batcher


PUBLISHER_MEMORY = 5.0  # seconds a publisher found by its token is remembered (Web.publisher)
PUBLISHERS_REMEMBERED = 1000


class Reader:
    """Who reads over HTTP: a named client (its token) or an anonymous one, and its cursors."""

    def __init__(self, server: Any, identity: store.Identity | None) -> None:
        self.server = server
        self.client_id = None if identity is None else identity.client_id
        self.allowed = None if identity is None else identity.types
        self.as_of_change = 0 if identity is None else identity.as_of_change
        self.cursors: dict[str, int] = {} if identity is None else dict(identity.cursors)
        if self.client_id is not None:
            # Marks of this client's connections may still be on their way to the database.
            for type_name, item_id in server.read_marks.cursors_of(self.client_id).items():
                self.cursors[type_name] = max(item_id, self.cursors.get(type_name, 0))

    def allows(self, type_name: str) -> bool:
        return self.allowed is None or type_name in self.allowed

    def cursor(self, type_name: str) -> int:
        return self.cursors.get(type_name, 0)

    def moved(self, type_name: str, item_id: int) -> None:
        """Sent (or skipped) everything of a type up to `item_id`: a named client's read mark."""
        if item_id > self.cursors.get(type_name, 0):
            self.cursors[type_name] = item_id
            if self.client_id is not None:
                self.server.read_marks.mark(self.client_id, type_name, item_id)


class Web:
    """What the HTTP parts share: the line protocol's Server (database, hub, types, limits,
    metrics, read marks), the configuration, the group committer and the event streams."""

    def __init__(self, server: Any, config: Config, line_factory: Any, committed: Callable[[list], None]) -> None:
        self.server = server
        self.clock = server.clock
        self.config = config
        self.line_factory = line_factory  # wire.ConnectionFactory, for WebSocket sessions
        self._committed = committed  # after a group stored new items, with them: tell the hubs
        self.batcher = Batcher(server.db, self._stored, server.metrics)
        self.events = Events(self)
        self._publishers: dict[str, tuple[store.Publisher, float]] = {}  # token hash -> (publisher, until)
        self._checking: dict[tuple, list[defer.Deferred]] = {}  # (query, token hash) -> requests waiting for it

    @property
    def max_body(self) -> int:
        # A JSON body may escape each character of a text at the line limit as \uXXXX.
        return 6 * self.server.max_line + 1024

    def _stored(self, outcomes: list[store.Published]) -> None:
        created = [outcome.item for outcome in outcomes if outcome.outcome == "created"]
        if created:
            self._committed(created)  # in id order: the posting function draws ids in the group's order

    # --- who is asking --------------------------------------------------------------------------

    def reader(self, request) -> defer.Deferred:
        """A Deferred of the request's Reader, or of the 401 body to answer with."""
        token = bearer(request)
        if token is None:
            if self.server.anonymous:
                return defer.succeed(Reader(self.server, None))
            return defer.succeed(problem(request, 401, "anonymous clients are not served: send "
                                                       "Authorization: Bearer TOKEN (notifctl client add)"))
        if not token:
            return defer.succeed(problem(request, 401, "send Authorization: Bearer TOKEN"))
        d = self._look_up(request, store.identify_bearer, token)
        return d.addCallback(lambda identity: identity if isinstance(identity, bytes)
                             else problem(request, 401, "unknown client token") if identity is None
                             else Reader(self.server, identity))

    def publisher(self, request, token: str) -> defer.Deferred:
        """A Deferred of the publisher whose token this is, None, or the 429 body to answer with.

        Checked before anything of the post is looked at; a publisher found is remembered
        for a few seconds, so that steady posting does not add a query per post. That memory
        may be stale, never wrong in effect: the transaction that stores the post checks the
        token again, so a token removed or rotated meanwhile still posts nothing.
        """
        token_hash = store.hash_token(token)
        now = self.clock.seconds()
        known = self._publishers.get(token_hash)
        if known is not None and known[1] > now:
            return defer.succeed(known[0])
        if len(self._publishers) >= PUBLISHERS_REMEMBERED:
            self._publishers.clear()

        def found(publisher):
            if isinstance(publisher, store.Publisher):
                self._publishers[token_hash] = (publisher, self.clock.seconds() + PUBLISHER_MEMORY)
            return publisher

        return self._look_up(request, store.publisher_by_token, token).addCallback(found)

    def _look_up(self, request, query: Callable, token: str) -> defer.Deferred:
        """`query(conn, token)` (None for an unknown token), its failures counted against the
        address with the line protocol's failed `hello`s: over the limit, the token is not
        checked at all, and the Deferred fires with the 429 body.

        Unlike a `hello`, a check counts only once it has failed: behind a reverse proxy many
        clients share one address, and their valid tokens, checked at once, must all pass.
        Guesses checked in parallel are bounded by the address's connection limit instead.
        Requests with a token already being checked wait for that check.
        """
        key = (query, store.hash_token(token))
        if key in self._checking:
            shared: defer.Deferred = defer.Deferred()
            self._checking[key].append(shared)
            return shared
        limiter = self.server.hello_limiter
        address = getattr(request.channel, "address", "local")
        if limiter is not None and limiter.refuses(address):
            self.server.metrics.hellos["throttled"].inc()
            return defer.succeed(problem(request, 429, "too many failed tokens from your address; try again later"))
        waiting = self._checking[key] = []

        def checked(found):
            if found is None and limiter is not None:
                limiter.failed(address)
            return found

        def share(result):
            del self._checking[key]
            for shared in waiting:
                if isinstance(result, Failure):
                    shared.errback(result)
                else:
                    shared.callback(result)
            return result

        return self.server.db.run(query, token).addCallback(checked).addBoth(share)

    # --- cross-origin pages ---------------------------------------------------------------------

    def host_refused(self, host: bytes | None) -> str | None:
        """Why a request for `Host: host` is refused (421), or None to serve it.

        A browser trusts whatever a name resolves to: a page on evil.example that re-points
        its name at 127.0.0.1 would call this API as its own origin, with `Host:
        evil.example`. So the API answers only to IP addresses (no page can be served
        from a name that is one), localhost (browsers resolve it themselves), and the names
        in `http.hosts`. A request without Host (HTTP/1.0) comes from no browser.
        """
        if host is None:
            return None
        text = host.decode("latin-1").strip().lower()
        if text.startswith("["):  # an IPv6 address, [::1]:8788
            inside, closed, _ = text[1:].partition("]")
            name = inside if closed else text
        else:
            head, colon, port = text.rpartition(":")
            name = head if colon and (port.isdigit() or not port) else text  # "host:8788", "host:"
        name = name.rstrip(".")
        try:
            ipaddress.ip_address(name)
            return None
        except ValueError:
            pass
        allowed = self.config.http_hosts
        if name == "localhost" or name.endswith(".localhost") or "*" in allowed or name in allowed:
            return None
        shown = name.encode("ascii", "backslashreplace").decode("ascii")[:100]
        return f"host {shown!r} is not served here: notifd answers to IP addresses, localhost and the names in http.hosts"

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a page from `origin` may use the API: its own page, or one `http.cors_origins` lists."""
        if not origin:
            return True  # no Origin: a program, not a page
        if origin == "null":
            return False  # a sandboxed page or a local file
        origin = origin.rstrip("/").lower()
        if host and origin.split("://", 1)[-1] == host.lower():
            return True
        return origin in {o.rstrip("/").lower() for o in self.config.cors_origins}

    def cors(self, request) -> None:
        origin = request.getHeader(b"origin")
        if origin is None:
            return
        origin = origin.decode("latin-1")
        if origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in self.config.cors_origins}:
            request.setHeader(b"access-control-allow-origin", origin.encode("latin-1"))
            request.setHeader(b"access-control-allow-headers", b"authorization, content-type, last-event-id")
            request.setHeader(b"access-control-allow-methods", b"GET, POST, OPTIONS")
            request.setHeader(b"access-control-max-age", b"600")
        request.setHeader(b"vary", b"origin")

    # --- revocation ---------------------------------------------------------------------------

    def revoke(self, change: store.Change) -> None:
        self.events.revoke(change)

    def refuse_anonymous(self) -> None:
        self.events.refuse_anonymous()


def site(web: Web, health_check: Callable[[], defer.Deferred]) -> Site:
    """The HTTP site: the API under /v1/, the WebSocket, /healthz, and the live page."""
    from .ws import Resource as WebSocket

    root = _Root(files(__package__) / "static")
    v1 = _Directory()
    api = Api(web)
    for name in (b"items", b"events", b"status"):
        v1.putChild(name, _Prefixed(api, name))
    v1.putChild(b"ws", WebSocket(web))
    root.putChild(b"v1", v1)
    root.putChild(b"healthz", _Health(health_check, web.clock))
    return Site(root, web)


class _Health(HealthPage):
    """/healthz, as on the metrics endpoint; other methods get 405 problem JSON."""

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            return problem(request, 405, f"{request.method.decode('ascii', 'replace')} is not allowed here")
        return super().render(request)


class _Directory(resource.Resource):
    """A path level whose unknown names are 404 problem JSON, not twisted.web's HTML page."""

    def getChild(self, name: bytes, request):
        return NotFound()


class _Prefixed(resource.Resource):
    """Hands /v1/<name>/... to the API with the whole path after /v1/."""

    isLeaf = True

    def __init__(self, api: Api, name: bytes) -> None:
        super().__init__()
        self.api = api
        self.name = name

    def render(self, request):
        request.postpath = [self.name, *request.postpath]
        return self.api.render(request)


class _Root(resource.Resource):
    """`/` is the live page; its scripts and styles beside it; nothing else."""

    def __init__(self, page) -> None:
        super().__init__()
        self.index = (page / "index.html").read_bytes()
        for name in ("app.js", "style.css"):
            self.putChild(name.encode(), static.File(str(page / name)))

    def getChild(self, name: bytes, request):
        if name == b"":
            return self
        return NotFound()

    def render(self, request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            return problem(request, 405, f"{request.method.decode('ascii', 'replace')} is not allowed here")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        # Its own scripts and requests only; no form submission (the script posts); never in
        # another site's frame (a token typed into a framed page could be clicked away).
        request.setHeader(b"content-security-policy",
                          b"default-src 'self'; img-src 'self' data:; connect-src 'self'; "
                          b"form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"no-referrer")
        if request.method == b"HEAD":  # the headers only; a body here makes twisted.web log a warning
            request.setHeader(b"content-length", str(len(self.index)).encode())
            return b""
        return self.index
