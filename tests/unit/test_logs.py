"""Log output: one event per line, escaped text or JSON, level filtering."""
from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogPublisher

from notifd.items import escape
from notifd.logs import Logging


def logger_to(logging: Logging) -> Logger:
    publisher = LogPublisher(logging.observer)
    return Logger(namespace="notifd.test", observer=publisher)


def test_escape_keeps_one_line():
    assert escape("a\nb\r\x1b[31mred\u2028é") == "a\\nb\\r\\x1b[31mred\\u2028é"


def test_text_lines_escape_what_a_client_could_send():
    out = io.StringIO()
    log = logger_to(Logging("text", "info", out))
    log.info("client said {what}", what="hello\nfake line: root logged in\x1b[2J")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" info notifd.test: client said hello\\nfake line: root logged in\\x1b[2J")


def test_failures_stay_on_one_line():
    out = io.StringIO()
    log = logger_to(Logging("text", "info", out))
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.failure("it broke")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "it broke | Traceback" in lines[0] and "ValueError: bad\\nvalue" in lines[0]


def test_json_lines():
    out = io.StringIO()
    log = logger_to(Logging("json", "info", out))
    log.warn("{count} items from {peer}", count=3, peer="1.2.3.4\n")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "warn" and record["namespace"] == "notifd.test"
    assert record["message"] == "3 items from 1.2.3.4\n"
    assert record["count"] == 3


def test_levels_and_changing_them():
    out = io.StringIO()
    logging = Logging("text", "warn", out)
    log = logger_to(logging)
    log.info("hidden")
    log.warn("shown")
    logging.set_level("debug")
    log.debug("now shown")
    assert [line.split(": ", 1)[1] for line in out.getvalue().splitlines()] == ["shown", "now shown"]


def test_journald_gets_priorities_instead_of_timestamps(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    out = io.StringIO()
    log = logger_to(Logging("text", "info", out))
    log.error("disk full")
    assert out.getvalue() == "<3>notifd.test: disk full\n"
