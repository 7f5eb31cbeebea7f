"""The read-only commands: `logs` hides the app's secrets."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from plainsail import docker
from tests.support.cli import plainsail

IMAGE = "r.example.com/acme/api"


# ---------------------------------------------------------------- logs


@pytest.fixture
def logging_app(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A running container of a service on this machine that logs its secrets."""
    service = f"logs-{uuid.uuid4().hex[:8]}"
    token, password = f"tok-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    env = {"APP_TOKEN": token, "DATABASE_URL": f"postgresql://app:{password}@db:5432/app"}
    (tmp_path / "plainsail.yml").write_text(
        f"service: {service}\nimage: {IMAGE}\nsigning: {{verify: false}}\nhosts: [local]\n"
        "app:\n  secrets: [APP_TOKEN, DATABASE_URL]\n")
    name = f"{service}-a3f1b2c3"
    started = subprocess.run(
        ["docker", "run", "--detach", "--name", name,
         "--label", f"{docker.LABEL_SERVICE}={service}",
         "--label", f"{docker.LABEL_TAG}=a3f1b2c3",
         "--env", "APP_TOKEN", "--env", "DATABASE_URL",
         "plainsail-base:bookworm", "sh", "-c",
         'echo "token=$APP_TOKEN"; echo "db: could not connect to $DATABASE_URL" >&2; '
         'echo "password only: ${DATABASE_URL#*:*:}"; exec sleep 300'],
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **env}, capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    try:
        yield tmp_path, env
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)


@pytest.mark.integration
def test_logs_redact_the_app_secrets(logging_app: tuple[Path, dict[str, str]]) -> None:
    folder, env = logging_app
    for _ in range(50):  # the container writes its lines right after it starts
        r = plainsail("logs", cwd=folder, env=env)
        if "password only" in r.out:
            break
    assert r.code == 0, r.text
    assert "token=***" in r.out and "could not connect to ***" in r.out
    assert "password only: ***@db:5432/app" in r.out
    for value in env.values():
        assert value not in r.text
    assert env["DATABASE_URL"].split(":")[2].split("@")[0] not in r.text
