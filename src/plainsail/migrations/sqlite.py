"""SQLite for the migration runner, through the standard library's sqlite3.

The connection runs in autocommit mode (isolation_level=None) and each file between an
explicit BEGIN IMMEDIATE and COMMIT, so SQLite's transactional DDL makes a file and its
bookkeeping row commit together. BEGIN IMMEDIATE takes the write lock before the file
runs; re-reading the bookkeeping table inside it means two runners never apply a file
twice. lock_timeout and statement_timeout have no SQLite equivalent; the busy timeout
(--wait) bounds how long a runner waits for another writer.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime

from plainsail.errors import MigrationError
from plainsail.migrations.dburl import DatabaseURL
from plainsail.migrations.files import MigrationFile
from plainsail.migrations.ledger import TABLE, AppliedRow
from plainsail.migrations.sqlsplit import Statement


class SqliteDatabase:
    def __init__(self, url: DatabaseURL, *, busy_timeout: float) -> None:
        assert url.path is not None
        self.url = url
        path = url.path
        if not path.parent.exists():
            raise MigrationError(f"cannot open SQLite database {path}: folder {path.parent} "
                                 "does not exist")
        try:
            self.conn = sqlite3.connect(str(path), isolation_level=None,
                                        timeout=busy_timeout)
        except sqlite3.Error as exc:
            raise MigrationError(f"cannot open SQLite database {path}: {exc}") from exc

    def read_applied(self) -> list[AppliedRow] | None:
        try:
            if not self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
            ).fetchone():
                return None
            rows = self.conn.execute(
                "SELECT version, name, checksum, applied_at, execution_ms, applied_by "
                f"FROM {TABLE} ORDER BY name").fetchall()
        except sqlite3.Error as exc:
            raise MigrationError(f"cannot read {TABLE}: {exc}") from exc
        return [AppliedRow(str(v), n, c, a, float(ms), by) for v, n, c, a, ms, by in rows]

    def prepare(self) -> None:
        try:
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                " version TEXT PRIMARY KEY,"
                " name TEXT NOT NULL,"
                " checksum TEXT NOT NULL,"
                " applied_at TEXT NOT NULL,"
                " execution_ms INTEGER NOT NULL,"
                " applied_by TEXT NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise MigrationError(f"cannot create the bookkeeping table {TABLE}: {exc}") from exc

    def acquire_lock(self, wait: float, on_wait: Callable[[str], None]) -> None:
        """Nothing to take: each file's BEGIN IMMEDIATE serializes writers."""

    def release_lock(self) -> None:
        pass

    def _record(self, f: MigrationFile, ms: float, applied_by: str,
                unless_there: bool = False) -> bool:
        """Insert the row; with `unless_there`, False when another runner's row for the
        version is already there."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        cur = self.conn.execute(
            f"INSERT INTO {TABLE} (version, name, checksum, applied_at, execution_ms, "
            "applied_by) VALUES (?, ?, ?, ?, ?, ?)"
            + (" ON CONFLICT (version) DO NOTHING" if unless_there else ""),
            (f.version, f.name, f.checksum, now, int(ms), applied_by),
        )
        return cur.rowcount == 1

    def apply(self, f: MigrationFile, applied_by: str) -> float | None:
        stmts = f.statements
        current: Statement | None = None
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise MigrationError(
                f"{f.name}: cannot start a write transaction on {self.url.path}: {exc}; "
                "another process may hold it, retry or raise --wait") from exc
        try:
            if self.conn.execute(f"SELECT 1 FROM {TABLE} WHERE version = ?",
                                 (f.version,)).fetchone():
                self.conn.execute("ROLLBACK")
                return None
            started = time.perf_counter()
            for current in stmts:
                self.conn.execute(current.text)
            current = None
            ms = (time.perf_counter() - started) * 1000
            self._record(f, ms, applied_by)
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            where = (f"statement {current.number} of {len(stmts)} (line {current.line})"
                     if current else f"recording it in {TABLE}")
            raise MigrationError(
                f"{f.name}: {where} failed: {exc}. The whole file was rolled back: nothing "
                "from it is applied. Fix it and run plainsail migrate again") from exc
        return ms

    def apply_no_transaction(self, f: MigrationFile, applied_by: str) -> float | None:
        """None when another runner applied it (SQLite has no lock across the statement:
        the check before and the conflict-free record after keep each file recorded once)."""
        (stmt,) = f.statements
        if self._recorded(f):
            return None
        started = time.perf_counter()
        try:
            self.conn.execute(stmt.text)
        except sqlite3.Error as exc:
            raise MigrationError(
                f"{f.name}: statement 1 (line {stmt.line}) failed: {exc}; it was not "
                "recorded. Fix it and run plainsail migrate again") from exc
        ms = (time.perf_counter() - started) * 1000
        try:
            if not self._record(f, ms, applied_by, unless_there=True):
                return None
        except sqlite3.Error as exc:
            raise MigrationError(f"{f.name} ran but recording it failed: {exc}") from exc
        return ms

    def _recorded(self, f: MigrationFile) -> bool:
        try:
            return self.conn.execute(f"SELECT 1 FROM {TABLE} WHERE version = ?",
                                     (f.version,)).fetchone() is not None
        except sqlite3.Error as exc:
            raise MigrationError(f"cannot read {TABLE}: {exc}") from exc

    def record_baseline(self, files: list[MigrationFile], applied_by: str) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for f in files:
                self._record(f, 0, applied_by)
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise MigrationError(f"cannot record the baseline in {TABLE}: {exc}; nothing "
                                 "was recorded") from exc

    def invalid_indexes(self) -> list[str]:
        return []  # SQLite builds indexes in the file's transaction: none is left half-built

    def close(self) -> None:
        self.conn.close()
