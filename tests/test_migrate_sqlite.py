"""The migration runner on SQLite, the embedded default (standard library sqlite3)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from plainsail.errors import MigrationError
from tests.migrate_helpers import run, write

SRC = str(Path(__file__).resolve().parents[1] / "src")


def schema(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_apply_and_record(tmp_path: Path) -> None:
    mig, db = tmp_path / "migrations", tmp_path / "app.db"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\n")
    write(mig, "0002_t.sql", "CREATE TRIGGER a_t AFTER INSERT ON a BEGIN "
                             "UPDATE a SET x = x + 1; END;\n")
    result = run(mig, f"sqlite:///{db}")
    assert [a.name for a in result.applied] == ["0001_a.sql", "0002_t.sql"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version, name FROM plainsail_migrations ORDER BY 1"
                            ).fetchall() == [("0001", "0001_a.sql"), ("0002", "0002_t.sql")]
    assert run(mig, str(db)).applied == []  # a plain path is SQLite too


def test_failing_file_rolls_back_ddl_and_data(tmp_path: Path) -> None:
    mig, db = tmp_path / "migrations", tmp_path / "app.db"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int NOT NULL);\nINSERT INTO a VALUES (1);\n")
    run(mig, str(db))
    before = schema(db)
    write(mig, "0002_b.sql", "CREATE TABLE b (x int);\nALTER TABLE a ADD COLUMN y int;\n"
                             "INSERT INTO a VALUES (2, 2);\nDROP TABLE a;\nINSERT INTO nope "
                             "VALUES (1);\n")
    with pytest.raises(MigrationError, match="0002_b.sql: statement 5 of 5 .*no such table"):
        run(mig, str(db))
    assert schema(db) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM a").fetchall() == [(1,)]
        assert conn.execute("SELECT count(*) FROM plainsail_migrations").fetchone() == (1,)


def test_drift_is_refused(tmp_path: Path) -> None:
    mig, db = tmp_path / "migrations", tmp_path / "app.db"
    f = write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    run(mig, str(db))
    f.write_text("CREATE TABLE a (y int);\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        run(mig, str(db))


def test_two_runners_apply_each_file_once(tmp_path: Path) -> None:
    mig, db = tmp_path / "migrations", tmp_path / "app.db"
    write(mig, "0000_log.sql", "CREATE TABLE log (n int);\n")
    for i in range(1, 21):
        write(mig, f"{i:04d}_x.sql", f"INSERT INTO log VALUES ({i});\n")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "plainsail", "migrate", "--dir", str(mig)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT n) FROM log").fetchone() == (20, 20)


@pytest.mark.parametrize("runners", [2, 3])
def test_racing_runners_over_every_kind_of_file(tmp_path: Path, runners: int) -> None:
    """Ordinary files, files wrapped in BEGIN/COMMIT, lone and marked VACUUMs (which run
    outside a transaction), goose files: each applied and recorded once, every run exits 0."""
    mig, db = tmp_path / "migrations", tmp_path / "app.db"
    write(mig, "0000_log.sql", "CREATE TABLE log (n int);\n")
    kinds = ["INSERT INTO log VALUES ({i});\n",
             "BEGIN;\nINSERT INTO log VALUES ({i});\nCOMMIT;\n",
             "VACUUM;\n",
             "-- plainsail: no-transaction\nVACUUM;\n",
             "-- +goose Up\nINSERT INTO log VALUES ({i});\n-- +goose Down\nDELETE FROM log;\n"]
    for i in range(1, 31):
        write(mig, f"{i:04d}_x.sql", kinds[i % len(kinds)].format(i=i))
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "plainsail", "migrate", "--dir", str(mig)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(runners)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * runners, outs
    applied = [line for out, _ in outs for line in out.splitlines() if "  applied " in line]
    assert len(applied) == 31, outs
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM plainsail_migrations").fetchone() == (31,)
        assert conn.execute("SELECT count(*), count(DISTINCT n) FROM log").fetchone() == (18, 18)
