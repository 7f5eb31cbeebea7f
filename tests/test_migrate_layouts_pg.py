"""Each layout applied to a real PostgreSQL: the small fixtures, a generated history of a
few hundred migrations per layout, and adopting a database with `migrate baseline`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plainsail.errors import MigrationError
from plainsail.migrations.dburl import parse_database_url
from plainsail.migrations.layouts import discover
from plainsail.migrations.runner import Options, baseline, status
from tests.migrate_helpers import run
from tests.support.cli import plainsail
from tests.test_migrate_layouts import DATA, EXPECTED

pytestmark = pytest.mark.integration

CORPUS = 240


def _body(i: int) -> tuple[str, bool]:
    """The SQL of generated migration i, and whether it needs a no-transaction file."""
    t = f"t{i // 6}"
    kind = i % 6
    if kind == 0:
        return (f"CREATE TABLE {t} (\n    id bigint PRIMARY KEY,\n    name text NOT NULL,\n"
                f"    created_at timestamptz NOT NULL DEFAULT now()\n);\n"
                f"INSERT INTO {t} (id, name) SELECT g, 'n' || g FROM generate_series(1, 20) g;\n",
                False)
    if kind == 1:
        return (f"ALTER TABLE {t} ADD COLUMN note text;\n"
                f"UPDATE {t} SET note = 'x; y' WHERE id % 2 = 0;\n", False)
    if kind == 2:
        return (f"CREATE INDEX CONCURRENTLY {t}_name_idx ON {t} (name);\n", True)
    if kind == 3:
        return (f"CREATE FUNCTION {t}_count() RETURNS bigint LANGUAGE sql STABLE\n"
                f"AS $$ SELECT count(*) FROM {t}; $$;\n"
                f"CREATE VIEW {t}_named AS SELECT id, name FROM {t} WHERE name <> '';\n",
                False)
    if kind == 4:
        return (f"DO $$\nBEGIN\n  IF NOT EXISTS (SELECT 1 FROM {t} WHERE id = 0) THEN\n"
                f"    INSERT INTO {t} (id, name) VALUES (0, 'zero');\n  END IF;\nEND $$;\n",
                False)
    return (f"CREATE RULE {t}_log AS ON DELETE TO {t} DO ALSO "
            f"(UPDATE {t} SET note = 'gone' WHERE id = 0; SELECT 1);\n", False)


def write_corpus(folder: Path, layout: str, n: int = CORPUS) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        sql, no_tx = _body(i)
        marker = "-- plainsail: no-transaction\n" if no_tx else ""
        stamp = f"{20200101000000 + i * 100:014d}"
        if layout == "flat":
            (folder / f"{i + 1:04d}_step_{i}.sql").write_text(marker + sql)
        elif layout in ("diesel", "prisma"):
            name = (f"2020-01-01-{i:06d}_step_{i}" if layout == "diesel"
                    else f"{stamp}_step_{i}")
            d = folder / name
            d.mkdir()
            (d / ("up.sql" if layout == "diesel" else "migration.sql")).write_text(marker + sql)
            if layout == "diesel":
                (d / "down.sql").write_text("SELECT broken syntax here;\n")
        elif layout == "golang-migrate":
            (folder / f"{i + 1:06d}_step_{i}.up.sql").write_text(marker + sql)
            (folder / f"{i + 1:06d}_step_{i}.down.sql").write_text("DROP broken;\n")
        elif layout == "dbmate":
            up = "-- migrate:up transaction:false\n" if no_tx else "-- migrate:up\n"
            (folder / f"{stamp}_step_{i}.sql").write_text(
                up + sql + "\n-- migrate:down\nDROP broken;\n")
        else:
            version = f"{i // 10 + 1}_{i % 10}"
            (folder / f"V{version}__step_{i}.sql").write_text(marker + sql)


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_fixture_applies(layout: str, pg_url: str, pg_connect: Any) -> None:
    result = run(DATA / layout, pg_url)
    assert [a.name for a in result.applied] == [name for _, name in EXPECTED[layout]]
    conn = pg_connect()
    rows = conn.execute("SELECT version, name FROM plainsail_migrations "
                        "ORDER BY applied_at, version").fetchall()
    assert sorted(rows) == sorted(EXPECTED[layout])
    assert run(DATA / layout, pg_url).applied == []


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_generated_history_applies(layout: str, tmp_path: Path, pg_url: str,
                                   pg_connect: Any) -> None:
    folder = tmp_path / layout
    write_corpus(folder, layout)
    assert len(discover(folder)) == CORPUS
    result = run(folder, pg_url)
    assert len(result.applied) == CORPUS
    assert sum(a.no_transaction for a in result.applied) == CORPUS // 6
    conn = pg_connect()
    assert conn.execute("SELECT count(*) FROM plainsail_migrations").fetchone() == (CORPUS,)
    assert conn.execute("SELECT count(*) FROM pg_views WHERE schemaname = 'public'"
                        ).fetchone() == (CORPUS // 6,)
    # Applied in order: each table's index exists and is valid.
    assert conn.execute("SELECT count(*) FROM pg_index i JOIN pg_class c ON "
                        "c.oid = i.indexrelid WHERE c.relname LIKE 't%_name_idx' "
                        "AND i.indisvalid").fetchone() == (CORPUS // 6,)
    opts = Options(folder=folder, database=parse_database_url(pg_url))
    p = status(opts, lambda m: None)
    assert (len(p.applied), p.pending, p.problems) == (CORPUS, [], [])


def test_baseline_adopts_a_database_another_tool_migrated(tmp_path: Path, pg_url: str,
                                                          pg_connect: Any) -> None:
    folder = tmp_path / "diesel"
    write_corpus(folder, "diesel", 12)
    conn = pg_connect()
    # What Diesel did before: the first 6 migrations, with its own bookkeeping.
    for f in discover(folder)[:6]:
        for s in f.statements:
            conn.execute(s.text)
    opts = Options(folder=folder, database=parse_database_url(pg_url))
    with pytest.raises(MigrationError, match="--to 2020: no migration"):
        baseline(opts, "2020", lambda m: None, lambda m: None)
    # Diesel's table records 2020-01-01-000005 as 20200101000005: either spelling works.
    recorded = baseline(opts, "20200101000005", lambda m: None, lambda m: None)
    assert [f.name for f in recorded][-1] == "2020-01-01-000005_step_5"
    rows = conn.execute("SELECT count(*), sum(execution_ms), bool_and(applied_by LIKE "
                        "'%baseline') FROM plainsail_migrations").fetchone()
    assert rows == (6, 0, True)
    result = run(folder, pg_url)
    assert [a.name for a in result.applied][0] == "2020-01-01-000006_step_6"
    with pytest.raises(MigrationError, match="already records 12 applied"):
        baseline(opts, "2020-01-01-000005", lambda m: None, lambda m: None)


def test_baseline_cli(tmp_path: Path, pg_url: str) -> None:
    folder = tmp_path / "flyway"
    write_corpus(folder, "flyway", 4)
    r = plainsail("migrate", "baseline", "--dir", str(folder), "--database-url", pg_url)
    assert r.code == 2 and "needs --to VERSION" in r.err
    r = plainsail("migrate", "baseline", "--to", "1.1", "--json", "--dir", str(folder),
                  "--database-url", pg_url)
    assert r.code == 0, r.err
    assert [b["version"] for b in json.loads(r.out)["baseline"]] == ["1.0", "1.1"]
    r = plainsail("migrate", "status", "--dir", str(folder), "--database-url", pg_url,
                  env={"PLAINSAIL_MIGRATIONS_LAYOUT": "flyway"})
    assert r.code == 0 and "2 applied, 2 pending" in r.out
