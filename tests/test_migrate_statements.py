"""Statements the runner and the lint must agree on, each with its expected verdict.

Pure logic: the runner's pre-flight check (`check_file`) and the lint, side by side. The
same statements are applied to a real PostgreSQL in test_migrate_statements_pg.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plainsail.errors import MigrationError
from plainsail.migrations.files import MigrationFile, check_file, read_file
from plainsail.migrations.sqlsplit import split_sql

MULTI_RULE = ("CREATE RULE log_ins AS ON INSERT TO t DO ALSO "
              "(INSERT INTO log VALUES (1); INSERT INTO log VALUES (2));\n")
DO_COMMIT = ("DO $$\nBEGIN\n  FOR i IN 1..3 LOOP\n    UPDATE t SET x = i WHERE id = i;\n"
             "    COMMIT;\n  END LOOP;\nEND $$;\n")
MARKER = "-- plainsail: no-transaction\n"

# name -> (SQL, runner verdict: None = accepted, else a fragment of its refusal,
#          lint rules expected among the active findings)
VERDICTS: dict[str, tuple[str, str | None, set[str]]] = {
    "multi-action rule": (MULTI_RULE, None, set()),
    # Alone in its file a statement that cannot run in a transaction needs no marker.
    "DO with COMMIT, alone": (DO_COMMIT, None, set()),
    "DO with COMMIT, not alone": ("SELECT 1;\n" + DO_COMMIT,
                                  "statement 2 (line 2) of 2 is a DO block that COMMITs or "
                                  "ROLLBACKs inside", {"concurrently-in-transaction"}),
    "DO with COMMIT in a comment and a string": (
        "SELECT 1;\nDO $$\nBEGIN\n  -- COMMIT; later\n  RAISE NOTICE 'COMMIT;';\nEND $$;\n",
        None, set()),
    "DO reading a column named commit": (
        "SELECT 1;\nDO $$\nDECLARE c int;\nBEGIN\n  SELECT commit INTO c FROM t;\n"
        "  UPDATE t SET commit = 1 WHERE commit = 0;\nEND $$;\n", None, set()),
    "DO with ROLLBACK in a branch": (
        "SELECT 1;\nDO $$\nBEGIN\n  IF true THEN ROLLBACK; END IF;\nEND $$;\n",
        "is a DO block that COMMITs", {"concurrently-in-transaction"}),
    "wrapped in BEGIN/COMMIT": ("BEGIN;\nCREATE TABLE u (a int);\nINSERT INTO u VALUES (1);\n"
                                "COMMIT;\n", None, set()),
    "wrapped in START TRANSACTION/END": ("START TRANSACTION;\nCREATE TABLE u (a int);\nEND;\n",
                                         None, set()),
    "goose no-transaction": ("-- +goose Up\n-- +goose NO TRANSACTION\n"
                             "CREATE INDEX CONCURRENTLY i ON t (x);\n", None, set()),
    "postgres-migrations no-transaction": ("-- postgres-migrations disable-transaction\n"
                                           "CREATE INDEX CONCURRENTLY i ON t (x);\n",
                                           None, set()),
    "DO with COMMIT, marked": (MARKER + DO_COMMIT, None, set()),
    "ANALYZE, unmarked": ("ANALYZE t;\n", None, set()),
    "ANALYZE, marked": (MARKER + "ANALYZE t;\n", None, set()),
    "VACUUM, alone": ("VACUUM t;\n", None, set()),
    "VACUUM, not alone": ("SELECT 1;\nVACUUM t;\n",
                          "is VACUUM, which cannot run inside a transaction",
                          {"concurrently-in-transaction"}),
    "VACUUM, marked": (MARKER + "VACUUM t;\n", None, set()),
    "marker on line 2": ("SELECT 1;\n" + MARKER + "CREATE INDEX CONCURRENTLY i ON t (x);\n",
                         "counts only on line 1", {"no-transaction-file"}),
    "marker after a blank first line": ("\n" + MARKER + "CREATE INDEX CONCURRENTLY i ON t (x);\n",
                                        "counts only on line 1", {"no-transaction-file"}),
    "marked, two statements": (MARKER + "CREATE INDEX CONCURRENTLY i ON t (x);\nSELECT 1;\n",
                               "holds 2 statements", {"no-transaction-file"}),
    "marked, ordinary statement": (MARKER + "CREATE TABLE u (a int);\n", "no such statement",
                                   {"no-transaction-file"}),
}


def _file(tmp_path: Path, sql: str) -> MigrationFile:
    path = tmp_path / "0001_x.sql"
    path.write_text(sql, encoding="utf-8")
    return read_file(path)


@pytest.mark.parametrize("case", sorted(VERDICTS))
def test_runner_verdict(case: str, tmp_path: Path) -> None:
    sql, refusal, _ = VERDICTS[case]
    f = _file(tmp_path, sql)
    if refusal is None:
        check_file(f)
    else:
        with pytest.raises(MigrationError, match=refusal.replace("(", r"\(").replace(")", r"\)")):
            check_file(f)


@pytest.mark.parametrize("case", sorted(VERDICTS))
def test_lint_agrees_with_the_runner(case: str) -> None:
    pytest.importorskip("pglast")
    from plainsail.lint.engine import lint_text

    sql, refusal, rules = VERDICTS[case]
    errors = {f.rule for f in lint_text("x.sql", sql)
              if f.suppressed is None and f.severity == "error"}
    assert rules <= errors
    # Whatever the runner refuses, the lint reports as an error, and the other way round.
    assert bool(errors) == (refusal is not None), errors


def test_multi_action_rule_is_one_statement() -> None:
    stmts = split_sql(MULTI_RULE + "SELECT 1;\n")
    assert [s.words[:2] for s in stmts] == [("CREATE", "RULE"), ("SELECT",)]
    assert stmts[0].text.endswith("VALUES (2))")


def test_marker_is_read_only_on_the_first_line(tmp_path: Path) -> None:
    assert _file(tmp_path, MARKER + "VACUUM t;\n").no_transaction
    assert not _file(tmp_path, "SELECT 1;\nVACUUM t;\n" + MARKER).no_transaction


@pytest.mark.parametrize("sql", [
    "CREATE TABLE u (a int);\nCOMMIT;\nBEGIN;\nSELECT 1;\n",
    "BEGIN;\nCREATE TABLE u (a int);\nCOMMIT;\nSELECT 1;\n",
    "BEGIN;\nSELECT 1;\nROLLBACK;\n",
    "BEGIN ISOLATION LEVEL SERIALIZABLE;\nSELECT 1;\nCOMMIT;\n",
])
def test_transaction_control_other_than_a_whole_wrap_is_refused(sql: str,
                                                                tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="remove it: plainsail runs each file in its "
                                             "own transaction"):
        check_file(_file(tmp_path, sql))


def test_a_wrapped_file_keeps_its_line_numbers(tmp_path: Path) -> None:
    f = _file(tmp_path, "-- generated\nBEGIN;\n\nCREATE TABLE u (a int);\nSELECT 1;\nCOMMIT;\n")
    check_file(f)
    assert [(s.number, s.line, s.text) for s in f.statements] == [
        (1, 4, "CREATE TABLE u (a int)"), (2, 5, "SELECT 1")]
    assert not f.no_transaction


@pytest.mark.parametrize("case", [c for c in sorted(VERDICTS) if c.startswith("DO ")])
def test_do_blocks_without_pglast(case: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In an image without pglast the runner reads DO bodies with its own tokenizer, to
    the same verdicts."""
    from plainsail.migrations import files

    monkeypatch.setattr(files, "_plpgsql_commits", lambda body: None)
    test_runner_verdict(case, tmp_path)
