"""Runners that race, and runners whose lock wait goes wrong, against a real PostgreSQL.

Each runner is its own `python -m plainsail migrate` process, as in two containers
started by two deploys at once.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plainsail.migrations.postgres import LOCK_KEY
from tests.migrate_helpers import write
from tests.support.postgres import database_url

pytestmark = pytest.mark.integration

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Every kind of file the runner applies: ordinary ones, each no-transaction kind, a file
# wrapped in BEGIN/COMMIT, lone statements that need no marker, another runner's marker.
HISTORY = {
    "0001_items.sql": "CREATE TABLE items (id int PRIMARY KEY, v int, note text);\n"
                      "INSERT INTO items SELECT g, g % 7, 'n' FROM generate_series(1, 2000) g;\n",
    "0002_idx.sql": "-- plainsail: no-transaction\n"
                    "CREATE INDEX CONCURRENTLY items_v ON items (v);\n",
    "0003_col.sql": "ALTER TABLE items ADD COLUMN w int;\nUPDATE items SET w = v * 2;\n",
    "0004_batches.sql": "-- plainsail: no-transaction\n"
                        "DO $$\nBEGIN\n  FOR i IN 0..3 LOOP\n"
                        "    UPDATE items SET note = 'b' WHERE id % 4 = i;\n    COMMIT;\n"
                        "  END LOOP;\nEND $$;\n",
    "0005_uidx.sql": "-- plainsail: no-transaction\n"
                     "CREATE UNIQUE INDEX CONCURRENTLY items_id_w ON items (id, w);\n",
    "0006_vacuum.sql": "-- plainsail: no-transaction\nVACUUM ANALYZE items;\n",
    "0007_drop_idx.sql": "-- plainsail: no-transaction\n"
                         "DROP INDEX CONCURRENTLY items_v;\n",
    "0008_more.sql": "CREATE TABLE tags (id int);\nINSERT INTO tags VALUES (1), (2);\n",
    "0009_reindex.sql": "-- plainsail: no-transaction\n"
                        "REINDEX INDEX CONCURRENTLY items_id_w;\n",
    "0010_wrapped.sql": "BEGIN;\nALTER TABLE tags ADD COLUMN n text;\nUPDATE tags SET n = 'x';\n"
                        "COMMIT;\n",
    "0011_lone_idx.sql": "CREATE INDEX CONCURRENTLY tags_n ON tags (n);\n",
    "0012_goose.sql": "-- +goose Up\n-- +goose NO TRANSACTION\n"
                      "DROP INDEX CONCURRENTLY tags_n;\n-- +goose Down\nDROP TABLE items;\n",
    "0013_lone_do.sql": "DO $$\nBEGIN\n  UPDATE items SET w = 0 WHERE id <= 1000;\n  COMMIT;\n"
                        "  UPDATE items SET w = 0 WHERE id > 1000;\nEND $$;\n",
}


def runner(folder: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(PYTHONPATH=SRC, DATABASE_URL=url)
    return subprocess.Popen(
        [sys.executable, "-m", "plainsail", "migrate", "--dir", str(folder), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("runners", [2, 3])
def test_racing_runners_over_every_kind_of_file(tmp_path: Path, pg_url: str,
                                                pg_connect: Any, runners: int) -> None:
    mig = tmp_path / "migrations"
    for name, sql in HISTORY.items():
        write(mig, name, sql)
    procs = [runner(mig, pg_url) for _ in range(runners)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * runners, outs
    applied = [line for out, _ in outs for line in out.splitlines() if "  applied " in line]
    assert len(applied) == len(HISTORY), outs  # each file applied by exactly one runner
    conn = pg_connect()
    rows = conn.execute("SELECT name FROM public.plainsail_migrations ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == sorted(HISTORY)
    assert conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone() \
        == (0,)
    assert conn.execute("SELECT count(*), count(*) FILTER (WHERE note = 'b'), "
                        "count(*) FILTER (WHERE w = 0) FROM items").fetchone() \
        == (2000, 2000, 2000)
    assert conn.execute("SELECT to_regclass('tags_n')").fetchone() == (None,)


def _waiting_backend(conn: Any, holder_pid: int) -> int:
    """The pid of the runner's session, once it is waiting for the migration lock."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'plainsail migrate' "
            "AND pid <> %s AND datname = current_database()", (holder_pid,)).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.05)
    raise AssertionError("the runner never connected")


def test_database_going_away_while_waiting_is_one_line(tmp_path: Path, pg_url: str,
                                                       pg_connect: Any) -> None:
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    holder = pg_connect()
    holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    holder_pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]
    proc = runner(mig, pg_url, "--wait", "60s")
    admin = pg_connect()
    pid = _waiting_backend(admin, holder_pid)
    time.sleep(0.5)  # well inside the wait
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err and "crash" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: lost the connection to ") and \
        "while waiting for the migration lock" in lines[0]
    assert admin.execute("SELECT to_regclass('public.a')").fetchone() == (None,)


@pytest.fixture
def two_roles(pg_admin: Any, pg_url: str) -> Iterator[tuple[str, str]]:
    """Database URLs of two ordinary roles (no superuser, no pg_read_all_stats), so each
    sees the other's sessions in pg_stat_activity with NULL details."""
    tag = secrets.token_hex(4)
    names = [f"ps_runner_{tag}", f"ps_other_{tag}"]
    db = pg_url.rsplit("/", 1)[1]
    for n in names:
        pg_admin.execute(f"CREATE ROLE {n} LOGIN PASSWORD 'pw'")
        pg_admin.execute(f"GRANT ALL ON DATABASE {db} TO {n}")
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f"GRANT ALL ON SCHEMA public TO {names[0]}")
    base = database_url(db)
    urls = tuple(base.replace("plainsail:plainsail@", f"{n}:pw@") for n in names)
    try:
        yield urls[0], urls[1]
    finally:
        pg_admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        for n in names:
            pg_admin.execute(f"DROP ROLE IF EXISTS {n}")


def test_lock_held_by_another_role_is_one_line(tmp_path: Path, two_roles: tuple[str, str],
                                               pg_connect: Any) -> None:
    import psycopg

    runner_url, other_url = two_roles
    mig = tmp_path / "migrations"
    write(mig, "0001_a.sql", "CREATE TABLE a (x int);\n")
    with psycopg.connect(other_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        proc = runner(mig, runner_url, "--wait", "0.5s")
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err and "crash" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "another migration runner (pid " in lines[0] and "ps_other_" in lines[0]
    assert "still held the migration lock after 0.5s" in lines[0]
    assert "waiting for another migration runner" in out
