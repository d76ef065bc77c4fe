"""Shared fixtures: a real temporary SQLite database at head, the built-in item types, a rig.

The helpers behind them (and others the unit tests share) are in tests/harness.py.
"""
from __future__ import annotations

import io
import signal
import sys

import pytest
from twisted.logger import globalLogPublisher

from notifd import plugins
from notifd import db as dbmod
from notifd.cli import notifctl_main
from notifd.testing import ensure_database
from tests.harness import DATABASES, Rig
from tests.pg import pg_url  # noqa: F401  (a fixture: a fresh PostgreSQL database)


# A shell that starts the suite in the background (`pytest &`) makes it ignore SIGINT, and an
# ignored signal stays ignored across exec: every program the tests start would ignore Ctrl-C
# too, and the tests of what Ctrl-C does would fail for a reason that is not notifd's. A Python
# handler here is reset to the default in each program the tests start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# Figures the integration tests measure (their `report` fixture), printed after the run. They
# travel as user properties of the test's report, so they reach this process from pytest-xdist's
# workers too.
_measurements: list[str] = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        _measurements.extend(line for key, line in report.user_properties if key == "notifd measurement")


def pytest_terminal_summary(terminalreporter):
    if _measurements:
        terminalreporter.section("notifd measurements")
        for line in _measurements:
            terminalreporter.write_line(line)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "notifd.db"


@pytest.fixture
def engine(db_path):
    ensure_database(db_path)
    engine = dbmod.open_engine(dbmod.database_url(str(db_path)))
    yield engine
    engine.dispose()


@pytest.fixture(params=DATABASES)
def engine_on_each_database(request, db_path):
    """An engine at head, once on SQLite and once on PostgreSQL: every test using it runs twice,
    as test_x[sqlite] and test_x[postgresql] (skipped, saying why, when there is no server).

    A module whose tests all run on both overrides `engine` with it, in a fixture that says so.
    """
    if request.param == "sqlite":
        ensure_database(db_path)
    url = str(db_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = dbmod.open_engine(dbmod.database_url(url))
    yield engine
    engine.dispose()


@pytest.fixture
def database(engine):
    """The daemon's Database, running queries inline: unit tests need no thread or reactor."""
    return dbmod.Database.synchronous(engine)


@pytest.fixture
def item_types():
    return plugins.item_types(plugins.get_plugin_manager())


@pytest.fixture
def rig(database, item_types):
    """A server and its hub on the test database (tests/harness.py: Rig); the hub is stopped after."""
    rig = Rig(database, item_types)
    yield rig
    rig.hub.stop()


class Result:
    """What a notifctl run did."""

    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    @property
    def lines(self):
        return self.out.splitlines()


@pytest.fixture
def cli(db_path, monkeypatch, capsys):
    """Run notifctl in this process through its real entry point: `cli("add", "classified", "ad")`
    returns a Result (code, out, err). --db is the test database unless db=False.

    The database is created at head first (notifctl itself refuses to create one), unless
    create=False. The integration tests' `notifctl` fixture runs it as a process instead.
    """

    def run(*args, stdin: bytes = b"", db=True, create=True) -> Result:
        if db and create:
            ensure_database(db_path)
        argv = ["notifctl", *(["--db", str(db_path)] if db else []), *args]
        monkeypatch.setattr(sys, "argv", argv)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        code = 0
        try:
            notifctl_main()
        except SystemExit as e:
            code = e.code or 0
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def logged():
    """Every Twisted log event emitted during the test."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
