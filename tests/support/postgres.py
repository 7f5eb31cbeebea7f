"""A real PostgreSQL for the tests: one fresh, uniquely named database per test.

The server comes from scripts/setup.sh (127.0.0.1:5432, role plainsail); override the
administrative connection with $PLAINSAIL_TEST_PG. Each database is dropped afterwards,
so the tests can run twice in a row, in any order, and side by side.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get(
    "PLAINSAIL_TEST_PG", "postgresql://plainsail:plainsail@127.0.0.1:5432/postgres"
)


def database_url(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Any]:
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not reachable at {ADMIN_URL}: {exc}; run scripts/setup.sh")
    yield conn
    conn.close()


@pytest.fixture
def pg_url(pg_admin: Any) -> Iterator[str]:
    """The URL of a new, empty database, dropped (connections and all) after the test."""
    name = f"ps_test_{secrets.token_hex(6)}"
    pg_admin.execute(f"CREATE DATABASE {name}")
    try:
        yield database_url(name)
    finally:
        pg_admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_connect(pg_url: str) -> Iterator[Any]:
    """Open extra autocommit connections to the test database; all closed afterwards."""
    import psycopg

    conns: list[Any] = []

    def connect() -> Any:
        conn = psycopg.connect(pg_url, autocommit=True)
        conns.append(conn)
        return conn

    yield connect
    for c in conns:
        c.close()
