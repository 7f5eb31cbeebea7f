"""Statements from real migration histories, each with the lint's expected verdict: what
must be flagged (the recall cases) and what must not (the false positives), plus the
parallel and cached paths giving the same findings as a plain run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from plainsail.cli import main
from plainsail.lint import batch
from plainsail.lint.engine import lint_text
from plainsail.lint.sources import Source

pytest.importorskip("pglast")

HINTS = {"missing-lock-timeout"}  # a hint about the file, not about the statement


@pytest.fixture(autouse=True)
def _own_lint_cache(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAINSAIL_LINT_CACHE", str(tmp_path_factory.mktemp("lint-cache")))


def _rules(sql: str) -> set[str]:
    return {f.rule for f in lint_text("x.sql", sql) if f.suppressed is None} - HINTS


# name -> (SQL, the exact set of rules reported, hints aside)
VERDICTS: dict[str, tuple[str, set[str]]] = {
    # Constraints and defaults written inside ADD COLUMN.
    "ADD COLUMN ... UNIQUE": ("ALTER TABLE users ADD COLUMN c int UNIQUE;",
                              {"unique-without-index"}),
    "ADD COLUMN ... PRIMARY KEY": ("ALTER TABLE users ADD COLUMN c int PRIMARY KEY;",
                                   {"unique-without-index"}),
    "ADD COLUMN ... REFERENCES": ("ALTER TABLE users ADD COLUMN c int REFERENCES u;",
                                  {"constraint-without-not-valid"}),
    "ADD COLUMN ... DEFAULT my_fn()": (
        "ALTER TABLE users ADD COLUMN c int NOT NULL DEFAULT my_fn();", {"volatile-default"}),
    "ADD COLUMN ... DEFAULT of a function declared STABLE here": (
        "CREATE FUNCTION my_fn() RETURNS int STABLE LANGUAGE sql AS 'SELECT 1';\n"
        "ALTER TABLE users ADD COLUMN c int NOT NULL DEFAULT my_fn();", set()),
    "ADD COLUMN ... DEFAULT 0": ("ALTER TABLE users ADD COLUMN c int NOT NULL DEFAULT 0;",
                                 set()),
    # DDL inside DO blocks, and constant EXECUTE strings.
    "DO: ALTER inside": ("DO $$\nBEGIN\n  ALTER TABLE users DROP COLUMN email;\nEND $$;",
                         {"drop-column"}),
    "DO: constant EXECUTE": (
        "DO $$\nBEGIN\n  IF true THEN\n    EXECUTE 'CREATE INDEX i ON users (email)';\n"
        "  END IF;\nEND $$;", {"index-without-concurrently"}),
    "DO: EXECUTE of a built string is not guessed": (
        "DO $$\nBEGIN\n  EXECUTE format('DROP TABLE %I', 'x');\nEND $$;", set()),
    "DO: creating a type if missing": (
        "DO $$ BEGIN CREATE TYPE kind AS ENUM ('a'); EXCEPTION WHEN duplicate_object THEN "
        "NULL; END $$;", set()),
    # Objects the old app uses.
    "ALTER TYPE ... RENAME VALUE": ("ALTER TYPE mood RENAME VALUE 'sad' TO 'blue';",
                                    {"rename-enum-value"}),
    "DROP VIEW": ("DROP VIEW active_users;", {"drop-view"}),
    "DROP MATERIALIZED VIEW": ("DROP MATERIALIZED VIEW stats;", {"drop-view"}),
    "DROP FUNCTION": ("DROP FUNCTION hot_rank(numeric, timestamp);", {"drop-function"}),
    "DROP PROCEDURE": ("DROP PROCEDURE cleanup();", {"drop-function"}),
    "ALTER VIEW ... RENAME": ("ALTER VIEW active_users RENAME TO current_users;",
                              {"rename-object"}),
    "ALTER MATERIALIZED VIEW ... RENAME": ("ALTER MATERIALIZED VIEW stats RENAME TO s2;",
                                           {"rename-object"}),
    "ALTER VIEW ... RENAME COLUMN": ("ALTER VIEW v RENAME COLUMN a TO b;", {"rename-object"}),
    "ALTER FUNCTION ... RENAME": ("ALTER FUNCTION f(int) RENAME TO g;", {"rename-object"}),
    "ALTER INDEX ... RENAME": ("ALTER INDEX users_pkey RENAME TO people_pkey;", set()),
    # A view or function dropped and created again in the same file (one transaction):
    # the old app never sees it missing (lemmy does this in most of its migrations).
    "DROP VIEW, then CREATE VIEW again": (
        "DROP VIEW comment_view;\nCREATE VIEW comment_view AS SELECT 1 AS id;", set()),
    "DROP FUNCTION, then CREATE FUNCTION again": (
        "DROP FUNCTION IF EXISTS nanoid(int, text, float);\n"
        "CREATE OR REPLACE FUNCTION nanoid(size int) RETURNS text LANGUAGE sql "
        "AS 'SELECT 1::text';", set()),
    "DROP VIEW a, b, then only a again": (
        "DROP VIEW a, b;\nCREATE VIEW a AS SELECT 1 AS id;", {"drop-view"}),
    # Defaults: dropping a NULL default changes nothing; a serial's default is real.
    "DROP DEFAULT on a column whose default was NULL": (
        "ALTER TABLE t2 ALTER COLUMN b DROP DEFAULT;", set()),
    "DROP DEFAULT on a column with a default": (
        "ALTER TABLE t2 ALTER COLUMN b SET DEFAULT 1;\n"
        "ALTER TABLE t2 ALTER COLUMN b DROP DEFAULT;", {"drop-default"}),
    "DROP DEFAULT of a serial": (
        "ALTER TABLE folder ALTER COLUMN id DROP DEFAULT;", {"drop-default"}),
    # lemmy 2025-08-01-000039_remove_post_sort_type_enums: the default makes way for an
    # enum swap and is set again before the file commits.
    "DROP DEFAULT, then SET DEFAULT again": (
        "ALTER TABLE t2 ALTER COLUMN b SET DEFAULT 1;\n"
        "ALTER TABLE t2 ALTER b DROP DEFAULT;\n"
        "ALTER TABLE t2 ALTER COLUMN b TYPE bigint USING b::bigint;\n"
        "ALTER TABLE t2 ALTER b SET DEFAULT 2;", {"change-column-type"}),
    "DROP DEFAULT of a serial, then SET DEFAULT again": (
        "ALTER TABLE folder ALTER COLUMN id DROP DEFAULT;\n"
        "ALTER TABLE folder ALTER COLUMN id SET DEFAULT nextval('folder_id_seq2');", set()),
    "DROP DEFAULT, then SET DEFAULT NULL": (
        "ALTER TABLE t2 ALTER COLUMN b SET DEFAULT 1;\n"
        "ALTER TABLE t2 ALTER b DROP DEFAULT;\n"
        "ALTER TABLE t2 ALTER b SET DEFAULT NULL;", {"drop-default"}),
    # timestamp -> timestamptz with the session in UTC: no rewrite since PostgreSQL 12.
    "timestamptz after SET timezone UTC, USING the column": (
        "SET timezone = 'UTC';\nALTER TABLE community ALTER COLUMN published TYPE "
        "timestamptz USING published;", set()),
    "timestamptz with a real USING expression": (
        "SET timezone = 'UTC';\nALTER TABLE community ALTER COLUMN published TYPE "
        "timestamptz USING published AT TIME ZONE 'Europe/Paris';", {"change-column-type"}),
    "ANALYZE": ("ANALYZE users;", set()),
}

# Columns the earlier history established, for the verdicts that depend on them.
HISTORY = ("CREATE TABLE folder (id SERIAL PRIMARY KEY);\n"
           "CREATE TABLE t2 (b int DEFAULT NULL);\n"
           "CREATE TABLE community (published timestamp NOT NULL);\n")


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_verdict(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql, expected = VERDICTS[name]
    (tmp_path / "0001_history.sql").write_text(HISTORY)
    (tmp_path / "0002_change.sql").write_text(sql + "\n")
    main(["lint", "migrations", str(tmp_path), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    found = {f["rule"] for f in doc["findings"]
             if f["path"].endswith("0002_change.sql") and f["accepted"] is None} - HINTS
    assert found == expected


def test_do_block_finding_points_at_its_line() -> None:
    sql = "SET lock_timeout = '1s';\nDO $$\nBEGIN\n  ALTER TABLE users DROP COLUMN email;\nEND $$;"
    (f,) = lint_text("x.sql", sql)
    assert (f.rule, f.line, f.statement) == ("drop-column", 4, 2)
    assert f.message.endswith("(inside a DO block)")


def test_primary_key_message_reads_well() -> None:
    (f,) = [f for f in lint_text("x.sql", "ALTER TABLE t ADD PRIMARY KEY (id);")
            if f.rule == "unique-without-index"]
    assert f.message == ("adds a PRIMARY KEY constraint on t, which builds its index under a "
                         "write lock (no USING INDEX)")


def test_tables_created_in_the_same_file_are_not_flagged() -> None:
    # Prisma's shape: CREATE TABLE, then its indexes and foreign keys as separate statements.
    sql = ('CREATE TABLE "Folder" ("id" TEXT NOT NULL, "userId" INTEGER NOT NULL);\n'
           'CREATE UNIQUE INDEX "Folder_id_key" ON "Folder"("id");\n'
           'ALTER TABLE "Folder" ADD CONSTRAINT "Folder_userId_fkey" FOREIGN KEY ("userId") '
           'REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;\n')
    assert _rules(sql) == set()


def test_parallel_workers_give_the_same_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = [Source(f"{i:04d}.sql", sql + "\n")
               for i, (sql, _) in enumerate(VERDICTS.values())] * 4
    serial = [(f.path, f.line, f.rule, f.message)
              for f in batch.lint_sources(sources, use_cache=False)]
    monkeypatch.setattr(batch, "PARALLEL_FROM", 8)
    assert batch._workers(len(sources)) == min(4, len(batch.os.sched_getaffinity(0)))
    forked = [(f.path, f.line, f.rule, f.message)
              for f in batch.lint_sources(sources, use_cache=False)]
    assert forked == serial and serial


def test_a_failing_worker_is_redone_in_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = [Source(f"{i:04d}.sql", "SET lock_timeout = '1s';\nDROP TABLE users;\n")
               for i in range(40)]
    monkeypatch.setattr(batch, "PARALLEL_FROM", 8)
    real = batch._analyze_chunk
    parent = batch.os.getpid()

    def flaky(chunk: list[tuple[str, int, bool]]) -> list[list[object]]:
        if batch.os.getpid() != parent:
            raise RuntimeError("worker fails")
        return real(chunk)

    monkeypatch.setattr(batch, "_analyze_chunk", flaky)
    found = batch.lint_sources(sources, use_cache=False)
    assert [f.rule for f in found] == ["drop-table"] * 40


def test_cached_run_gives_the_same_findings() -> None:
    sources = [Source(f"{i:04d}.sql", sql + "\n") for i, (sql, _) in enumerate(
        VERDICTS.values())]
    first = [(f.path, f.line, f.rule, f.message) for f in batch.lint_sources(sources)]
    assert batch.cache_file() is not None and batch.cache_file().exists()  # type: ignore[union-attr]
    again = [(f.path, f.line, f.rule, f.message) for f in batch.lint_sources(sources)]
    assert again == first


def test_pglast_classes_still_load_after_the_json_only_import() -> None:
    from plainsail.lint import pgparse

    assert "stmts" in pgparse.parse_sql_json("SELECT 1")
    from pglast import parse_sql

    (raw,) = parse_sql("ALTER TABLE t DROP COLUMN c")
    assert type(raw.stmt).__name__ == "AlterTableStmt"
    assert sys.modules["pglast.ast"].AlterTableStmt is type(raw.stmt)


def test_json_report_is_the_same_text_json_dumps_writes() -> None:
    from plainsail.lint import report
    from plainsail.lint.engine import Finding

    assert report.as_json([], 3) == report.as_json_reference([], 3)
    found = lint_text("mig/0001 naïve \"x\".sql", "DROP TABLE users;\nDROP VIEW v;\n")
    found.append(Finding("<stdin>", 2, 1, "drop-column", "drops column ü.\"x\"\\y",
                         suppressed="gone since v3 — see ticket \"12\""))
    assert report.as_json(found, 1) == report.as_json_reference(found, 1)
    assert json.loads(report.as_json(found, 1))["findings"][-1]["accepted"].startswith("gone")


# History-aware verdicts: (earlier files, the new file, rules expected in the new file).
HISTORY_VERDICTS: dict[str, tuple[str, str, set[str]]] = {
    # trigger.dev 20231115134828_add_events_schema_and_tables: a re-run guard in the file
    # that first creates the table.
    "DROP TABLE IF EXISTS + CREATE, never created before": (
        "SELECT 1;", "DROP TABLE IF EXISTS ev.runs;\nCREATE TABLE ev.runs (id int);", set()),
    "DROP TABLE IF EXISTS + CREATE of a table the history has": (
        "CREATE TABLE ev.runs (id int);",
        "DROP TABLE IF EXISTS ev.runs;\nCREATE TABLE ev.runs (id int);", {"drop-table"}),
    "DROP TABLE IF EXISTS, not created again": (
        "SELECT 1;", "DROP TABLE IF EXISTS runs;", {"drop-table"}),
    # lemmy 2021-03-09-171136_split_user_table_2: renaming trigger functions.
    "rename of a trigger function": (
        "CREATE FUNCTION site_user_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "'BEGIN RETURN NULL; END';",
        "ALTER FUNCTION site_user_delete() RENAME TO site_person_delete;", set()),
    "rename of a function the app calls": (
        "CREATE FUNCTION hot_rank(n int) RETURNS int LANGUAGE sql AS 'SELECT 1';",
        "ALTER FUNCTION hot_rank(int) RENAME TO rank;", {"rename-object"}),
    "drop of an event trigger function": (
        "CREATE FUNCTION extensions.notify_api_restart() RETURNS event_trigger "
        "LANGUAGE plpgsql AS 'BEGIN NULL; END';",
        "DROP EVENT TRIGGER IF EXISTS api_restart;\n"
        "DROP FUNCTION IF EXISTS extensions.notify_api_restart();", set()),
    "drop of a function nothing in the history declares": (
        "SELECT 1;", "DROP FUNCTION IF EXISTS extensions.notify_api_restart();",
        {"drop-function"}),
    "drop of a trigger function": (
        "CREATE FUNCTION t_touch() RETURNS trigger LANGUAGE plpgsql AS "
        "'BEGIN RETURN NEW; END';", "DROP FUNCTION t_touch() CASCADE;", set()),
    # trigger.dev 20240319120645: a column added, filled and renamed in one file.
    "rename of a column this file added": (
        'CREATE TABLE "TaskEvent" (id int);',
        'ALTER TABLE "TaskEvent" ADD COLUMN "tmp" bigint;\n'
        'ALTER TABLE "TaskEvent" DROP COLUMN "startTime";\n'
        'ALTER TABLE "TaskEvent" RENAME COLUMN "tmp" TO "startTime";', {"drop-column"}),
    # documenso 20260525103410: a NOT NULL column added with a backfill default that is
    # dropped at once; the old app's INSERTs now fail.
    "DROP DEFAULT right after ADD COLUMN NOT NULL DEFAULT": (
        'CREATE TABLE "Envelope" (id int);',
        'ALTER TABLE "Envelope" ADD COLUMN "level" TEXT NOT NULL DEFAULT \'SES\';\n'
        'ALTER TABLE "Envelope" ALTER COLUMN "level" DROP DEFAULT;', {"drop-default"}),
}


@pytest.mark.parametrize("name", sorted(HISTORY_VERDICTS))
def test_history_verdict(name: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    before, sql, expected = HISTORY_VERDICTS[name]
    (tmp_path / "0001_before.sql").write_text(before + "\n")
    (tmp_path / "0002_change.sql").write_text(sql + "\n")
    main(["lint", "migrations", str(tmp_path), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    found = {f["rule"] for f in doc["findings"]
             if f["path"].endswith("0002_change.sql") and f["accepted"] is None} - HINTS
    assert found == expected
