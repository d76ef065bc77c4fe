# `POST /v1/items/{type}`: posting over HTTP, committed in groups.
#
# Rules: a post goes through the one posting function (posting.store_posts, by way of
# store.publish), in a durable transaction, so every node and every durable notifier hears
# of it exactly as of `notifctl add`; the text is checked by the same function as
# notifctl's (items.check_post) and refused in the same words; the token is checked before
# anything else (api.py) and again in the transaction that stores the post, so a token
# removed or rotated posts nothing after its commit. Posts that arrive while a transaction runs wait for the next one and go together:
# HTTP posting is bound by one commit (one disk sync) per group, not per request.
from __future__ import annotations

from collections import Counter, deque
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from .. import store

MAX_GROUP = 1000  # posts in one transaction


class Batcher:
    """Posts on their way to the database, one transaction at a time, as many as came meanwhile."""

    log = Logger()

    def __init__(
        self, db: Any, committed: Callable[[list[store.Published]], None], metrics: Any, max_group: int = MAX_GROUP
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.committed = committed  # told what a group stored, after its commit (wake-ups)
        self.max_group = max_group
        self._waiting: deque[tuple[store.Publication, defer.Deferred]] = deque()
        self._busy = False

    def submit(self, publication: store.Publication) -> defer.Deferred:
        """A Deferred of the post's `store.Published`; it fails when the database does (nothing stored)."""
        d = defer.Deferred()
        self._waiting.append((publication, d))
        if not self._busy:
            self._next()
        return d

    def _next(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        self._busy = True
        group = [self._waiting.popleft() for _ in range(min(self.max_group, len(self._waiting)))]
        d = self.db.run(store.publish, [publication for publication, _ in group])
        d.addCallbacks(self._stored, self._failed, callbackArgs=(group,), errbackArgs=(group,))
        d.addBoth(lambda _: self._next())

    def _stored(self, outcomes: list[store.Published], group) -> None:
        self.metrics.http_post_groups.inc()
        # A labels() look-up per outcome, not per post.
        for outcome_name, count in Counter(outcome.outcome for outcome in outcomes).items():
            self.metrics.http_posts.labels(outcome_name).inc(count)
        # The answers first: the hub's notifiers (event streams, line clients) may take a while
        # for a group. Within this reactor turn still, so a request that follows an answer is
        # read after the hub holds the items.
        for (_, d), outcome in zip(group, outcomes):
            d.callback(outcome)
        try:
            self.committed(outcomes)
        except Exception:
            self.log.failure("after a group of HTTP posts")

    def _failed(self, failure, group) -> None:
        # The whole transaction rolled back: nothing of this group is stored.
        for _, d in group:
            d.errback(failure)
