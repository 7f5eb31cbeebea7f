"""The ledger lives in a fixed schema (migrate.schema, --schema, default public), whatever
the connection's or a file's search_path; a ledger an earlier version created elsewhere is
adopted, never applied again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plainsail.errors import MigrationError
from plainsail.migrations.dburl import parse_database_url
from plainsail.migrations.runner import Options, status
from tests.migrate_helpers import run, write

pytestmark = pytest.mark.integration


def test_a_schema_created_first_in_the_search_path_does_not_hide_the_ledger(
        tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    conn = pg_connect()
    user = conn.execute("SELECT current_user").fetchone()[0]
    assert conn.execute("SHOW search_path").fetchone()[0].startswith('"$user"')
    mig = tmp_path / "migrations"
    # The database user's own schema comes first in the default search_path.
    write(mig, "0001_schema.sql", f'CREATE SCHEMA "{user}";\nCREATE TABLE public.log (x int);\n')
    write(mig, "0002_insert.sql", "INSERT INTO public.log VALUES (2);\n")
    assert len(run(mig, pg_url).applied) == 2
    again = run(mig, pg_url)
    assert again.applied == [] and again.already == 2
    assert conn.execute("SELECT count(*) FROM public.log").fetchone() == (1,)
    assert conn.execute("SELECT to_regclass(%s)", (f'"{user}".plainsail_migrations',)
                        ).fetchone() == (None,)


def test_a_file_that_empties_the_search_path_is_recorded_and_does_not_leak(
        tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    # What pg_dump writes at the top of its output.
    write(mig, "0001_dump.sql", "SELECT pg_catalog.set_config('search_path', '', false);\n"
                                "CREATE TABLE public.a (x int);\n")
    write(mig, "0002_plain.sql", "CREATE TABLE b (x int);\n")
    assert [a.name for a in run(mig, pg_url).applied] == ["0001_dump.sql", "0002_plain.sql"]
    conn = pg_connect()
    assert conn.execute("SELECT name FROM public.plainsail_migrations ORDER BY 1").fetchall() \
        == [("0001_dump.sql",), ("0002_plain.sql",)]
    assert conn.execute("SELECT to_regclass('public.b') IS NOT NULL").fetchone() == (True,)


def test_a_ledger_in_another_schema_is_adopted_not_applied_again(
        tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    conn = pg_connect()
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE public.a (x int);\n")
    write(mig, "0002_b.sql", "INSERT INTO public.a VALUES (1);\n")
    # An earlier version created its ledger in the first schema of the search_path.
    conn.execute("CREATE SCHEMA app")
    run(mig, pg_url, schema="app")
    assert conn.execute("SELECT to_regclass('public.plainsail_migrations')").fetchone() \
        == (None,)
    write(mig, "0003_c.sql", "INSERT INTO public.a VALUES (3);\n")
    seen = status(Options(mig, parse_database_url(pg_url)), warn=print)
    assert [r.name for r in seen.applied] == ["0001_a.sql", "0002_b.sql"]
    assert [f.name for f in seen.pending] == ["0003_c.sql"] and not seen.problems
    result = run(mig, pg_url)
    assert [a.name for a in result.applied] == ["0003_c.sql"] and result.already == 2
    assert conn.execute("SELECT count(*) FROM public.plainsail_migrations").fetchone() == (3,)
    assert conn.execute("SELECT to_regclass('app.plainsail_migrations')").fetchone() == (None,)
    assert conn.execute("SELECT array_agg(x ORDER BY x) FROM public.a").fetchone() == ([1, 3],)


def test_ledgers_in_two_other_schemas_are_refused(tmp_path: Path, pg_url: str,
                                                  pg_connect: Any) -> None:
    conn = pg_connect()
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "SELECT 1;\n")
    for schema in ("one", "two"):
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.plainsail_migrations (version text, name text, "
                     "checksum text, applied_at timestamptz, execution_ms int, applied_by text)")
    with pytest.raises(MigrationError, match="in each of the schemas one, two; .*--schema"):
        run(mig, pg_url)
    assert conn.execute("SELECT to_regclass('public.plainsail_migrations')").fetchone() \
        == (None,)


def test_schema_flag_and_environment(tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    from tests.test_cli_migrate import plainsail

    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    r = plainsail("migrate", "--schema", "Ledger Schema", cwd=tmp_path, DATABASE_URL=pg_url)
    assert r.returncode == 0, r.stderr
    conn = pg_connect()
    assert conn.execute("SELECT count(*) FROM \"Ledger Schema\".plainsail_migrations"
                        ).fetchone() == (1,)
    r = plainsail("migrate", "status", cwd=tmp_path, DATABASE_URL=pg_url,
                  PLAINSAIL_MIGRATIONS_SCHEMA="Ledger Schema")
    assert r.returncode == 0 and "1 applied, 0 pending" in r.stdout, r.stderr
    r = plainsail("migrate", "--schema", "x" * 64, cwd=tmp_path, DATABASE_URL=pg_url)
    assert r.returncode == 2 and "--schema" in r.stderr
