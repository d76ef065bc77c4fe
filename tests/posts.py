"""Posting one item in a test, through the one posting function (notifd.posting.store_posts)."""
from __future__ import annotations

from notifd import store
from notifd.posting import Post


@store.durable
def add_item(conn, type_name: str, text: str, *, key: str | None = None, now=None) -> tuple[int, bool]:
    """Store one item in this transaction; returns (its id, whether this call created it)."""
    [posted] = store.post_items(conn, [Post(type_name, text, key)], now=now)
    return posted.item.id, posted.created
