"""`python -m plainsail ...` as a user runs it: exit codes, one-line errors, no tracebacks,
and the migrate code path importing only what Debian's python3 packages provide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def plainsail(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(PYTHONPATH=SRC, PLAINSAIL_LINT_CACHE="off")
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "plainsail", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_migrate_without_config_from_env(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_a.sql").write_text("CREATE TABLE a (x int);\n")
    r = plainsail("migrate", cwd=tmp_path, DATABASE_URL="sqlite:///app.db")
    assert r.returncode == 0, r.stderr
    assert "applied 0001_a.sql" in r.stdout
    r = plainsail("migrate", "status", cwd=tmp_path, DATABASE_URL="sqlite:///app.db")
    assert r.returncode == 0 and "1 applied, 0 pending" in r.stdout


def test_failure_is_one_line_without_traceback(tmp_path: Path) -> None:
    mig = tmp_path / "sql"
    mig.mkdir()
    (mig / "0001_a.sql").write_text("CREATE TABLE a (x int);\nCREATE TABLE a (x int);\n")
    r = plainsail("migrate", cwd=tmp_path, DATABASE_URL=str(tmp_path / "x.db"),
                  PLAINSAIL_MIGRATIONS=str(mig))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 0001_a.sql: statement 2 of 2 "
                                                   "(line 2) failed: table a already exists")


@pytest.mark.integration
def test_postgres_failure_hides_password(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_a.sql").write_text("SELECT 1;\n")
    bad = pg_url.replace(":plainsail@", ":Hunter2-x@")
    r = plainsail("migrate", cwd=tmp_path, DATABASE_URL=bad)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "Hunter2-x" not in r.stderr + r.stdout and ":***@" in r.stderr


def test_mysql_is_refused_and_warned(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    url = "mysql://app:pw1234@db/app"
    r = plainsail("migrate", cwd=tmp_path, DATABASE_URL=url)
    assert r.returncode == 1 and "commit every DDL statement on their own" in r.stderr
    assert "pw1234" not in r.stderr
    r = plainsail("migrate", "--allow-non-transactional-ddl", cwd=tmp_path, DATABASE_URL=url)
    assert r.returncode == 1 and r.stderr.startswith("warning: MySQL and MariaDB commit")


def test_bad_duration_is_a_usage_error(tmp_path: Path) -> None:
    r = plainsail("migrate", "--lock-timeout", "soon", cwd=tmp_path, DATABASE_URL="x.db")
    assert r.returncode == 2 and r.stderr.startswith("error: --lock-timeout:")


def test_lint_cli_exit_codes(tmp_path: Path) -> None:
    pytest.importorskip("pglast")
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001.sql").write_text("DROP TABLE users;\n")
    r = plainsail("lint", "migrations", cwd=tmp_path)
    assert r.returncode == 1 and "error drop-table" in r.stdout and not r.stderr
    r = plainsail("lint", "migrations", "missing/", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_migrate_imports_only_stdlib_psycopg_and_yaml() -> None:
    code = (
        "import sys\n"
        "import plainsail.cli, plainsail.commands.migrate, plainsail.migrations.postgres, "
        "plainsail.migrations.sqlite\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'pglast', 'httpx', "
        "'cryptography', 'httpcore', 'anyio', 'idna', 'certifi'})\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC},
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


@pytest.mark.parametrize("action", ["status", "up", "baseline"])
def test_json_always_prints_json(tmp_path: Path, action: str) -> None:
    import json

    mig = tmp_path / "migrations"
    mig.mkdir()
    (mig / "0001_a.sql").write_text("CREATE TABLE a (x int);\n")
    (mig / "0001_b.sql").write_text("CREATE TABLE b (x int);\n")  # ambiguous: refused
    # A folder the runner refuses, a database it cannot open, a bad flag.
    for args, env in (([], {"DATABASE_URL": "sqlite:///app.db"}),
                      ([], {"DATABASE_URL": "sqlite:////no/such/dir/app.db"}),
                      (["--wait", "soon"], {"DATABASE_URL": "sqlite:///app.db"}),
                      ([], {})):
        if env.get("DATABASE_URL", "").startswith("sqlite:////no"):
            (mig / "0001_b.sql").unlink()
        extra = ["--to", "0001"] if action == "baseline" else []
        r = plainsail("migrate", action, "--json", *extra, *args, cwd=tmp_path, **env)
        assert r.returncode in (1, 2), r
        doc = json.loads(r.stdout)
        assert doc["ok"] is False and doc["error"], doc
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: ")


def test_status_lists_applied_and_pending_in_one_order() -> None:
    from plainsail.migrations.files import MigrationFile
    from plainsail.migrations.ledger import AppliedRow, compare

    def f(name: str, n: int) -> MigrationFile:
        return MigrationFile(Path(name), name, str(n), "", f"c{n}", order=(0, (n,), name))

    files = [f("2_b.sql", 2), f("10_a.sql", 10), f("11_c.sql", 11), f("100_d.sql", 100)]
    rows = [AppliedRow(x.version, x.name, x.checksum, "t", 0, "me") for x in files[:2]]
    # By name, 10_a.sql would come before 2_b.sql, though it ran after it.
    ledger = compare(files, list(reversed(rows)))
    assert [r.name for r in ledger.applied] == ["2_b.sql", "10_a.sql"]
    assert [p.name for p in ledger.pending] == ["11_c.sql", "100_d.sql"]


def test_control_characters_in_file_names_are_escaped(tmp_path: Path) -> None:
    mig = tmp_path / "migrations"
    mig.mkdir()
    forged = "0002_x\nerror: forged line\x1b[31m.sql"
    (mig / "0001_a.sql").write_text("CREATE TABLE a (x int);\n")
    (mig / forged).write_text("CREATE TABLE b (x int);\n")
    r = plainsail("migrate", cwd=tmp_path, DATABASE_URL="sqlite:///app.db")
    assert r.returncode == 0, r.stderr
    assert "forged line" in r.stdout and "\x1b" not in r.stdout
    assert not any(line.startswith("error: forged") for line in r.stdout.splitlines())
    assert r"applied 0002_x\nerror: forged line\x1b[31m.sql" in r.stdout
    import sqlite3

    with sqlite3.connect(tmp_path / "app.db") as db:
        names = [n for (n,) in db.execute("SELECT name FROM plainsail_migrations")]
    assert names == ["0001_a.sql", r"0002_x\nerror: forged line\x1b[31m.sql"]
    r = plainsail("migrate", "status", cwd=tmp_path, DATABASE_URL="sqlite:///app.db")
    assert r.returncode == 0 and "2 applied, 0 pending" in r.stdout, r.stdout
    assert len(r.stdout.strip().splitlines()) == 4
    (mig / forged).write_text("CREATE TABLE b (x bigint);\n")
    r = plainsail("migrate", cwd=tmp_path, DATABASE_URL="sqlite:///app.db")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = plainsail("lint", "migrations", str(mig / forged), cwd=tmp_path)
    assert "\x1b" not in r.stdout and "\nerror: forged" not in r.stdout


def test_shown_keeps_printable_names() -> None:
    from plainsail.migrations.files import shown

    assert shown("0001_ä b\\c.sql") == "0001_ä b\\c.sql"
    assert shown("a\tb\\\u2028.sql") == "a\\tb\\\\\\u2028.sql"
    assert shown(shown("x\ny")) == shown("x\ny")


def test_a_runner_bug_prints_its_details_on_stderr(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The crash file is lost with the --rm container: the details go to stderr too."""
    import plainsail.commands.migrate as command
    from plainsail.cli import main

    def boom(args: object) -> int:
        raise RuntimeError("unexpected state in the runner")

    monkeypatch.setattr(command, "run", boom)
    assert main(["migrate", "status"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: plainsail hit an unexpected RuntimeError; this is a bug")
    assert "Traceback" in err and "unexpected state in the runner" in err


def test_applied_files_need_not_be_runnable_by_plainsail(tmp_path: Path) -> None:
    """A five-year-old history keeps its old files as they are: one another runner applied
    outside a transaction with several statements is baselined, never run, never refused;
    a pending file like it is refused, as a problem status lists."""
    mig = tmp_path / "migrations"
    mig.mkdir()
    old = "-- +goose NO TRANSACTION\nCREATE TABLE a (x int);\nCREATE TABLE b (x int);\n"
    (mig / "0001_old.sql").write_text(old)
    (mig / "0002_new.sql").write_text("CREATE TABLE c (x int);\n")
    env = {"DATABASE_URL": "sqlite:///app.db"}
    r = plainsail("migrate", "status", cwd=tmp_path, **env)
    assert r.returncode == 1 and "0001_old.sql is marked no-transaction but holds 2" in r.stdout
    r = plainsail("migrate", "baseline", "--to", "0001", cwd=tmp_path, **env)
    assert r.returncode == 0, r.stderr
    r = plainsail("migrate", cwd=tmp_path, **env)
    assert r.returncode == 0 and "applied 0002_new.sql" in r.stdout, r.stderr
    (mig / "0003_bad.sql").write_text(old.replace(" a ", " d ").replace(" b ", " e "))
    r = plainsail("migrate", cwd=tmp_path, **env)
    assert r.returncode == 1 and "0003_bad.sql is marked no-transaction" in r.stderr
    assert "0001_old" not in r.stderr
