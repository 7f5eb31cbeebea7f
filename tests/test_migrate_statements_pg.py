"""The statements of test_migrate_statements.py applied to a real PostgreSQL, and what the
runner reports when they fail: HINTs, advice, status with an INVALID index, --json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plainsail.errors import MigrationError
from plainsail.migrations.dburl import parse_database_url
from plainsail.migrations.runner import Options, status
from tests.migrate_helpers import run, write
from tests.support.cli import plainsail
from tests.test_migrate_statements import DO_COMMIT, MARKER, MULTI_RULE

pytestmark = pytest.mark.integration

SETUP = ("CREATE TABLE t (id int PRIMARY KEY, x int);\n"
         "INSERT INTO t SELECT g, 0 FROM generate_series(1, 3) g;\n"
         "CREATE TABLE log (n int);\n")


def test_multi_action_rule_applies(tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_t.sql", SETUP)
    write(mig, "0002_rule.sql", MULTI_RULE)
    assert [a.name for a in run(mig, pg_url).applied] == ["0001_t.sql", "0002_rule.sql"]
    conn = pg_connect()
    conn.execute("INSERT INTO t VALUES (9, 0)")
    assert conn.execute("SELECT array_agg(n ORDER BY n) FROM log").fetchone() == ([1, 2],)


def test_do_block_with_commit_runs_in_a_marked_file(tmp_path: Path, pg_url: str,
                                                    pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_t.sql", SETUP)
    write(mig, "0002_backfill.sql", MARKER + DO_COMMIT)
    result = run(mig, pg_url)
    assert [(a.name, a.no_transaction) for a in result.applied][-1] == (
        "0002_backfill.sql", True)
    assert pg_connect().execute("SELECT array_agg(x ORDER BY id) FROM t").fetchone() == (
        [1, 2, 3],)


def test_procedure_that_commits_gets_advice(tmp_path: Path, pg_url: str) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_t.sql", SETUP + "CREATE PROCEDURE batch() LANGUAGE plpgsql AS $$ "
          "BEGIN UPDATE t SET x = 1; COMMIT; END $$;\n")
    write(mig, "0002_call.sql", "CALL batch();\n")
    with pytest.raises(MigrationError) as err:
        run(mig, pg_url)
    assert "invalid transaction termination" in str(err.value)
    # The CALL is already alone in its file: the advice is to mark it, not to move it.
    assert f"make '{MARKER.strip()}' this file's first line" in str(err.value)
    # Marked, the same CALL runs.
    (mig / "0002_call.sql").write_text(MARKER + "CALL batch();\n")
    assert [a.name for a in run(mig, pg_url).applied] == ["0002_call.sql"]


def test_postgres_hint_is_kept(tmp_path: Path, pg_url: str) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "SELECT lower(1);\n")
    with pytest.raises(MigrationError, match="HINT: No function matches"):
        run(mig, pg_url)


def test_status_fails_while_an_invalid_index_exists(tmp_path: Path, pg_url: str,
                                                    pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1), (1);\n")
    write(mig, "0002_idx.sql", MARKER + "CREATE UNIQUE INDEX CONCURRENTLY a_x ON a (x);\n")
    with pytest.raises(MigrationError):
        run(mig, pg_url)
    opts = Options(folder=mig, database=parse_database_url(pg_url))
    p = status(opts, lambda m: None)
    assert any("INVALID index public.a_x" in problem for problem in p.problems)
    r = plainsail("migrate", "status", "--dir", str(mig), "--database-url", pg_url)
    assert r.code == 1 and "DROP INDEX CONCURRENTLY IF EXISTS public.a_x" in r.out
    pg_connect().execute("DROP INDEX CONCURRENTLY public.a_x")
    assert status(opts, lambda m: None).problems == []


def test_json_is_printed_on_failure(tmp_path: Path, pg_url: str) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    write(mig, "0002_b.sql", "ALTER TABLE nope ADD COLUMN y int;\n")
    r = plainsail("migrate", "--json", "--dir", str(mig), "--database-url", pg_url)
    assert r.code == 1
    doc = json.loads(r.out)
    assert doc["ok"] is False and [a["name"] for a in doc["applied"]] == ["0001_a.sql"]
    assert 'relation "nope" does not exist' in doc["error"]
    assert r.err.startswith("error: 0002_b.sql")


GOOSE = ("-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE g (a int);\n"
         "-- +goose StatementEnd\n\n-- +goose Down\nDROP TABLE t;\n")


def test_real_histories_run_unedited(tmp_path: Path, pg_url: str, pg_connect: Any) -> None:
    """Generator output wrapped in BEGIN/COMMIT, goose's sections and marker,
    node-postgres-migrations' marker, and lone statements that need no transaction."""
    mig = tmp_path / "migrations"
    write(mig, "0001_t.sql", "BEGIN;\n" + SETUP + "COMMIT;\n")
    write(mig, "0002_goose.sql", GOOSE)
    write(mig, "0003_goose_idx.sql", "-- +goose Up\n-- +goose NO TRANSACTION\n"
          "CREATE INDEX CONCURRENTLY t_x ON t (x);\n-- +goose Down\nDROP INDEX t_x;\n")
    write(mig, "0004_pgm.sql", "-- postgres-migrations disable-transaction\n"
          "CREATE INDEX CONCURRENTLY t_id_x ON t (id, x);\n")
    write(mig, "0005_lone_idx.sql", "CREATE INDEX CONCURRENTLY log_n ON log (n);\n")
    write(mig, "0006_lone_do.sql", DO_COMMIT)
    write(mig, "0007_lone_vacuum.sql", "VACUUM ANALYZE t;\n")
    result = run(mig, pg_url)
    assert [(a.name, a.no_transaction) for a in result.applied] == [
        ("0001_t.sql", False), ("0002_goose.sql", False), ("0003_goose_idx.sql", True),
        ("0004_pgm.sql", True), ("0005_lone_idx.sql", True), ("0006_lone_do.sql", True),
        ("0007_lone_vacuum.sql", True)]
    conn = pg_connect()
    # goose's Down section never ran.
    assert conn.execute("SELECT to_regclass('t') IS NOT NULL, to_regclass('g') IS NOT NULL"
                        ).fetchone() == (True, True)
    assert conn.execute("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = "
                        "i.indexrelid WHERE c.relname IN ('t_x', 't_id_x', 'log_n') "
                        "AND i.indisvalid").fetchone() == (3,)
    assert conn.execute("SELECT array_agg(x ORDER BY id) FROM t").fetchone() == ([1, 2, 3],)
    assert run(mig, pg_url).applied == []


def test_wrapped_file_failure_is_rolled_back_whole(tmp_path: Path, pg_url: str,
                                                   pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_t.sql", "BEGIN;\nCREATE TABLE a (x int);\nINSERT INTO nope VALUES (1);\n"
          "COMMIT;\n")
    with pytest.raises(MigrationError, match=r"0001_t.sql: statement 2 of 2 \(line 3\) "
                                             r"failed: relation \"nope\" does not exist"):
        run(mig, pg_url)
    assert pg_connect().execute("SELECT to_regclass('a')").fetchone() == (None,)


def test_diesel_metadata_marks_a_migration_no_transaction(tmp_path: Path, pg_url: str,
                                                          pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig / "2024-01-01-000000_t", "up.sql", SETUP)
    write(mig / "2024-01-02-000000_idx", "up.sql",
          "CREATE INDEX CONCURRENTLY t_x ON t (x);\nCREATE INDEX CONCURRENTLY t_y ON t (id);\n")
    write(mig / "2024-01-02-000000_idx", "metadata.toml", "run_in_transaction = false\n")
    # Two statements outside a transaction could half-apply: refused, before anything ran.
    with pytest.raises(MigrationError, match="marked no-transaction but holds 2 statements"):
        run(mig, pg_url)
    write(mig / "2024-01-02-000000_idx", "up.sql", "CREATE INDEX CONCURRENTLY t_x ON t (x);\n")
    assert [a.no_transaction for a in run(mig, pg_url).applied] == [False, True]
