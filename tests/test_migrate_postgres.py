"""The migration runner against a real PostgreSQL (one fresh database per test)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from plainsail.errors import MigrationError
from plainsail.migrations.dburl import parse_database_url
from plainsail.migrations.postgres import LOCK_KEY, InvalidIndexError
from plainsail.migrations.runner import Options, status
from tests.migrate_helpers import run, write

pytestmark = pytest.mark.integration

SRC = str(Path(__file__).resolve().parents[1] / "src")


def catalog(conn: Any) -> dict[str, Any]:
    """Everything a half-applied file could have changed: relations, columns, constraints,
    indexes, functions, and the rows of the test tables."""
    q = {
        "relations": "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
                     "ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1",
        "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default "
                   "FROM information_schema.columns WHERE table_schema = 'public' "
                   "ORDER BY 1, 2",
        "constraints": "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE connamespace = 'public'::regnamespace ORDER BY 1",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                   "ORDER BY 1",
        "functions": "SELECT proname FROM pg_proc WHERE pronamespace = "
                     "'public'::regnamespace ORDER BY 1",
        "items": "SELECT * FROM items ORDER BY id",
        "bookkeeping": "SELECT version, name, checksum FROM plainsail_migrations ORDER BY 1",
    }
    return {k: conn.execute(sql).fetchall() for k, sql in q.items()}


def test_applies_in_order_and_records_each_file(tmp_path: Path, pg_url: str,
                                                pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0002_b.sql", "ALTER TABLE a ADD COLUMN y int;\n")
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\n")
    result = run(mig, pg_url)
    assert [a.name for a in result.applied] == ["0001_a.sql", "0002_b.sql"]
    conn = pg_connect()
    rows = conn.execute("SELECT version, name, length(checksum), execution_ms >= 0, "
                        "applied_by LIKE '%plainsail%' FROM plainsail_migrations "
                        "ORDER BY 1").fetchall()
    assert rows == [("0001", "0001_a.sql", 64, True, True),
                    ("0002", "0002_b.sql", 64, True, True)]
    again = run(mig, pg_url)
    assert again.applied == [] and again.already == 2


def test_failure_at_statement_5_of_10_changes_nothing(tmp_path: Path, pg_url: str,
                                                      pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_items.sql",
          "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\n"
          "INSERT INTO items VALUES (1, 'one'), (2, 'two');\n")
    run(mig, pg_url)
    conn = pg_connect()
    before = catalog(conn)
    write(mig, "0002_ten.sql", "\n".join([
        "CREATE TABLE extra (id int);",
        "ALTER TABLE items ADD COLUMN price numeric DEFAULT 0;",
        "INSERT INTO items (id, name) VALUES (3, 'three');",
        "CREATE INDEX items_name ON items (name);",
        "-- the fifth statement fails",
        "UPDATE items SET name = NULL WHERE id = 1;",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        "ALTER TABLE items ADD CONSTRAINT name_len CHECK (length(name) < 100);",
        "DELETE FROM items WHERE id = 2;",
        "CREATE VIEW v AS SELECT * FROM items;",
        "DROP TABLE extra;",
    ]) + "\n")
    with pytest.raises(MigrationError) as err:
        run(mig, pg_url)
    msg = str(err.value)
    assert "0002_ten.sql: statement 5 of 10 (line 6) failed" in msg
    assert "null value" in msg and "rolled back" in msg
    assert catalog(conn) == before


def test_two_runners_started_together_apply_each_file_once(tmp_path: Path, pg_url: str,
                                                           pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0000_log.sql", "CREATE TABLE applied_log (name text);\n")
    for i in range(1, 13):
        write(mig, f"{i:04d}_step.sql",
              f"INSERT INTO applied_log VALUES ('{i}');\nSELECT pg_sleep(0.02);\n")
    env = {**os.environ, "DATABASE_URL": pg_url, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "plainsail", "migrate", "--dir", str(mig)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    conn = pg_connect()
    counts = conn.execute("SELECT name, count(*) FROM applied_log GROUP BY name").fetchall()
    assert len(counts) == 12 and all(n == 1 for _, n in counts)
    assert conn.execute("SELECT count(*) FROM plainsail_migrations").fetchone() == (13,)


def test_waiting_for_the_lock_is_bounded(tmp_path: Path, pg_url: str,
                                         pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    holder = pg_connect()
    holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    started = time.monotonic()
    with pytest.raises(MigrationError, match=r"another migration runner \(pid \d+"):
        run(mig, pg_url, wait=0.3)
    assert time.monotonic() - started < 5


def test_checksum_drift_is_refused(tmp_path: Path, pg_url: str) -> None:
    mig = tmp_path / "migrations"
    f = write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    run(mig, pg_url)
    f.write_text("CREATE TABLE a (x bigint);\n")
    write(mig, "0002_b.sql", "CREATE TABLE b (x int);\n")
    with pytest.raises(MigrationError, match="0001_a.sql changed after it was applied"):
        run(mig, pg_url)
    p = status(Options(mig, parse_database_url(pg_url)), warn=print)
    assert [x.name for x in p.pending] == ["0002_b.sql"] and len(p.problems) == 1


def test_deleted_file_is_refused(tmp_path: Path, pg_url: str) -> None:
    mig = tmp_path / "migrations"
    f = write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    run(mig, pg_url)
    f.unlink()
    with pytest.raises(MigrationError, match="0001_a.sql was applied .* no longer in"):
        run(mig, pg_url)


def test_out_of_order_file_is_refused(tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0002_b.sql", "CREATE TABLE b (x int);\n")
    run(mig, pg_url)
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    with pytest.raises(MigrationError, match="0001_a.sql is not applied but sorts before "
                                             "0002_b.sql"):
        run(mig, pg_url)
    assert pg_connect().execute("SELECT to_regclass('a')").fetchone() == (None,)


def test_no_transaction_file_works(tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    write(mig, "0002_idx.sql", "-- plainsail: no-transaction\n"
                               "CREATE INDEX CONCURRENTLY a_x ON a (x);\n")
    result = run(mig, pg_url)
    assert [a.no_transaction for a in result.applied] == [False, True]
    conn = pg_connect()
    assert conn.execute("SELECT i.indisvalid FROM pg_index i "
                        "WHERE i.indexrelid = 'a_x'::regclass").fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM plainsail_migrations").fetchone() == (2,)


@pytest.mark.parametrize("body, match", [
    ("-- plainsail: no-transaction\nCREATE TABLE c (x int);\n"
     "CREATE INDEX CONCURRENTLY a_x ON a (x);\n", "holds 2 statements"),
    ("-- plainsail: no-transaction\nCREATE TABLE c (x int);\n", "holds no such statement"),
    ("CREATE TABLE c (x int);\nCREATE INDEX CONCURRENTLY a_x ON a (x);\n",
     "statement 2 .* is CREATE INDEX CONCURRENTLY, which cannot run inside a transaction"),
])
def test_mixed_no_transaction_file_is_refused_before_anything_runs(
        tmp_path: Path, pg_url: str, pg_connect: Any, body: str, match: str) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    write(mig, "0002_mixed.sql", body)
    with pytest.raises(MigrationError, match=match):
        run(mig, pg_url)
    conn = pg_connect()
    assert conn.execute("SELECT to_regclass('a'), to_regclass('c')").fetchone() == (None, None)


def test_failed_concurrent_index_is_reported_with_drop_advice(
        tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1), (1);\n")
    idx = write(mig, "0002_idx.sql", "-- plainsail: no-transaction\n"
                                     "CREATE UNIQUE INDEX CONCURRENTLY a_x ON a (x);\n")
    with pytest.raises(InvalidIndexError) as err:
        run(mig, pg_url)
    assert err.value.indexes == ["public.a_x"]
    assert "INVALID index public.a_x" in str(err.value)
    assert "DROP INDEX CONCURRENTLY IF EXISTS public.a_x" in str(err.value)
    conn = pg_connect()
    assert conn.execute("SELECT count(*) FROM plainsail_migrations").fetchone() == (1,)
    # IF NOT EXISTS would keep the invalid index silently: that is caught too.
    idx.write_text("-- plainsail: no-transaction\n"
                   "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS a_x ON a (x);\n")
    conn.execute("DELETE FROM a WHERE ctid = (SELECT max(ctid) FROM a)")
    with pytest.raises(InvalidIndexError, match="statement finished but public.a_x is INVALID"):
        run(mig, pg_url)
    # Following the advice makes the retry succeed.
    conn.execute("DROP INDEX CONCURRENTLY IF EXISTS public.a_x")
    assert [a.name for a in run(mig, pg_url).applied] == ["0002_idx.sql"]


def test_lock_timeout_is_in_force(tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    run(mig, pg_url)
    write(mig, "0002_b.sql", "CREATE TABLE b (x int);\nALTER TABLE a ADD COLUMN y int;\n")
    holder = pg_connect()
    holder.execute("BEGIN")
    holder.execute("SELECT * FROM a")  # ACCESS SHARE, held until the transaction ends
    started = time.monotonic()
    with pytest.raises(MigrationError) as err:
        run(mig, pg_url, lock_timeout=0.2)
    assert time.monotonic() - started < 5
    msg = str(err.value)
    assert "0002_b.sql: statement 2 of 2 (line 2) failed: canceling statement due to lock " \
           "timeout" in msg
    assert "lock_timeout (0.2s)" in msg and "--lock-timeout" in msg
    holder.execute("ROLLBACK")
    assert pg_connect().execute("SELECT to_regclass('b')").fetchone() == (None,)


def test_statement_timeout_is_in_force(tmp_path: Path, pg_url: str) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_slow.sql", "SELECT pg_sleep(5);\n")
    with pytest.raises(MigrationError, match=r"statement_timeout \(0.2s\)"):
        run(mig, pg_url, statement_timeout=0.2)


def test_a_file_cannot_switch_timeouts_off_for_later_files(tmp_path: Path, pg_url: str) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "SET statement_timeout = 0;\n")
    write(mig, "0002_slow.sql", "SELECT pg_sleep(5);\n")
    with pytest.raises(MigrationError, match="0002_slow.sql: .*statement timeout"):
        run(mig, pg_url, statement_timeout=0.2)


def test_connection_error_hides_the_password(tmp_path: Path, pg_url: str) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "SELECT 1;\n")
    bad = pg_url.replace(":plainsail@", ":Wr0ng-s3cret@")
    with pytest.raises(MigrationError) as err:
        run(mig, bad)
    assert "Wr0ng-s3cret" not in str(err.value)
    assert ":***@" in str(err.value)


def test_status_changes_nothing(tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    p = status(Options(mig, parse_database_url(pg_url)), warn=print)
    assert [f.name for f in p.pending] == ["0001_a.sql"] and p.applied == []
    assert pg_connect().execute("SELECT to_regclass('plainsail_migrations')").fetchone() \
        == (None,)


def test_psycopg_errors_do_not_escape(tmp_path: Path, pg_url: str) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\nCREATE TABLE a (x int);\n")
    with pytest.raises(MigrationError) as err:
        run(mig, pg_url)
    assert isinstance(err.value.__cause__, psycopg.Error)
    assert 'relation "a" already exists' in str(err.value)
