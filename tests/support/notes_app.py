"""The example app (examples/notes-api) for the tests: its image built once per session
from a copy of the example plus a freshly built plainsail wheel, and throwaway PostgreSQL
databases on the local server. Every name is unique per run, so runs never collide."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "examples" / "notes-api"
BASE_IMAGE = os.environ.get("PLAINSAIL_BASE_IMAGE", "plainsail-base:bookworm")
TEST_LABEL = "plainsail.test"  # on every image and container the tests make

PG_HOST = os.environ.get("PLAINSAIL_TEST_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PLAINSAIL_TEST_PGPORT", "5432"))
PG_USER = os.environ.get("PLAINSAIL_TEST_PGUSER", "plainsail")
PG_PASSWORD = os.environ.get("PLAINSAIL_TEST_PGPASSWORD", "plainsail")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- image


def build_plainsail_wheel(dest: Path) -> Path:
    """Build plainsail's wheel into `dest` from a copy of the source (the tree stays clean)."""
    with tempfile.TemporaryDirectory(prefix="pswheel-") as tmp:
        src = Path(tmp) / "plainsail"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(ROOT / "src", src / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        # Offline when this environment already has the build backend; else pip fetches it.
        offline = all(importlib.util.find_spec(m) for m in ("setuptools", "wheel"))
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
             *(["--no-build-isolation"] if offline else []), "-w", str(dest), str(src)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            pytest.fail(f"building plainsail's wheel failed:\n{result.stdout}{result.stderr}")
    wheels = sorted(dest.glob("plainsail-*.whl"))
    assert wheels, f"no plainsail wheel in {dest}"
    return wheels[-1]


def copy_example(dest: Path, wheel: Path | None = None) -> Path:
    """Copy the example app to `dest` (a new folder), with `wheel` in its wheels/."""
    shutil.copytree(EXAMPLE_DIR, dest,
                    ignore=shutil.ignore_patterns("__pycache__", "wheels", "cosign.key"))
    (dest / "wheels").mkdir()
    if wheel is not None:
        shutil.copy2(wheel, dest / "wheels" / wheel.name)
    return dest


def docker_build(context: Path, tag: str, base_image: str = BASE_IMAGE) -> None:
    result = subprocess.run(
        ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base_image}",
         "--label", f"{TEST_LABEL}=notes-api", "-t", tag, str(context)],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"docker build of {context} failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def plainsail_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plainsail's wheel, built once per session."""
    return build_plainsail_wheel(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="session")
def notes_image(
    plainsail_wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The example app's image (on the local base image), built once; removed at the end."""
    context = copy_example(tmp_path_factory.mktemp("notes-api") / "app", plainsail_wheel)
    tag = f"{unique('plainsail-test-notes-api')}:1"
    docker_build(context, tag)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


# ---------------------------------------------------------------- database


def psql(dbname: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run psql as the test superuser; stops at the first error."""
    env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p", str(PG_PORT),
         "-U", PG_USER, "-d", dbname, *args],
        capture_output=True, text=True, check=check, env=env, timeout=60,
    )


@dataclass(frozen=True)
class Database:
    name: str

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{self.name}"

    def url_with(self, *, password: str) -> str:
        return f"postgresql://{PG_USER}:{password}@{PG_HOST}:{PG_PORT}/{self.name}"

    def query(self, sql: str) -> str:
        return psql(self.name, "-tA", "-c", sql).stdout.strip()

    def apply_migrations(self, folder: Path = EXAMPLE_DIR / "migrations") -> list[str]:
        """Apply every NNNN_*.sql file and record it as plainsail does, in ONE transaction.

        A stand-in for `plainsail migrate` (which runs each file in its own transaction);
        it writes the same bookkeeping the app reads: plainsail_migrations.version.
        """
        files = sorted(folder.glob("[0-9]*.sql"))
        args = ["-1", "-c",
                "CREATE TABLE IF NOT EXISTS plainsail_migrations "
                "(version text PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"]
        for f in files:
            version = f.name.split("_", 1)[0]
            args += ["-f", str(f), "-c",
                     f"INSERT INTO plainsail_migrations (version, name) "
                     f"VALUES ('{version}', '{f.name}')"]
        psql(self.name, *args)
        return [f.name for f in files]


def create_database(prefix: str = "plainsail_test") -> Database:
    db = Database(f"{prefix}_{uuid.uuid4().hex[:12]}")
    psql("postgres", "-c", f'CREATE DATABASE "{db.name}"')
    return db


def drop_database(db: Database) -> None:
    psql("postgres", "-c", f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)', check=False)


@pytest.fixture
def notes_database() -> Iterator[Database]:
    """A new, empty database on the local PostgreSQL, dropped after the test."""
    if not shutil.which("psql"):
        pytest.fail("psql is not installed; run scripts/setup.sh")
    db = create_database()
    try:
        yield db
    finally:
        drop_database(db)
