"""`plainsail migrate [up|status|baseline]`: apply pending SQL migrations, list them, or
record those another tool already applied.

Runs inside application containers with no plainsail.yml: everything comes from flags and
the environment (DATABASE_URL, PLAINSAIL_MIGRATIONS, PLAINSAIL_MIGRATIONS_LAYOUT,
PLAINSAIL_MIGRATIONS_SCHEMA). Imports
only the standard library, PyYAML-free plainsail modules, and psycopg when the database is
PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from plainsail.config.durations import format_duration, parse_duration
from plainsail.errors import MigrationError, PlainsailError, UsageError
from plainsail.migrations import layouts
from plainsail.migrations.dburl import parse_database_url
from plainsail.migrations.ledger import DEFAULT_SCHEMA
from plainsail.migrations.runner import Options, Result, baseline, migrate, status
from plainsail.output import print_json, say, warn
from plainsail.secret import scrub

DEFAULT_LOCK_TIMEOUT = 5.0
DEFAULT_STATEMENT_TIMEOUT = 300.0
DEFAULT_WAIT = 300.0


def _duration(flag: str, value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc


SCHEMA_ENV = "PLAINSAIL_MIGRATIONS_SCHEMA"


def ledger_schema(flag: str | None) -> str:
    """--schema, else $PLAINSAIL_MIGRATIONS_SCHEMA (the deploy passes migrate.schema so),
    else public."""
    for value, where in ((flag, "--schema"), (os.environ.get(SCHEMA_ENV), f"${SCHEMA_ENV}")):
        if value is None or value == "":
            continue
        if len(value.encode()) > 63 or not value.isprintable():
            raise UsageError(f"{where}: {value!r} is not a PostgreSQL schema name (at most 63 "
                             "bytes, printable characters)")
        return value
    return DEFAULT_SCHEMA


def options_from_args(args: argparse.Namespace) -> Options:
    url = args.database_url or os.environ.get("DATABASE_URL", "")
    folder = args.dir or os.environ.get("PLAINSAIL_MIGRATIONS") or "migrations"
    return Options(
        folder=Path(folder),
        database=parse_database_url(url),
        lock_timeout=_duration("--lock-timeout", args.lock_timeout, DEFAULT_LOCK_TIMEOUT),
        statement_timeout=_duration("--statement-timeout", args.statement_timeout,
                                    DEFAULT_STATEMENT_TIMEOUT),
        wait=_duration("--wait", args.wait, DEFAULT_WAIT),
        allow_non_transactional_ddl=args.allow_non_transactional_ddl,
        layout=layouts.choose(args.layout),
        schema=ledger_schema(args.schema),
    )


_EMPTY: dict[str, dict[str, object]] = {
    "up": {"applied": [], "applied_by_another_runner": [], "previously_applied": 0},
    "status": {"applied": [], "pending": [], "problems": []},
    "baseline": {"baseline": []},
}


def run(args: argparse.Namespace) -> int:
    """With --json stdout carries one JSON document whatever happens (`ok`, `error`)."""
    try:
        opts = options_from_args(args)
        if args.action == "status":
            return _status(opts, args.json)
        if args.action == "baseline":
            return _baseline(opts, args)
        if args.to:
            raise UsageError("--to goes with baseline: plainsail migrate baseline --to VERSION")
    except PlainsailError as exc:
        if args.json:
            print_json({"database": _shown_url(args), **_EMPTY[args.action], "ok": False,
                        "error": scrub(str(exc))})
        raise
    return _up(opts, args)


def _up(opts: Options, args: argparse.Namespace) -> int:
    quiet = args.json
    result = Result(database=str(opts.database))
    try:
        migrate(opts, say=(lambda m: None) if quiet else say, warn=warn, result=result)
    except MigrationError as exc:
        if args.json:
            print_json({**_result_json(result), "ok": False, "error": scrub(str(exc))})
        raise
    if args.json:
        print_json({**_result_json(result), "ok": True, "error": None})
    elif result.applied:
        total = sum(a.execution_ms for a in result.applied) / 1000
        say(f"{len(result.applied)} migration(s) applied to {result.database} "
            f"in {format_duration(total)}")
    else:
        say(f"{result.database} is up to date ({result.already} migration(s) applied)")
    return 0


def _baseline(opts: Options, args: argparse.Namespace) -> int:
    if not args.to:
        raise UsageError("migrate baseline needs --to VERSION: the last migration the "
                         "database already has")
    recorded = baseline(opts, args.to, say=(lambda m: None) if args.json else say, warn=warn)
    if args.json:
        print_json({"database": str(opts.database),
                    "baseline": [{"version": f.version, "name": f.name} for f in recorded],
                    "ok": True, "error": None})
    else:
        say(f"recorded {len(recorded)} migration(s) up to {recorded[-1].name} as applied to "
            f"{opts.database} (nothing ran); plainsail migrate now applies only later ones")
    return 0


def _result_json(result: Result) -> dict[str, object]:
    return {
        "database": result.database,
        "applied": [{"name": a.name, "execution_ms": round(a.execution_ms, 1),
                     "no_transaction": a.no_transaction} for a in result.applied],
        "applied_by_another_runner": result.skipped,
        "previously_applied": result.already,
    }


def _shown_url(args: argparse.Namespace) -> str | None:
    try:
        return str(parse_database_url(args.database_url or os.environ.get("DATABASE_URL", "")))
    except PlainsailError:
        return None


def _status(opts: Options, as_json: bool) -> int:
    p = status(opts, warn)
    if as_json:
        print_json({
            "database": str(opts.database),
            "ok": not p.problems,
            "error": None,
            "applied": [vars(r) for r in p.applied],
            "pending": [f.name for f in p.pending],
            "problems": p.problems,
        })
    else:
        say(f"database: {opts.database}")
        for r in p.applied:
            say(f"  applied  {r.name}  {r.applied_at}  {r.execution_ms:.0f}ms  {r.applied_by}")
        for f in p.pending:
            extra = "  (no-transaction)" if f.no_transaction else ""
            say(f"  pending  {f.name}{extra}")
        say(f"{len(p.applied)} applied, {len(p.pending)} pending")
        for problem in p.problems:
            say(f"problem: {problem}")
    return 1 if p.problems else 0
