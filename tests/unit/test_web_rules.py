"""The HTTP API's pure rules: which Host it answers to, whose code may run in the reactor."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from notifd import ItemType
from notifd.config import Config
from notifd.web import Web
from notifd.web.api import _notifd_s_own


@pytest.mark.parametrize("host, served", [
    (None, True),  # HTTP/1.0: no browser
    (b"127.0.0.1", True), (b"127.0.0.1:8788", True), (b"192.0.2.7:80", True),
    (b"[::1]:8788", True), (b"[2001:db8::1]", True), (b"[evil.example]", False), (b"[::1", False),
    (b"localhost", True), (b"LOCALHOST:8788", True), (b"localhost:", True), (b"app.localhost", True),
    (b"notifd.example.com", True), (b"notifd.example.com.:8788", True),  # listed (a trailing dot is the same name)
    (b"evil.example", False), (b"evil.example:8788", False), (b"", False),
    (b"127.0.0.1.evil.example", False), (b"localhost.evil.example", False),
    (b"notifd.example.com.evil.example", False), (b"\xff\xfe", False),
])
def test_the_hosts_the_api_answers_to(host, served):
    web = SimpleNamespace(config=Config(http_hosts=("notifd.example.com",)))
    assert (Web.host_refused(web, host) is None) == served


def test_any_host_when_told_so():
    web = SimpleNamespace(config=Config(http_hosts=("*",)))
    assert Web.host_refused(web, b"anything.example") is None


def test_only_notifd_s_own_code_is_checked_in_the_reactor():
    assert _notifd_s_own(ItemType("plain"))  # the default validation is notifd's
    assert not _notifd_s_own(ItemType("word", validate=lambda text: text))  # this module's: a plugin's
    assert not _notifd_s_own(ItemType("word", fresh=["a", "b"].pop))  # a built-in method: no module at all
    assert not _notifd_s_own(ItemType("word", validate={}.get))


def test_idle_event_streams_get_a_comment_every_15_seconds():
    # Proxies close a response that says nothing for a minute or so; a comment is not an event.
    from twisted.internet.task import Clock

    from notifd.web.events import Events

    clock = Clock()
    events = Events(SimpleNamespace(clock=clock))
    sent = []

    class Stream:
        write = staticmethod(sent.append)

    events.streams.add(Stream())
    events.start()
    clock.advance(14.9)
    assert sent == []
    clock.advance(0.1)
    assert sent == [b": keep-alive\n\n"]
    clock.advance(15)
    assert len(sent) == 2
    events.streams.clear()
    events.stop()
    clock.advance(60)
    assert len(sent) == 2


@pytest.mark.parametrize("body", [
    b"[" * 12000 + b"]" * 12000,  # deeper than Python's recursion limit: not a 500
    b'{"text": ' + b"[" * 12000 + b"]" * 12000 + b"}",
    b"{", b"[]", b'{"text": "x", "extra": 1}',
])
def test_a_json_body_that_is_not_a_post_is_one_line(body):
    from notifd.web.api import _parse_post

    with pytest.raises(ValueError, match='expected a JSON object'):
        _parse_post(body, "application/json")
