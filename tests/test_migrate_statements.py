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
    "DO with COMMIT, unmarked": (DO_COMMIT, "a DO block that COMMITs or ROLLBACKs inside",
                                 {"concurrently-in-transaction"}),
    "DO with COMMIT, marked": (MARKER + DO_COMMIT, None, set()),
    "ANALYZE, unmarked": ("ANALYZE t;\n", None, set()),
    "ANALYZE, marked": (MARKER + "ANALYZE t;\n", None, set()),
    "VACUUM, unmarked": ("VACUUM t;\n", "is VACUUM, which cannot run inside a transaction",
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
    assert not _file(tmp_path, "VACUUM t;\n" + MARKER).no_transaction
