"""Database access: one short connection per request, errors that never show the password.

The schema is owned by the SQL files in migrations/, applied by `plainsail migrate`, which
records each applied file in the table `plainsail_migrations` (column `version`: the file
name's leading number, e.g. `0002` for `0002_add_tags.sql`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

CONNECT_TIMEOUT = 3  # seconds; a health check must answer even when the database does not


class DatabaseError(Exception):
    """A database problem, described without the connection string or the password."""


def schema_number(version: str) -> int | None:
    """The leading number of a migration version (`0002`, `0002_add_tags`) or None."""
    m = re.match(r"\s*(\d+)", version)
    return int(m.group(1)) if m else None


class Database:
    def __init__(self, url: str | None) -> None:
        self._url = url or ""

    def _secrets(self) -> list[str]:
        """Strings that must never leave this process: the URL and its password."""
        found = [self._url]
        try:
            password = urlsplit(self._url).password
        except ValueError:
            password = None
        if password:
            found += [password, unquote(password)]
        try:
            found.append(str(conninfo_to_dict(self._url).get("password") or ""))
        except psycopg.Error:
            pass
        return sorted({s for s in found if s}, key=len, reverse=True)

    def describe(self, exc: BaseException) -> str:
        """One line about a failure, with the URL and password replaced by ***."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._url:
            raise DatabaseError("DATABASE_URL is not set")
        try:
            conninfo_to_dict(self._url)
        except psycopg.Error:
            raise DatabaseError(
                "DATABASE_URL is not a valid connection string; "
                "write postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
            ) from None
        try:
            conn = psycopg.connect(self._url, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise DatabaseError(self.describe(exc)) from None
        try:
            with conn:
                yield conn
        except psycopg.Error as exc:
            raise DatabaseError(self.describe(exc)) from None
        finally:
            conn.close()

    def schema_version(self) -> str | None:
        """The newest migration applied, by number; None when none is recorded."""
        with self.connect() as conn:
            try:
                rows = conn.execute("SELECT version FROM plainsail_migrations").fetchall()
            except psycopg.errors.UndefinedTable:
                conn.rollback()
                return None
        versions = [str(r[0]) for r in rows if schema_number(str(r[0])) is not None]
        if not versions:
            return None
        newest = max(versions, key=lambda v: schema_number(v) or 0)
        return str(newest).split("_", 1)[0]

    def list_notes(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id, text, tags, created_at FROM notes ORDER BY id DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [_note(r) for r in rows]

    def add_note(self, text: str, tags: list[str]) -> dict[str, Any]:
        with self.connect() as conn:
            row = conn.execute(
                "INSERT INTO notes (text, tags) VALUES (%s, %s) "
                "RETURNING id, text, tags, created_at",
                (text, tags),
            ).fetchone()
        assert row is not None
        return _note(row)


def _note(row: tuple[Any, ...]) -> dict[str, Any]:
    note_id, text, tags, created_at = row
    return {
        "id": note_id,
        "text": text,
        "tags": list(tags or []),
        "created_at": created_at.isoformat(),
    }
