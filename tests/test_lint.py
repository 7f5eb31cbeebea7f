"""Each lint rule with a case it must flag and a case it must leave alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plainsail.cli import main
from plainsail.lint.engine import lint_text
from plainsail.lint.rules import RULES

pytest.importorskip("pglast")


@pytest.fixture(autouse=True)
def _own_lint_cache(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAINSAIL_LINT_CACHE", str(tmp_path_factory.mktemp("lint-cache")))

# rule -> (SQL that must be flagged, the safe way that must not be)
CASES: dict[str, tuple[str, str]] = {
    "drop-column": ("ALTER TABLE users DROP COLUMN email;",
                    "CREATE TABLE t (a int, b int); ALTER TABLE t DROP COLUMN b;"),
    "drop-table": ("DROP TABLE users;", "CREATE TABLE tmp (a int); DROP TABLE tmp;"),
    "rename-column": ("ALTER TABLE users RENAME COLUMN email TO mail;",
                      "ALTER TABLE users RENAME CONSTRAINT c1 TO c2;"),
    "rename-table": ("ALTER TABLE users RENAME TO people;",
                     "CREATE TABLE t (a int); ALTER TABLE t RENAME TO t2;"),
    "change-column-type": ("ALTER TABLE users ALTER COLUMN id TYPE bigint;",
                           "ALTER TABLE users ADD COLUMN id_big bigint;"),
    "add-not-null-column-without-default": (
        "ALTER TABLE users ADD COLUMN plan text NOT NULL;",
        "ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';"),
    "set-not-null": ("ALTER TABLE users ALTER COLUMN plan SET NOT NULL;",
                     "ALTER TABLE users ADD CONSTRAINT plan_nn CHECK (plan IS NOT NULL) "
                     "NOT VALID;"),
    "drop-default": ("ALTER TABLE users ALTER COLUMN plan DROP DEFAULT;",
                     "ALTER TABLE users ALTER COLUMN plan SET DEFAULT 'free';"),
    "index-without-concurrently": ("CREATE INDEX users_email ON users (email);",
                                   "-- plainsail: no-transaction\n"
                                   "CREATE INDEX CONCURRENTLY users_email ON users (email);"),
    "drop-index-without-concurrently": ("DROP INDEX users_email;",
                                        "-- plainsail: no-transaction\n"
                                        "DROP INDEX CONCURRENTLY users_email;"),
    "constraint-without-not-valid": (
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);",
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) "
        "NOT VALID; ALTER TABLE orders VALIDATE CONSTRAINT fk;"),
    "unique-without-index": ("ALTER TABLE users ADD CONSTRAINT u UNIQUE (email);",
                             "ALTER TABLE users ADD CONSTRAINT u UNIQUE USING INDEX u_idx;"),
    "volatile-default": ("ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();",
                         "ALTER TABLE users ADD COLUMN created timestamptz DEFAULT now();"),
    "missing-lock-timeout": ("ALTER TABLE users ADD COLUMN bio text;",
                             "SET lock_timeout = '2s'; ALTER TABLE users ADD COLUMN bio text;"),
    "concurrently-in-transaction": ("UPDATE users SET a = 1;\n"
                                    "CREATE INDEX CONCURRENTLY i ON users (email);",
                                    "BEGIN; CREATE TABLE t (a int); COMMIT;\n"
                                    "CREATE INDEX CONCURRENTLY i ON users (email);"),
    "no-transaction-file": ("-- plainsail: no-transaction\nCREATE INDEX CONCURRENTLY i ON "
                            "users (email);\nCREATE TABLE t (a int);",
                            "-- plainsail: no-transaction\nCREATE INDEX CONCURRENTLY i ON "
                            "users (email);"),
    "parse-error": ("ALTER TABLE users ADD COLUMN;", "SELECT 1;"),
    "rename-enum-value": ("ALTER TYPE mood RENAME VALUE 'sad' TO 'blue';",
                          "ALTER TYPE mood ADD VALUE 'blue';"),
    "drop-view": ("DROP VIEW active_users;",
                  "CREATE VIEW v AS SELECT 1 AS one; DROP VIEW v;"),
    "drop-function": ("DROP FUNCTION notify_change();",
                      "CREATE OR REPLACE FUNCTION notify_change() RETURNS int LANGUAGE sql "
                      "AS 'SELECT 1';"),
    "rename-object": ("ALTER VIEW active_users RENAME TO current_users;",
                      "CREATE VIEW v AS SELECT 1 AS one; ALTER VIEW v RENAME TO w;"),
    "table-rewrite": ("VACUUM FULL users;", "-- plainsail: no-transaction\nVACUUM users;"),
    "bad-allow": ("-- plainsail: allow drop-column\nALTER TABLE users DROP COLUMN a;",
                  "-- plainsail: allow drop-column unused since release 41\n"
                  "ALTER TABLE users DROP COLUMN a;"),
    "unused-allow": ("-- plainsail: allow drop-table not needed\nSELECT 1;",
                     "-- plainsail: allow drop-table archived in ticket 12\nDROP TABLE old;"),
}


def test_every_rule_has_cases_and_documentation() -> None:
    assert set(CASES) == set(RULES)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "migrations.md").read_text()
    for rule in RULES.values():
        assert rule.why and rule.instead and rule.severity in ("error", "warning")
        assert f"`{rule.id}`" in docs, f"{rule.id} is missing from docs/migrations.md"


def _active(sql: str) -> set[str]:
    return {f.rule for f in lint_text("x.sql", sql) if f.suppressed is None}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_flags_the_hazard(rule: str) -> None:
    assert rule in _active(CASES[rule][0])


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_accepts_the_safe_way(rule: str) -> None:
    assert rule not in _active(CASES[rule][1])


def test_finding_carries_line_and_statement() -> None:
    sql = "SET lock_timeout = '1s';\n\n-- comment\nALTER TABLE users\n  DROP COLUMN a;\n"
    (f,) = lint_text("m.sql", sql)
    # The line of the offending clause, not of the statement's first line.
    assert (f.rule, f.line, f.statement, f.severity) == ("drop-column", 5, 2, "error")


def test_allow_with_reason_suppresses_only_its_statement() -> None:
    sql = ("SET lock_timeout = '1s';\n"
           "-- plainsail: allow drop-column the app stopped reading it in v41\n"
           "ALTER TABLE users DROP COLUMN a;\n"
           "ALTER TABLE users DROP COLUMN b; -- plainsail: allow drop-column unused since v40\n"
           "ALTER TABLE users DROP COLUMN c;\n")
    found = lint_text("m.sql", sql)
    assert [(f.line, f.suppressed is not None) for f in found] == [
        (3, True), (4, True), (5, False)]
    assert found[0].suppressed == "the app stopped reading it in v41"


def test_suppression_without_reason_is_itself_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "0001.sql").write_text(
        "SET lock_timeout = '1s';\n-- plainsail: allow drop-column\n"
        "ALTER TABLE users DROP COLUMN a;\n")
    assert main(["lint", "migrations", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bad-allow: allowing drop-column needs a reason" in out
    assert "drop-column: drops column users.a" in out


def test_exit_status_follows_error_findings(tmp_path: Path, capsys) -> None:
    (tmp_path / "0001.sql").write_text("ALTER TABLE users ADD COLUMN bio text;\n")
    assert main(["lint", "migrations", str(tmp_path)]) == 0  # only a warning
    (tmp_path / "0002.sql").write_text("DROP TABLE users;\n")
    assert main(["lint", "migrations", str(tmp_path)]) == 1


def test_json_and_sarif(tmp_path: Path, capsys) -> None:
    (tmp_path / "0001.sql").write_text(
        "SET lock_timeout = '1s';\nDROP TABLE a; -- plainsail: allow drop-table gone in v3\n"
        "DROP TABLE b;\n")
    assert main(["lint", "migrations", str(tmp_path), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["errors"], data["accepted"]) == (1, 1)
    assert main(["lint", "migrations", str(tmp_path), "--format", "sarif"]) == 1
    sarif = json.loads(capsys.readouterr().out)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == set(RULES)
    results = run["results"]
    assert [r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in results] \
        == [2, 3]
    assert results[0]["suppressions"][0]["justification"] == "gone in v3"
    assert "suppressions" not in results[1] and results[1]["level"] == "error"


ALEMBIC = """\
BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 1975ea83b712

CREATE TABLE account (
    id SERIAL NOT NULL,
    name VARCHAR(50) NOT NULL,
    PRIMARY KEY (id)
);

INSERT INTO alembic_version (version_num) VALUES ('1975ea83b712') RETURNING version_num;

-- Running upgrade 1975ea83b712 -> ae1027a6acf

ALTER TABLE account ADD COLUMN last_login TIMESTAMP WITHOUT TIME ZONE NOT NULL;

COMMIT;
CREATE INDEX CONCURRENTLY ix_account_name ON account (name);
BEGIN;

UPDATE alembic_version SET version_num='ae1027a6acf' WHERE alembic_version.version_num = \
'1975ea83b712';

COMMIT;
"""

DJANGO = """\
BEGIN;
--
-- Add field email to customer
--
ALTER TABLE "shop_customer" ADD COLUMN "email" varchar(254) DEFAULT '' NOT NULL;
ALTER TABLE "shop_customer" ALTER COLUMN "email" DROP DEFAULT;
--
-- Alter field name on customer
--
ALTER TABLE "shop_customer" ALTER COLUMN "name" TYPE varchar(200);
CREATE INDEX "shop_customer_email_idx" ON "shop_customer" ("email");
COMMIT;
"""


def test_reads_alembic_offline_sql() -> None:
    rules = [f.rule for f in lint_text("alembic.sql", ALEMBIC)]
    # account is created in the same output, so adding a NOT NULL column there is fine; the
    # concurrent index sits between COMMIT and BEGIN, outside a transaction.
    assert rules == []


def test_reads_django_sqlmigrate(tmp_path: Path, capsys, monkeypatch) -> None:
    found = {(f.rule, f.line) for f in lint_text("django.sql", DJANGO)}
    assert found == {("missing-lock-timeout", 5), ("drop-default", 6),
                     ("change-column-type", 10), ("index-without-concurrently", 11)}
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO(DJANGO))
    assert main(["lint", "migrations", "-"]) == 1
    assert "<stdin>:6: error drop-default" in capsys.readouterr().out


def test_statements_outside_a_tools_begin_commit_run_outside_a_transaction() -> None:
    sql = "BEGIN;\nCREATE TABLE t (a int);\nCOMMIT;\nDROP INDEX CONCURRENTLY i;\n"
    assert "concurrently-in-transaction" not in _active(sql)
    sql = "BEGIN;\nDROP INDEX CONCURRENTLY i;\nCOMMIT;\n"
    assert "concurrently-in-transaction" in _active(sql)


def test_example_app_migrations_pass_the_lint(capsys: pytest.CaptureFixture[str]) -> None:
    folder = Path(__file__).resolve().parents[1] / "examples" / "notes-api" / "migrations"
    assert main(["lint", "migrations", str(folder), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["errors"], doc["warnings"], doc["files"]) == (0, 0, 2)


def _history(*files: str) -> list[list[tuple[str, str]]]:
    """The active findings of each file, linted in order after the earlier ones."""
    from plainsail.lint.catalog import Column

    known: dict[str, Column] = {}
    return [[(f.rule, f.message) for f in lint_text(f"{i:04d}.sql", sql, known=known)
             if f.suppressed is None] for i, sql in enumerate(files, start=1)]


def test_renaming_a_type_is_flagged_unless_the_file_created_it() -> None:
    (hits,) = _history('ALTER TYPE "Status" RENAME TO "State";')
    assert hits and hits[0][0] == "rename-object" and "renames type Status to State" in hits[0][1]
    assert "Prisma" in hits[0][1]
    # Created in the same file (inside a DO block, as Prisma and Node runners write it).
    created = ("DO $$ BEGIN\n  CREATE TYPE \"Status\" AS ENUM ('a', 'b');\n"
               "EXCEPTION WHEN duplicate_object THEN NULL;\nEND $$;\n")
    assert _history(created + 'ALTER TYPE "Status" RENAME TO "State";\n'
                    "ALTER TYPE \"State\" RENAME VALUE 'a' TO 'c';\n") == [[]]
    assert _history("CREATE DOMAIN d AS int;\nALTER DOMAIN d RENAME TO e;\n"
                    "CREATE TYPE c AS (x int);\nALTER TYPE c RENAME TO c2;\n") == [[]]


def test_drop_function_of_an_overload_no_earlier_file_created_is_not_reported() -> None:
    create = "CREATE FUNCTION f(a int, OUT b text) RETURNS text LANGUAGE sql AS 'SELECT 1';"
    assert _history(create, "DROP FUNCTION f(text);", "DROP FUNCTION IF EXISTS f(bigint);",
                    "DROP FUNCTION f(integer);") == [
        [], [], [], [("drop-function", "drops function f")]]
    # Nothing in the history says where g came from: reported as before.
    assert _history("DROP FUNCTION g(int);") == [[("drop-function", "drops function g")]]
    # Created inside a DO block of an earlier file: that overload is known.
    in_do = ("DO $$ BEGIN CREATE FUNCTION h(x int[]) RETURNS int LANGUAGE sql AS 'SELECT 1'; "
             "EXCEPTION WHEN duplicate_function THEN NULL; END $$;")
    assert _history(in_do, "DROP FUNCTION h(int);", "DROP FUNCTION h(int[]);") == [
        [], [], [("drop-function", "drops function h")]]
    # A trigger function is never the app's.
    assert _history("CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS "
                    "'BEGIN RETURN NEW; END';", "DROP FUNCTION t();") == [[], []]
