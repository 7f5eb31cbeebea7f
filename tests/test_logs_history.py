"""The read-only commands: `logs` hides the app's secrets, `history` works offline from the
local history, build records are found from a config in a subfolder, and `docker stop`
is spelled so that no Docker client warns about it."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from plainsail.config import model as configlib
from plainsail.hosts import docker
from plainsail.supply import buildrecords
from plainsail.supply.buildrecords import BuildRecord
from tests.support.cli import plainsail
from tests.support.gitrepo import git
from tests.support.services import free_port

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


@pytest.mark.integration
def test_logs_redact_secrets_known_only_to_the_host_env_file(
        logging_app: tuple[Path, dict[str, str]]) -> None:
    """Secrets from a file, a command or Vault are not in the deployer's environment when
    `logs` runs: their values come from the host's env file instead."""
    import os
    import shutil

    folder, env = logging_app
    service = configlib.load(folder / "plainsail.yml", env).service
    state = Path(os.path.expanduser("~")) / ".plainsail" / service
    state.mkdir(parents=True, exist_ok=True)
    (state / "env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    try:
        bare = {k: "" for k in env}  # not set for the logs command
        for _ in range(50):
            r = plainsail("logs", cwd=folder, env=bare)
            if "password only" in r.out:
                break
        assert r.code == 0, r.text
        assert "token=***" in r.out
        for value in env.values():
            assert value not in r.text
    finally:
        shutil.rmtree(state, ignore_errors=True)


# ---------------------------------------------------------------- history


def _offline_project(tmp_path: Path) -> Path:
    """A config whose only host cannot be reached, and a local history of two attempts."""
    port = free_port()  # nothing listens there
    (tmp_path / "plainsail.yml").write_text(
        f"service: api\nimage: {IMAGE}\nsigning: {{verify: false}}\n"
        f"hosts: ['ssh://deploy@127.0.0.1:{port}']\n")
    (tmp_path / ".plainsail").mkdir()
    records = [
        {"id": "d-1", "service": "api", "tag": "a3f1b2c3", "digest": "sha256:" + "ab" * 32,
         "who": "ann", "outcome": "succeeded", "seconds": 12.5, "preflight": False,
         "started": "2024-05-01T10:00:00Z", "hosts": [f"ssh://deploy@127.0.0.1:{port}"],
         "per_host": [{"host": f"ssh://deploy@127.0.0.1:{port}", "outcome": "succeeded"}]},
        {"id": "d-2", "service": "api", "tag": "b4e2c3d4", "digest": "sha256:" + "cd" * 32,
         "who": "bob", "outcome": "failed-health-restored", "reason": "health check failed",
         "seconds": 30.0, "preflight": False, "started": "2024-05-02T10:00:00Z",
         "hosts": [f"ssh://deploy@127.0.0.1:{port}"], "per_host": []},
        {"id": "x-1", "service": "other", "tag": "c5f3d4e5", "outcome": "succeeded",
         "started": "2024-05-03T10:00:00Z", "hosts": []},
    ]
    (tmp_path / ".plainsail" / "history.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def test_history_offline_from_the_local_file(tmp_path: Path) -> None:
    folder = _offline_project(tmp_path)
    r = plainsail("history", "--source", "local", cwd=folder)
    assert r.code == 0, r.text
    assert "from the local history" in r.out
    lines = r.out.splitlines()
    assert [i for i, line in enumerate(lines) if "b4e2c3d4" in line] < \
        [i for i, line in enumerate(lines) if "a3f1b2c3" in line], "newest first"
    assert "failed-health-restored: health check failed" in r.out
    assert "c5f3d4e5" not in r.out, "another service's record was shown"
    assert r.err == ""

    j = plainsail("history", "--source", "local", "--json", cwd=folder)
    attempts = json.loads(j.out)
    assert [a["id"] for a in attempts] == ["d-2", "d-1"]
    assert {a["source"] for a in attempts} == {"local"}


def test_history_falls_back_to_the_local_file_when_hosts_are_unreachable(
        tmp_path: Path) -> None:
    folder = _offline_project(tmp_path)
    r = plainsail("history", cwd=folder)
    assert r.code == 0, r.text
    assert "cannot connect over SSH" in r.err and "showing the local history" in r.err
    assert "a3f1b2c3" in r.out and "b4e2c3d4" in r.out

    strict = plainsail("history", "--source", "hosts", cwd=folder)
    assert strict.code == 1 and "cannot connect over SSH" in strict.err


def test_status_lists_an_unreachable_host_and_exits_1(tmp_path: Path) -> None:
    folder = _offline_project(tmp_path)
    j = plainsail("status", "--json", cwd=folder)
    assert j.code == 1, j.text
    [host] = json.loads(j.out)["hosts"]  # still one JSON object on stdout
    assert host["reachable"] is False and "cannot connect over SSH" in host["error"]
    assert host["running"] is None

    r = plainsail("status", cwd=folder)
    assert r.code == 1
    assert "UNREACHABLE: cannot connect over SSH" in r.out


# ---------------------------------------------------------------- build records


def test_build_records_are_found_from_a_config_in_a_subfolder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLAINSAIL_BUILD_RECORDS", raising=False)
    repo = tmp_path / "repo"
    (repo / "deploy").mkdir(parents=True)
    git(repo, "init", "-q")
    text = f"service: api\nimage: {IMAGE}\nsigning: {{verify: false}}\n"
    (repo / "plainsail.yml").write_text(text)
    (repo / "deploy" / "staging.yml").write_text(text.replace("api\n", "api-staging\n", 1))
    main = configlib.load(repo / "plainsail.yml", {})
    staging = configlib.load(repo / "deploy" / "staging.yml", {})

    assert buildrecords.record_dir(main) == repo.resolve() / ".plainsail" / "builds"
    assert buildrecords.record_dir(staging) == buildrecords.record_dir(main)
    record = BuildRecord(image=IMAGE, tag="a3f1b2c3", digest="sha256:" + "ab" * 32,
                         git_sha="a3f1b2c3" + "0" * 32, created="2024-05-01T10:00:00Z",
                         builder="ci")
    buildrecords.write(record, buildrecords.record_dir(main))
    assert buildrecords.latest(staging) == record
    assert buildrecords.find(staging, "a3f1b2c3") == record

    outside = tmp_path / "no-git"
    outside.mkdir()
    (outside / "plainsail.yml").write_text(text)
    assert buildrecords.record_dir(configlib.load(outside / "plainsail.yml", {})) == \
        outside.absolute() / ".plainsail" / "builds"


# ---------------------------------------------------------------- docker stop


def test_docker_stop_uses_the_short_flag() -> None:
    assert docker.stop("api-a3f1b2c3", 9.6) == ["docker", "stop", "-t", "10", "api-a3f1b2c3"]


@pytest.mark.integration
def test_docker_stop_prints_no_deprecation_warning() -> None:
    name = f"ps-stop-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "--detach", "--name", name, "plainsail-base:bookworm",
                    "sleep", "300"], check=True, capture_output=True)
    try:
        res = subprocess.run(docker.stop(name, 0), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert res.stderr == ""
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)
