"""PostgreSQL for the tests: a freshly created database per test, dropped after.

The server is the one at $NOTIFD_TEST_POSTGRESQL (a URL of a database to connect to for
CREATE/DROP DATABASE; default: postgres@127.0.0.1:5432, database `postgres`). Tests that
need it are skipped, with the reason, when psycopg is missing or no server answers.
Databases are named `notifd_test_<pid>_<n>`: one left behind by a killed run is dropped by
the next run once that pid is gone; nobody else's database is ever touched.
"""
from __future__ import annotations

import itertools
import os
import re

import pytest

from tests import require

ADMIN_URL = os.environ.get("NOTIFD_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/postgres")
_PREFIX = "notifd_test_"
_counter = itertools.count(1)
_unavailable: list[str] = []  # the reason, once known
_checked = False


def _admin():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


def unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    global _checked
    if not _checked:
        _checked = True
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _unavailable.append("psycopg is not installed (pip install -e '.[test]')")
        else:
            try:
                with _admin() as conn:
                    _drop_leftovers(conn)
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                _unavailable.append(f"no PostgreSQL at {ADMIN_URL} ({first}); set NOTIFD_TEST_POSTGRESQL")
    return _unavailable[0] if _unavailable else None


def _drop_leftovers(conn) -> None:
    names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'notifd\\_test\\_%'")]
    for name in names:
        match = re.fullmatch(rf"{_PREFIX}(\d+)_\d+", name)
        if match and not _alive(int(match.group(1))):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def create_database() -> str:
    """A new empty database; returns its SQLAlchemy URL (postgresql+psycopg://...)."""
    from sqlalchemy.engine import make_url

    name = f"{_PREFIX}{os.getpid()}_{next(_counter)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name.startswith(_PREFIX)
    with _admin() as conn:
        # FORCE: a daemon killed by the test may leave a session behind for a moment.
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def execute(url: str, sql: str, params=None) -> list[tuple]:
    """Run one statement on a test database as its own transaction; returns the rows, if any."""
    import psycopg
    from sqlalchemy.engine import make_url

    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def pg_url():
    """The URL of a fresh, empty PostgreSQL database (skips when there is no server)."""
    reason = unavailable()
    if reason:
        require.unavailable("postgresql", reason)
    url = create_database()
    yield url
    drop_database(url)
