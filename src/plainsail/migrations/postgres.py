"""PostgreSQL for the migration runner, through psycopg 3 (3.1 or later).

Every file runs between an explicit BEGIN and COMMIT on an autocommit connection, so
DDL and the bookkeeping row commit together or not at all. Runners serialize on a
session-level advisory lock; lock_timeout and statement_timeout are set per file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

try:
    import psycopg
    from psycopg import errors as pgerrors
except ImportError as exc:  # pragma: no cover - depends on the image
    from plainsail.errors import MigrationError

    raise MigrationError(
        "DATABASE_URL is PostgreSQL but psycopg is not installed; install python3-psycopg "
        "(Debian) or `pip install 'plainsail[postgres]'`"
    ) from exc

from plainsail.errors import MigrationError
from plainsail.migrations.dburl import DatabaseURL
from plainsail.migrations.files import NO_TRANSACTION_MARKER, MigrationFile
from plainsail.migrations.ledger import DEFAULT_SCHEMA, TABLE, AppliedRow
from plainsail.migrations.sqlsplit import Statement
from plainsail.secret import redact

# The pg_advisory_lock key every plainsail release uses, so old and new runners exclude
# each other. Advisory locks are per database.
LOCK_KEY = 0x2F6A_3C1D_5B7E_4A09
_INDEX_NAME = re.compile(
    r"\bINDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r'((?:"[^"]+"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"[^"]+"|[A-Za-z_][\w$]*))?)\s+ON\b',
    re.I,
)


class InvalidIndexError(MigrationError):
    """A CREATE INDEX CONCURRENTLY (or REINDEX) left an INVALID index behind."""

    def __init__(self, message: str, indexes: list[str]) -> None:
        super().__init__(message)
        self.indexes = indexes


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))


def _describe(exc: Exception, password: str | None = None) -> str:
    """One line from a driver error; the password never appears, even if libpq quotes
    part of the connection string."""
    text = _first_line(exc)
    return redact(text, [password]) if password else text


def _first_line(exc: Exception) -> str:
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        text = diag.message_primary or str(exc).strip().splitlines()[0]
        if diag.message_detail:
            text += f" ({diag.message_detail})"
        if diag.message_hint:
            text += f" HINT: {diag.message_hint}"
        if exc.sqlstate:
            text += f" [SQLSTATE {exc.sqlstate}]"
        return text
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresDatabase:
    """`schema` holds the ledger, whatever the connection's (or a file's) search_path."""

    def __init__(self, url: DatabaseURL, *, lock_timeout: float,
                 statement_timeout: float, schema: str = DEFAULT_SCHEMA,
                 note: Callable[[str], None] = lambda m: None) -> None:
        self.url = url
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.schema = schema
        self.table = f"{quote_ident(schema)}.{TABLE}"  # in SQL
        self.ledger = f"{schema}.{TABLE}"  # in messages
        self._note = note
        self._locked = False
        try:
            self.conn: psycopg.Connection[Any] = psycopg.connect(
                url.url, autocommit=True, application_name="plainsail migrate",
                connect_timeout=10,
            )
        except psycopg.Error as exc:
            raise MigrationError(
                f"cannot connect to {url}: {_describe(exc, url.password)}; check "
                "DATABASE_URL and that the database accepts connections from here"
            ) from exc

    # -- bookkeeping ------------------------------------------------------------------
    def _ledger_schema(self) -> str | None:
        """The schema whose ledger counts: the configured one if it has one, else the one
        other schema where an earlier version created it (through the search_path), None
        when there is none. Ledgers in several other schemas are refused."""
        rows = self.conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND c.relkind IN ('r', 'p') ORDER BY 1", (TABLE,)
        ).fetchall()
        found = [r[0] for r in rows]
        if self.schema in found:
            return self.schema
        if len(found) > 1:
            raise MigrationError(
                f"{self.url} has no {self.ledger} but a {TABLE} in each of the schemas "
                f"{', '.join(found)}; tell which one is this database's history with "
                "--schema (migrate.schema in plainsail.yml)")
        return found[0] if found else None

    def read_applied(self) -> list[AppliedRow] | None:
        try:
            schema = self._ledger_schema()
            if schema is None:
                return None
            if schema != self.schema:
                self._note(f"the ledger is {schema}.{TABLE} (created there by an "
                           f"earlier plainsail through the search_path); plainsail migrate "
                           f"moves it to {self.ledger}")
            cur = self.conn.execute(
                f"SELECT version, name, checksum, applied_at, execution_ms, applied_by "
                f"FROM {quote_ident(schema)}.{TABLE} ORDER BY name"
            )
            return [AppliedRow(v, n, c, a.isoformat(timespec="seconds"), float(ms), by)
                    for v, n, c, a, ms, by in cur.fetchall()]
        except psycopg.Error as exc:
            raise MigrationError(f"cannot read {self.ledger}: {_describe(exc)}") from exc

    def prepare(self) -> None:
        """Create the ledger in its schema, or adopt one an earlier version created in
        another schema by moving it there (its rows keep every file from running again)."""
        try:
            found = self._ledger_schema()
            if not self.conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                     (self.schema,)).fetchone():
                self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
            if found is not None and found != self.schema:
                self.conn.execute(f"ALTER TABLE {quote_ident(found)}.{TABLE} "
                                  f"SET SCHEMA {quote_ident(self.schema)}")
                self._note(f"moved the ledger {found}.{TABLE} (created there by "
                           f"an earlier plainsail through the search_path) to {self.ledger}")
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " version text PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now(),"
                " execution_ms integer NOT NULL,"
                " applied_by text NOT NULL)"
            )
        except psycopg.Error as exc:
            raise MigrationError(
                f"cannot create the bookkeeping table {self.ledger}: {_describe(exc)}; the "
                "database user needs CREATE on its schema (or set migrate.schema to one "
                "where it has)"
            ) from exc

    def _record(self, f: MigrationFile, ms: int, applied_by: str) -> None:
        self.conn.execute(
            f"INSERT INTO {self.table} (version, name, checksum, execution_ms, applied_by) "
            "VALUES (%s, %s, %s, %s, %s)",
            (f.version, f.name, f.checksum, ms, applied_by),
        )

    def record_baseline(self, files: list[MigrationFile], applied_by: str) -> None:
        try:
            with self.conn.transaction():
                for f in files:
                    self._record(f, 0, applied_by)
        except psycopg.Error as exc:
            raise MigrationError(f"cannot record the baseline in {self.ledger}: {_describe(exc)}; "
                                 "nothing was recorded") from exc

    # -- serializing runners ------------------------------------------------------------
    def acquire_lock(self, wait: float, on_wait: Callable[[str], None]) -> None:
        """Take the session-level advisory lock, waiting up to `wait` seconds for another
        runner. The wait polls with pg_try_advisory_lock and sleeps between tries on an
        idle connection: a session blocked in pg_advisory_lock holds a snapshot, which the
        other runner's CREATE INDEX CONCURRENTLY waits for, and PostgreSQL then kills one
        of the two as a deadlock."""
        try:
            if self._try_lock():
                return
            on_wait(f"waiting for another migration runner ({self._lock_holder()}) to "
                    f"finish; giving up after {wait:g}s")
            deadline = time.monotonic() + wait
            pause = 0.02
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MigrationError(
                        f"another migration runner ({self._lock_holder()}) still held the "
                        f"migration lock after {wait:g}s; wait for it, or if it is stuck "
                        "end it with SELECT pg_terminate_backend(<pid>), then run "
                        "plainsail migrate again")
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.5)
                if self._try_lock():
                    return
        except psycopg.OperationalError as exc:
            raise MigrationError(
                f"lost the connection to {self.url} while waiting for the migration lock: "
                f"{_describe(exc, self.url.password)}; nothing was applied by this run. "
                "Run plainsail migrate again when the database is back") from exc
        except psycopg.Error as exc:
            raise MigrationError(f"cannot take the migration lock: {_describe(exc)}") from exc

    def _try_lock(self) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        self._locked = bool(row and row[0])
        return self._locked

    def _lock_holder(self) -> str:
        """Who holds the lock, as far as this role may see: another role's session shows
        only its pid and role (its address, application and start are NULL)."""
        row = self.conn.execute(
            "SELECT l.pid, a.usename, a.application_name, a.client_addr::text, "
            "to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS') "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s LIMIT 1",
            (LOCK_KEY,),
        ).fetchone()
        if not row:
            return "unknown"
        pid, role, app, addr, started = row
        parts = [f"pid {pid}"]
        if role:
            parts.append(f"role {role}")
        if app:
            parts.append(str(app))
        if addr:
            parts.append(f"from {addr}")
        if started:
            parts.append(f"connected {started}")
        return ", ".join(parts)

    def release_lock(self) -> None:
        if self._locked and not self.conn.closed:
            try:
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            except psycopg.Error:
                pass  # the lock goes with the session anyway
            self._locked = False

    # -- applying ------------------------------------------------------------------------
    def _timeouts(self) -> str:
        """Every file starts from the session's defaults (as in its own psql session: a
        search_path or role a file set never leaks into the next), with the timeouts."""
        return (f"RESET ALL; SET lock_timeout = {_ms(self.lock_timeout)}; "
                f"SET statement_timeout = {_ms(self.statement_timeout)}")

    def apply(self, f: MigrationFile, applied_by: str) -> float | None:
        cur = self.conn.cursor()
        stmts = f.statements
        started = time.perf_counter()
        current: Statement | None = None
        try:
            cur.execute("BEGIN; " + self._timeouts())
            for current in stmts:
                cur.execute(current.text)
            current = None
            elapsed = time.perf_counter() - started
            self._record(f, _ms(elapsed), applied_by)
            cur.execute("COMMIT")
        except psycopg.Error as exc:
            self._rollback()
            raise MigrationError(self._failure(f, current, len(stmts), exc)) from exc
        return elapsed * 1000

    def _rollback(self) -> None:
        try:
            if not self.conn.closed:
                self.conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # the server ends the transaction when the connection goes

    def _failure(self, f: MigrationFile, s: Statement | None, total: int,
                 exc: psycopg.Error, rolled_back: bool = True) -> str:
        where = (f"statement {s.number} of {total} (line {s.line})" if s
                 else "recording it in " + self.ledger)
        msg = f"{f.name}: {where} failed: {_describe(exc)}"
        if isinstance(exc, pgerrors.LockNotAvailable):
            msg += (f"; it waited longer than lock_timeout ({self.lock_timeout:g}s) for a lock "
                    "another session holds (the running app or a long query); retry when it "
                    "is quieter or raise --lock-timeout")
        elif isinstance(exc, pgerrors.InvalidTransactionTermination):
            msg += ("; the statement COMMITs or ROLLBACKs inside (a DO block or procedure "
                    "that works in batches), which works only outside a transaction: "
                    + (f"make '{NO_TRANSACTION_MARKER}' this file's first line" if total == 1
                       else "move it alone to a new file whose first line is "
                       f"'{NO_TRANSACTION_MARKER}'"))
        elif isinstance(exc, pgerrors.QueryCanceled):
            msg += (f"; it ran longer than statement_timeout ({self.statement_timeout:g}s); "
                    "raise --statement-timeout or make the change in smaller steps")
        if rolled_back:
            msg += ". The whole file was rolled back: nothing from it is applied. Fix it " \
                   "and run plainsail migrate again"
        return msg

    def apply_no_transaction(self, f: MigrationFile, applied_by: str) -> float:
        (stmt,) = f.statements
        named = self._index_name(stmt)
        try:
            self.conn.execute(self._timeouts())
            before = self._invalid_indexes()
        except psycopg.Error as exc:
            raise MigrationError(f"{f.name}: cannot prepare to run it: {_describe(exc)}") \
                from exc
        try:
            started = time.perf_counter()
            self.conn.execute(stmt.text)
            elapsed = time.perf_counter() - started
        except psycopg.Error as exc:
            msg = self._failure(f, stmt, 1, exc, rolled_back=False)
            left = self._left_invalid(before, named)
            if left:
                raise InvalidIndexError(msg + ". " + self._drop_advice(left), left) from exc
            raise MigrationError(msg + "; it ran outside a transaction (no-transaction file) "
                                 "and was not recorded. Fix it and run plainsail migrate "
                                 "again") from exc
        left = self._left_invalid(before, named)
        if left:
            raise InvalidIndexError(
                f"{f.name}: the statement finished but {', '.join(left)} is INVALID (an "
                f"earlier failed attempt left it and IF NOT EXISTS kept it). "
                + self._drop_advice(left), left)
        try:
            self._record(f, _ms(elapsed), applied_by)
        except psycopg.Error as exc:
            raise MigrationError(
                f"{f.name} ran but recording it in {self.ledger} failed: {_describe(exc)}; insert "
                "its row by hand or the next run will try it again"
            ) from exc
        return elapsed * 1000

    @staticmethod
    def _drop_advice(indexes: list[str]) -> str:
        drops = "; ".join(f"DROP INDEX CONCURRENTLY IF EXISTS {i}" for i in indexes)
        return (f"It left the INVALID index {', '.join(indexes)} behind, which slows every "
                f"write and serves no reads. Drop it before retrying: {drops}; then fix the "
                "cause and run plainsail migrate again")

    @staticmethod
    def _index_name(stmt: Statement) -> str | None:
        m = _INDEX_NAME.search(stmt.text)
        return re.sub(r"\s+", "", m.group(1)) if m else None

    def invalid_indexes(self) -> list[str]:
        """INVALID indexes (left by a failed CREATE INDEX CONCURRENTLY or REINDEX), each
        schema-qualified."""
        try:
            return sorted(self._invalid_indexes())
        except psycopg.Error as exc:
            raise MigrationError(f"cannot list invalid indexes: {_describe(exc)}") from exc

    @staticmethod
    def drop_advice(indexes: list[str]) -> str:
        return PostgresDatabase._drop_advice(indexes)

    def _invalid_indexes(self) -> set[str]:
        rows = self.conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid"
        ).fetchall()
        return {r[0] for r in rows}

    def _left_invalid(self, before: set[str], named: str | None) -> list[str]:
        try:
            if self.conn.info.transaction_status != 0:  # pragma: no cover
                self.conn.execute("ROLLBACK")
            now = self._invalid_indexes()
            left = now - before
            if named:
                row = self.conn.execute(
                    "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE NOT i.indisvalid AND i.indexrelid = to_regclass(%s)",
                    (named,),
                ).fetchone()
                if row:
                    left.add(row[0])
            return sorted(left)
        except psycopg.Error:
            return []

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()
