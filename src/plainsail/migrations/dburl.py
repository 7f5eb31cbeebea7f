"""DATABASE_URL: which kind of database, where, and how to print it without its password."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from plainsail.errors import MigrationError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
POSTGRES = "postgresql"
SQLITE = "sqlite"
MYSQL = "mysql"
_KINDS = {
    "postgresql": POSTGRES, "postgres": POSTGRES, "pgsql": POSTGRES,
    "sqlite": SQLITE, "sqlite3": SQLITE,
    "mysql": MYSQL, "mariadb": MYSQL,
}


@dataclass(frozen=True)
class DatabaseURL:
    kind: str
    url: str  # what the driver gets (for PostgreSQL: without any +driver suffix)
    path: Path | None = None  # SQLite only

    def __str__(self) -> str:
        return self.url if self.kind == SQLITE else redact_url(self.url)

    def __repr__(self) -> str:
        return f"DatabaseURL({self.kind!r}, {redact_url(self.url)!r})"

    @property
    def password(self) -> str | None:
        if self.kind == SQLITE:
            return None
        parts = urlsplit(self.url)
        if parts.password:
            return parts.password
        for key, value in parse_qsl(parts.query):
            if key == "password":
                return value
        return None


def parse_database_url(value: str) -> DatabaseURL:
    """postgresql://user:pw@host/db, sqlite:///relative.db, sqlite:////abs.db, a plain path
    (SQLite) or mysql://... (recognized so that it can be refused)."""
    value = value.strip()
    if not value:
        raise MigrationError("no database: set DATABASE_URL or pass --database-url "
                             "(postgresql://user@host/db or sqlite:///path/to.db)")
    m = _SCHEME.match(value)
    if not m:
        return DatabaseURL(SQLITE, value, Path(value))
    scheme = m.group(1).lower()
    kind = _KINDS.get(scheme.split("+", 1)[0])
    if kind is None:
        raise MigrationError(
            f"unsupported database URL scheme {scheme}:// in {redact_url(value)}; use "
            "postgresql://, sqlite:/// or a file path"
        )
    if kind == SQLITE:
        rest = value[m.end():]
        if rest.startswith("/"):
            rest = rest[1:]  # sqlite:///rel.db -> rel.db; sqlite:////abs.db -> /abs.db
        rest = rest.split("?", 1)[0]
        if not rest:
            raise MigrationError("a sqlite:/// URL needs a file path, e.g. sqlite:///app.db")
        return DatabaseURL(SQLITE, value, Path(rest))
    if kind == POSTGRES:
        return DatabaseURL(POSTGRES, "postgresql://" + value[m.end():])
    return DatabaseURL(MYSQL, value)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    try:
        parts = urlsplit(url)
        if not parts.password and "password" not in parts.query:
            return url
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{host}"
        query = parts.query
        if "password" in query:
            query = urlencode([(k, "***" if k == "password" else v)
                               for k, v in parse_qsl(query, keep_blank_values=True)])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<database URL>"
