# Prometheus metrics and the /metrics + /healthz HTTP endpoint (optional: `--metrics ENDPOINT`).
#
# Counters are bumped where things happen (wire, hub, database, plugins) through the one
# `Metrics` object of the daemon, with its own registry so that tests and several daemons
# in one process do not mix. Gauges that describe current state are read at scrape time.
# Rendering runs in the reactor thread: it only reads memory.
from __future__ import annotations

from typing import Any, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.process_collector import ProcessCollector
from twisted.internet import defer
from twisted.web import resource, server

from . import __version__
from .errors import first_line


class Metrics:
    """Every metric notifd exports."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        Info("notifd_build", "notifd version", registry=registry).info({"version": __version__})
        self.connections = Gauge("notifd_connections", "Open client connections", registry=registry)
        self.subscribers = Gauge(
            "notifd_notif_mode_connections", "Connections in notification mode", registry=registry
        )
        self.pending = Gauge(
            "notifd_pending_notifications",
            "Notifications sent and not acknowledged, or waiting to be sent",
            registry=registry,
        )
        self.items = Counter("notifd_items", "Items posted, by type", ["type"], registry=registry)
        self.notifications = Counter(
            "notifd_notifications_sent", "notif: lines sent to clients, by type", ["type"], registry=registry
        )
        self.http_posts = Counter(
            "notifd_http_posts", "Posts over HTTP that reached the database, by outcome", ["outcome"], registry=registry
        )
        self.http_post_groups = Counter(
            "notifd_http_post_groups", "Transactions that stored HTTP posts (several posts each under load)",
            registry=registry,
        )
        self.unsendable = Counter(
            "notifd_items_unsendable",
            "Items skipped because they cannot be sent (their plugin failed, or not one line), each counted once",
            ["type"], registry=registry,
        )
        registry.register(_PluginErrors())
        self.database_seconds = Histogram(
            "notifd_database_seconds",
            "Database calls from request to result, queue wait included",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.pruned = Counter("notifd_items_pruned", "Items removed by retention", registry=registry)
        # What an operator watches during an incident. Every label value exists from the
        # start (at 0), so that rate() and alerts see the first event.
        self.refused = _children(
            Counter("notifd_connections_refused", "Connections refused at connect, by the limit they hit",
                    ["limit"], registry=registry),
            REFUSED,
        )
        self.closed = _children(
            Counter("notifd_connections_closed", "Connections closed by the daemon, by the limit they hit",
                    ["limit"], registry=registry),
            CLOSED,
        )
        self.hellos = _children(
            Counter("notifd_hellos", "hello commands, by result (throttled: not checked, too many failures)",
                    ["result"], registry=registry),
            HELLO_RESULTS,
        )
        self.database_errors = _children(
            Counter("notifd_database_errors", "Database calls that failed, by kind", ["kind"], registry=registry),
            ("reads", "writes"),
        )
        self.outbox = Gauge(
            "notifd_outbox_deliveries", "Deliveries in the outbox, by notifier and state (counted every few seconds)",
            ["notifier", "state"], registry=registry,
        )

    def follow(self, subscribers: Callable[[], Any], connections: Callable[[], int]) -> None:
        """Read the current state from the daemon at each scrape."""
        self.subscribers.set_function(lambda: len(subscribers()))
        self.pending.set_function(lambda: sum(s.session.queued() for s in subscribers()))
        self.connections.set_function(connections)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# The label values of the counters above.
REFUSED = ("max_connections", "max_connections_per_address", "max_unidentified_per_address")
CLOSED = ("idle_timeout", "hello_timeout", "max_unsent_bytes", "http_request_timeout")
HELLO_RESULTS = ("accepted", "refused", "throttled")


def _children(counter: Counter, values: tuple[str, ...]) -> dict[str, Any]:
    return {value: counter.labels(value) for value in values}


class _PluginErrors:
    """notifd_plugin_errors_total{plugin}, read from `plugins.errors` (counted by call_plugin)."""

    def collect(self):
        from .plugins import errors

        family = CounterMetricFamily(
            "notifd_plugin_errors", "Failures of plugin code (raised, failed or timed out), by plugin", labels=["plugin"]
        )
        for plugin, count in sorted(errors.items()):
            family.add_metric([plugin], count)
        yield family


class _MetricsPage(resource.Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.render()


class HealthPage(resource.Resource):
    """200 when the daemon can reach its database within `timeout` seconds, else 503."""

    isLeaf = True

    def __init__(self, check: Callable[[], defer.Deferred], clock: Any, timeout: float = 2.0) -> None:
        super().__init__()
        self.check = check
        self.clock = clock
        self.timeout = timeout

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(code: int, body: str) -> None:
            if not gone:  # the prober may have given up already
                request.setResponseCode(code)
                request.write(body.encode())
                request.finish()

        d = self.check()
        d.addTimeout(self.timeout, self.clock)
        d.addCallbacks(
            lambda _: answer(200, "ok\n"),
            lambda failure: answer(503, f"database unavailable: {first_line(failure.value)}\n"),
        )
        return server.NOT_DONE_YET


def site(metrics: Metrics, health_check: Callable[[], defer.Deferred], clock: Any) -> server.Site:
    root = resource.Resource()
    root.putChild(b"metrics", _MetricsPage(metrics))
    root.putChild(b"healthz", HealthPage(health_check, clock))
    factory = server.Site(root)
    factory.noisy = False
    factory.log = lambda request: None  # no access log: scrapes every few seconds are noise
    return factory
