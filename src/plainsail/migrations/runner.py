"""`plainsail migrate`: apply pending SQL files, each all-or-nothing, recorded as it commits.

Standard library only, plus psycopg when the database is PostgreSQL: this module runs
inside application containers built from Debian's python3 packages.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from plainsail import __version__
from plainsail.errors import MigrationError
from plainsail.migrations import dburl
from plainsail.migrations.dburl import DatabaseURL
from plainsail.migrations.files import MigrationFile, check_file
from plainsail.migrations.layouts import discover
from plainsail.migrations.ledger import DEFAULT_SCHEMA, AppliedRow, Ledger, compare

MYSQL_REFUSAL = (
    "MySQL and MariaDB commit every DDL statement on their own, so a file that fails "
    "halfway stays half-applied and no transaction can undo it"
)


@dataclass(frozen=True)
class Options:
    folder: Path
    database: DatabaseURL
    lock_timeout: float = 5.0
    statement_timeout: float = 300.0
    wait: float = 300.0
    allow_non_transactional_ddl: bool = False
    layout: str | None = None  # None: detect it from the folder
    schema: str = DEFAULT_SCHEMA  # PostgreSQL: where the ledger is, whatever the search_path


@dataclass(frozen=True)
class AppliedNow:
    name: str
    execution_ms: float
    no_transaction: bool = False


@dataclass
class Result:
    database: str
    applied: list[AppliedNow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # applied meanwhile by another runner
    already: int = 0


class Database(Protocol):
    """What the runner needs from a database; one implementation per kind."""

    def read_applied(self) -> list[AppliedRow] | None: ...  # None: no bookkeeping table
    def prepare(self) -> None: ...
    def acquire_lock(self, wait: float, on_wait: Callable[[str], None]) -> None: ...
    def release_lock(self) -> None: ...
    def apply(self, f: MigrationFile, applied_by: str) -> float | None: ...
    def apply_no_transaction(self, f: MigrationFile, applied_by: str) -> float | None: ...
    def invalid_indexes(self) -> list[str]: ...
    def record_baseline(self, files: list[MigrationFile], applied_by: str) -> None: ...
    def close(self) -> None: ...


def applied_by() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()} plainsail {__version__}"


def open_database(opts: Options, warn: Callable[[str], None]) -> Database:
    url = opts.database
    if url.kind == dburl.MYSQL:
        if not opts.allow_non_transactional_ddl:
            raise MigrationError(
                f"refusing to migrate {url}: {MYSQL_REFUSAL}. Pass "
                "--allow-non-transactional-ddl to accept that risk"
            )
        warn(f"{MYSQL_REFUSAL}; --allow-non-transactional-ddl accepts that on this run")
        raise MigrationError(
            "plainsail migrate has no MySQL/MariaDB driver yet; run your migrations with "
            "your framework's tool (migrate.command in plainsail.yml)"
        )
    if url.kind == dburl.SQLITE:
        from plainsail.migrations.sqlite import SqliteDatabase

        return SqliteDatabase(url, busy_timeout=opts.wait)
    from plainsail.migrations.postgres import PostgresDatabase

    return PostgresDatabase(url, lock_timeout=opts.lock_timeout,
                            statement_timeout=opts.statement_timeout, schema=opts.schema,
                            note=warn)


def _load(opts: Options) -> list[MigrationFile]:
    return discover(opts.folder, opts.layout)


def _unrunnable(pending: list[MigrationFile]) -> list[str]:
    """Why pending files cannot be applied all-or-nothing. Only pending ones: a file
    already applied (by plainsail, or by another tool before a baseline) never runs
    again, so a history keeps its old files as they are."""
    problems = []
    for f in pending:
        try:
            check_file(f)
        except MigrationError as exc:
            problems.append(str(exc))
    return problems


def _refuse(problems: list[str]) -> MigrationError:
    if len(problems) == 1:
        return MigrationError(f"refusing to migrate: {problems[0]}")
    lines = "\n".join(f"  - {p}" for p in problems)
    return MigrationError(f"refusing to migrate, {len(problems)} problems:\n{lines}")


def status(opts: Options, warn: Callable[[str], None]) -> Ledger:
    """Applied and pending files and any problems; changes nothing."""
    files = _load(opts)
    db = open_database(opts, warn)
    try:
        rows = db.read_applied() or []
        invalid = db.invalid_indexes()
    finally:
        db.close()
    p = compare(files, rows)
    p.problems.extend(_unrunnable(p.pending))
    if invalid:
        drops = "; ".join(f"DROP INDEX CONCURRENTLY IF EXISTS {i}" for i in invalid)
        p.problems.append(
            f"INVALID index {', '.join(invalid)} (left by a failed CREATE INDEX CONCURRENTLY "
            f"or REINDEX) slows every write and serves no reads; drop it: {drops}; then "
            "run plainsail migrate again")
    return p


def migrate(
    opts: Options,
    say: Callable[[str], None],
    warn: Callable[[str], None],
    result: Result | None = None,
) -> Result:
    """Apply every pending file in order; stop at the first failure (already rolled back).
    Pass `result` to see what was applied before a failure."""
    if result is None:
        result = Result(database=str(opts.database))
    files = _load(opts)
    db = open_database(opts, warn)
    try:
        db.acquire_lock(opts.wait, say)
        try:
            db.prepare()
            p = compare(files, db.read_applied() or [])
            problems = p.problems + _unrunnable(p.pending)
            if problems:
                raise _refuse(problems)
            result.already = len(p.applied)
            by = applied_by()
            for f in p.pending:
                if f.no_transaction:
                    ms: float | None = db.apply_no_transaction(f, by)
                else:
                    ms = db.apply(f, by)
                if ms is None:
                    result.skipped.append(f.name)
                    say(f"  {f.name}: already applied by another runner")
                    continue
                result.applied.append(AppliedNow(f.name, ms, f.no_transaction))
                say(f"  applied {f.name} ({ms:.0f}ms)")
        finally:
            db.release_lock()
    finally:
        db.close()
    return result


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit()).lstrip("0") or "0"


def _find_version(files: list[MigrationFile], wanted: str) -> list[int]:
    """`--to` names a migration by its version or name, or by the digits the migrating
    tool kept (Diesel records 2019-02-26-002946 as 20190226002946)."""
    exact = [i for i, f in enumerate(files) if wanted in (f.version, f.name)]
    if exact or not any(ch.isdigit() for ch in wanted):
        return exact
    return [i for i, f in enumerate(files) if _digits(f.version) == _digits(wanted)]


def baseline(opts: Options, to: str, say: Callable[[str], None],
             warn: Callable[[str], None]) -> list[MigrationFile]:
    """Record every migration up to and including version `to` as applied, running
    nothing: for a database that another tool (or a dump) already brought that far."""
    files = _load(opts)
    matches = _find_version(files, to)
    if len(matches) != 1:
        near = ", ".join(f.version for f in files[-3:]) or "none"
        what = "no migration" if not matches else "more than one migration"
        raise MigrationError(
            f"--to {to}: {what} in {opts.folder} has that version; name one of the "
            f"versions in the folder (the last ones: {near})")
    chosen = files[: matches[0] + 1]
    db = open_database(opts, warn)
    try:
        db.acquire_lock(opts.wait, say)
        try:
            db.prepare()
            rows = db.read_applied() or []
            if rows:
                raise MigrationError(
                    f"{opts.database} already records {len(rows)} applied migration(s) in "
                    "plainsail_migrations; a baseline is only for a database plainsail has "
                    "never migrated (run plainsail migrate status to see where it stands)")
            db.record_baseline(chosen, f"{applied_by()} baseline")
        finally:
            db.release_lock()
    finally:
        db.close()
    return chosen
