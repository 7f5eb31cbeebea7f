"""Benchmarks for the migration runner and the lint.

1. Apply 300 small migration files to an empty PostgreSQL database:
   `plainsail migrate` (one process) against `psql -1 -f FILE` per file (what a shell
   script would do). Target: plainsail within 1.5x of psql.
2. Lint a corpus of 300 files: `plainsail lint migrations` against squawk
   (`pip install squawk-cli`), both as one process over the whole folder.

Usage: python bench/migrate_bench.py [--admin-url postgresql://user:pw@host/postgres]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

N = 300


def make_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N):
        t = f"t{i // 3}"
        kind = i % 3
        if kind == 0:
            sql = (f"CREATE TABLE {t} (id bigint PRIMARY KEY, name text NOT NULL);\n"
                   f"INSERT INTO {t} VALUES (1, 'one'), (2, 'two');\n")
        elif kind == 1:
            sql = (f"ALTER TABLE {t} ADD COLUMN note text DEFAULT 'n/a';\n"
                   f"CREATE INDEX {t}_name ON {t} (name);\n"
                   f"UPDATE {t} SET note = 'x' WHERE id = 1;\n")
        else:
            sql = (f"CREATE VIEW {t}_v AS SELECT id, name FROM {t};\n"
                   f"ALTER TABLE {t} ADD CONSTRAINT {t}_name_len CHECK (length(name) < 200);\n")
        (folder / f"{i:04d}_step.sql").write_text(sql)


def db_url(admin: str, name: str) -> str:
    p = urlsplit(admin)
    return urlunsplit((p.scheme, p.netloc, f"/{name}", p.query, ""))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_plainsail(folder: Path, url: str) -> None:
    subprocess.run([sys.executable, "-m", "plainsail", "migrate", "--dir", str(folder),
                    "--database-url", url], check=True, stdout=subprocess.DEVNULL)


def run_psql(folder: Path, url: str) -> None:
    for f in sorted(folder.glob("*.sql")):
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(f), url],
                       check=True, stdout=subprocess.DEVNULL)


def bench_apply(admin: str, folder: Path, rounds: int) -> tuple[float, float]:
    admin_conn = psycopg.connect(admin, autocommit=True)
    best_ps, best_psql = float("inf"), float("inf")
    try:
        for _ in range(rounds):
            for tool in ("plainsail", "psql"):
                name = f"ps_bench_{secrets.token_hex(4)}"
                admin_conn.execute(f"CREATE DATABASE {name}")
                url = db_url(admin, name)
                try:
                    if tool == "plainsail":
                        best_ps = min(best_ps, timed(partial(run_plainsail, folder, url)))
                    else:
                        best_psql = min(best_psql, timed(partial(run_psql, folder, url)))
                finally:
                    admin_conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin_conn.close()
    return best_ps, best_psql


def lint_corpus(folder: Path) -> None:
    """300 files mixing safe changes and hazards both tools know."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = [
        "SET lock_timeout = '2s';\nALTER TABLE users ADD COLUMN c{i} text;\n",
        "CREATE INDEX users_c{i} ON users (email);\n",
        "ALTER TABLE users DROP COLUMN c{i};\n",
        "ALTER TABLE users ALTER COLUMN c{i} TYPE bigint;\n",
        "ALTER TABLE orders ADD CONSTRAINT fk{i} FOREIGN KEY (u) REFERENCES users (id);\n",
        "CREATE TABLE t{i} (id bigint PRIMARY KEY, name text NOT NULL DEFAULT '');\n"
        "CREATE INDEX t{i}_name ON t{i} (name);\n",
    ]
    for i in range(N):
        (folder / f"{i:04d}_m.sql").write_text(samples[i % len(samples)].format(i=i))


def bench_lint(folder: Path, rounds: int) -> tuple[float, float | None]:
    ps_cmd = [sys.executable, "-m", "plainsail", "lint", "migrations", str(folder),
              "--format", "json"]
    squawk = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    files = [str(p) for p in sorted(folder.glob("*.sql"))]
    best_ps, best_sq = float("inf"), float("inf")
    have_squawk = Path(squawk).exists()
    for _ in range(rounds):
        best_ps = min(best_ps, timed(lambda: subprocess.run(ps_cmd, stdout=subprocess.DEVNULL)))
        if have_squawk:
            best_sq = min(best_sq, timed(lambda: subprocess.run(
                [squawk, *files], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return best_ps, (best_sq if have_squawk else None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--admin-url", default=os.environ.get(
        "PLAINSAIL_TEST_PG", "postgresql://plainsail:plainsail@127.0.0.1:5432/postgres"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    env_url = urlsplit(args.admin_url)
    if env_url.password:
        os.environ.setdefault("PGPASSWORD", env_url.password)
    with tempfile.TemporaryDirectory(prefix="ps-bench-") as tmp:
        mig, corpus = Path(tmp) / "migrations", Path(tmp) / "lint"
        make_corpus(mig)
        lint_corpus(corpus)
        ps, psql = bench_apply(args.admin_url, mig, args.rounds)
        print(f"apply {N} files to an empty PostgreSQL (best of {args.rounds}):")
        print(f"  plainsail migrate      {ps:7.2f}s  ({ps / N * 1000:.1f} ms/file)")
        print(f"  psql -1 -f per file    {psql:7.2f}s  ({psql / N * 1000:.1f} ms/file)")
        print(f"  ratio plainsail/psql   {ps / psql:7.2f}x  (target <= 1.5x)")
        lp, sq = bench_lint(corpus, args.rounds)
        print(f"lint {N} files (best of {args.rounds}):")
        print(f"  plainsail lint         {lp:7.2f}s")
        if sq is None:
            print("  squawk                 not installed (pip install squawk-cli)")
        else:
            print(f"  squawk                 {sq:7.2f}s")
            print(f"  ratio plainsail/squawk {lp / sq:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
