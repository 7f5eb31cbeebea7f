"""Benchmarks for backups (docs/backups.md).

1. Backup: the deploy's backup step (pg_dump -Fc in a temporary container, the row counts
   read back from the dump, size and SHA-256, the description written) against plain
   `pg_dump -Fc` in the same image on the same data. Goal: within 1.1x.
2. Restore: `backup restore --into` (checksum, CREATE DATABASE, pg_restore in one
   transaction) against plain `pg_restore` into an empty database. Goal: within 1.1x.
3. Deploy overhead when no migration is pending: the policy's decision and the plan with
   and without a backup block (goal: none: no step, no container, no round trip).

The data set is one table of random text rows; --mb sets its size (default 50 MB, about
a minute here; the issue's figure is for --mb 1000).

Usage: python bench/backup_bench.py [--mb 50] [--runs 3] [--image plainsail-pgclient:bookworm]
       [--admin-url postgresql://plainsail:plainsail@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from plainsail.backup import host as backuphost
from plainsail.backup import policy
from plainsail.backup import restore as restorelib
from plainsail.config import model as configlib
from plainsail.deploy import schemagate
from plainsail.hosts.addresses import parse_host
from plainsail.hosts.executor import LocalExecutor
from plainsail.hosts.state import Paths

FAKE_PIN = "@sha256:" + "0" * 64


def with_db(admin: str, name: str) -> str:
    u = urlsplit(admin)
    return urlunsplit((u.scheme, u.netloc, f"/{name}", u.query, u.fragment))


def fill(url: str, mb: int) -> None:
    rows = mb * 1024 * 1024 // 200  # about 200 bytes a row on disk
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE data (id bigint PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO data SELECT g, md5(random()::text) || md5(random()::text) "
                     "|| md5(random()::text) || md5(random()::text) FROM "
                     "generate_series(1, %s) g", (rows,))
        conn.execute("ANALYZE data")


def timed(argv: list[str], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True)
        best = min(best, time.monotonic() - start)
    return best


def unpin(argv: list[str], image: str) -> list[str]:
    return [image if a == image.split(":")[0] + ":x" + FAKE_PIN else a for a in argv]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50, help="size of the data set (MB)")
    ap.add_argument("--runs", type=int, default=3, help="best of N runs of each backup")
    ap.add_argument("--image", default="plainsail-pgclient:bookworm")
    ap.add_argument("--admin-url",
                    default="postgresql://plainsail:plainsail@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    name = f"bench_backup_{secrets.token_hex(3)}"
    admin = psycopg.connect(args.admin_url, autocommit=True)
    admin.execute(f"CREATE DATABASE {name}")
    url = with_db(args.admin_url, name)
    made = [name]
    tmp = Path(tempfile.mkdtemp(prefix="plainsail-backup-bench-"))
    try:
        t0 = time.monotonic()
        fill(url, args.mb)
        size = admin.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0]
        print(f"data set: {size / 1e6:.0f} MB in {name} "
              f"(filled in {time.monotonic() - t0:.0f}s)")
        env = tmp / "env"
        env.write_text(f"DATABASE_URL={url}\n")
        env.chmod(0o600)
        paths = Paths(str(tmp))
        fake_image = args.image.split(":")[0] + ":x" + FAKE_PIN
        cfg = configlib.parse(
            f"service: bench\nimage: r.example.com/bench\napp:\n  secrets: [DATABASE_URL]\n"
            f"backup:\n  image: {fake_image}\n  keep: 2\n", tmp / "plainsail.yml", {})
        ex = LocalExecutor(parse_host("local"))

        # 1. backup
        out = tmp / "plain"
        out.mkdir()
        plain_dump = ["docker", "run", "--rm", "--network", "host", "--env-file", str(env),
                      "--volume", f"{out}:/out", args.image, "sh", "-c",
                      'pg_dump -Fc --no-password --dbname="$DATABASE_URL" -f /out/x.dump']
        t_plain = timed(plain_dump, args.runs)
        best, record = float("inf"), None
        for _ in range(args.runs):
            bid = backuphost.new_id()
            argv = unpin(backuphost.take_argv(cfg, paths, bid, "bench", "host"), args.image)
            start = time.monotonic()
            taken = backuphost.take(ex, cfg, paths, argv, bid, "bench", 3600)
            best = min(best, time.monotonic() - start)
            record = taken.record
        assert record is not None
        print(f"backup: plain pg_dump -Fc {t_plain:.2f}s, plainsail backup step {best:.2f}s "
              f"({best / t_plain:.2f}x; goal 1.1x); dump {record['size'] / 1e6:.1f} MB, "
              f"{sum(record['tables'].values())} rows counted")

        # 2. restore
        plain_db = f"{name}_plain"
        start = time.monotonic()
        admin.execute(f"CREATE DATABASE {plain_db}")
        created = time.monotonic() - start
        made.append(plain_db)
        plain_restore = ["docker", "run", "--rm", "--network", "host", "--volume",
                         f"{out}:/out:ro", args.image, "pg_restore", "--no-owner",
                         "--single-transaction", "-d", with_db(args.admin_url, plain_db),
                         "/out/x.dump"]
        start = time.monotonic()
        subprocess.run(plain_restore, check=True, capture_output=True)
        r_plain = time.monotonic() - start + created
        into = f"{name}_into"
        made.append(into)
        argv = unpin(restorelib.restore_argv(cfg, paths, record, into, "keep", "host"),
                     args.image)
        start = time.monotonic()
        restorelib.run_restore(ex, argv, 3600)
        r_ours = time.monotonic() - start
        print(f"restore into a new database: plain CREATE DATABASE + pg_restore "
              f"{r_plain:.2f}s, plainsail restore --into {r_ours:.2f}s "
              f"({r_ours / r_plain:.2f}x; goal 1.1x; ours adds the checksum and the "
              "existence check)")

        # 3. deploy overhead with nothing pending
        gate = schemagate.Gate(kind="deploy", ran=True, files=[])
        n = 100_000
        start = time.perf_counter()
        for _ in range(n):
            policy.reason(cfg, gate, True)
        per = (time.perf_counter() - start) / n
        none_cfg = dataclasses.replace(cfg, backup=None)
        assert policy.reason(cfg, gate, True) is None is policy.reason(none_cfg, gate, True)
        print(f"deploy with nothing pending: no backup step, no container, no SSH round "
              f"trip; the decision takes {per * 1e6:.2f} us")
    finally:
        for db in made:
            admin.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
