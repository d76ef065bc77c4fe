"""A `webhook` notifier for notifd: POST every new item as JSON to a URL, at least once.

Installed as a package (`pip install plugins/webhook`), the plugin is named `webhook`;
copied into a plugins directory, it is named after its file: copy it as `webhook.py` for
the table below (`notifctl plugins` lists the names loaded). The notifier is `webhook`
either way (`[notifiers.webhook]`).

    [plugins.webhook]
    url = "https://example.com/hooks/notifd"
    types = ["classified"]                          # optional; default: every type
    headers = { Authorization = "Bearer s3cret" }   # optional

    [notifiers.webhook]                             # optional; notifd's own retry settings
    timeout = "10s"
    max_attempts = 8

The body is `{"id": 7, "type": "classified", "text": "...", "created_at": "2026-11-26T10:00:00Z"}`.
Any answer but 2xx within the timeout is a failure, retried from notifd's outbox with
back-off, across restarts, until it is dead (`notifctl outbox`). Delivery is at least
once: the `Idempotency-Key: notifd-<id>` header lets the receiver drop a repeat. Connections
are kept alive; a POST that meets one the receiver is closing is sent again at once on a new one.
"""
import json
from urllib.parse import urlsplit

from notifd import ConfigError, Notifier, hookimpl

_KEYS = {"url", "types", "headers"}


class WebhookFailed(Exception):
    """The endpoint answered, but not with 2xx."""


class Webhook:
    """POSTs items to one URL with Twisted's HTTP client."""

    def __init__(self, url: str, headers: dict[str, str], types: frozenset[str] | None, reactor) -> None:
        self.url = url.encode("ascii")
        self.headers = headers
        self.types = types
        self.reactor = reactor
        self._agent = self._fresh_agent = None

    def notify(self, item):
        if self.types is not None and item.type not in self.types:
            return None
        # Twisted's web client is imported here, not at the top: `notifctl add` loads this
        # plugin too, and stays fast.
        from twisted.internet import defer
        from twisted.web.client import Agent, HTTPConnectionPool, RequestNotSent, ResponseNeverReceived, readBody
        from twisted.web.http_headers import Headers

        if self._agent is None:
            # Persistent connections: one TCP (and TLS) handshake for many items.
            pool = HTTPConnectionPool(self.reactor, persistent=True)
            self._agent = Agent(self.reactor, connectTimeout=10, pool=pool)
            # A retry goes on a connection of its own (see `again`).
            self._fresh_agent = Agent(self.reactor, connectTimeout=10)
        body = json.dumps(
            {"id": item.id, "type": item.type, "text": item.text, "created_at": item.created_at.isoformat() + "Z"},
            ensure_ascii=False,
        ).encode("utf-8")
        headers = Headers({"Content-Type": ["application/json"], "Idempotency-Key": [f"notifd-{item.id}"]})
        for name, value in self.headers.items():
            headers.setRawHeaders(name, [value])
        # notifd cancels this Deferred after the notifier's timeout: Agent then drops the connection.
        d = self._agent.request(b"POST", self.url, headers, _Body(body))

        def again(failure):
            # A kept-alive connection the receiver closed just as we sent on it (an HTTP/1.0
            # server, or an idle timeout): no answer came, so try once more at once rather than
            # wait for the outbox's back-off. Not through the pool: its other kept connections
            # may be closing too (an HTTP/1.0 server closes every one after its answer, and
            # Twisted keeps them). Twisted retries only idempotent methods itself; the
            # Idempotency-Key makes this POST safe to repeat.
            failure.trap(ResponseNeverReceived, RequestNotSent)
            if any(reason.check(defer.CancelledError) for reason in getattr(failure.value, "reasons", [])):
                # notifd cancelled it at the notifier's timeout: a failed attempt, said as a timeout.
                raise defer.CancelledError()
            return self._fresh_agent.request(b"POST", self.url, headers, _Body(body))

        def check(response):
            # Read the body in any case, so the connection is released.
            return readBody(response).addCallback(lambda _: _raise_unless_2xx(response))

        return d.addErrback(again).addCallback(check)


def _raise_unless_2xx(response) -> None:
    if not 200 <= response.code < 300:
        raise WebhookFailed(f"HTTP {response.code} {response.phrase.decode('latin-1')}")


class _Body:
    """A request body already in memory (an IBodyProducer)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        from twisted.internet import defer

        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


def _check(settings: dict) -> tuple[str, dict[str, str], frozenset[str] | None]:
    unknown = set(settings) - _KEYS
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}")
    url = settings.get("url")
    if not isinstance(url, str) or not url.isascii() or urlsplit(url).scheme not in ("http", "https") \
            or not urlsplit(url).hostname:
        raise ConfigError(f"url: expected an http:// or https:// URL, got {url!r}")
    headers = settings.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError("headers: expected a table of strings")
    types = settings.get("types")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        raise ConfigError("types: expected a list of item type names")
    return url, headers, None if types is None else frozenset(types)


@hookimpl
def register_notifiers(register, settings, reactor):
    if not settings:
        return  # not configured: nothing to do
    url, headers, types = _check(settings)
    register(Notifier("webhook", Webhook(url, headers, types, reactor).notify, durable=True, timeout=30.0))
