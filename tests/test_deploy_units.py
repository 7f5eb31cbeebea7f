"""Pure pieces of deploy and rollback, without I/O: argv, targets, records, verdicts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plainsail.config import model as configlib
from plainsail.deploy.health import check
from plainsail.deploy.notify import message
from plainsail.deploy.outcomes import exit_code
from plainsail.deploy.plan import (
    Target,
    app_env,
    app_run_argv,
    health_target,
    migrate_argv,
    missing_secrets,
    run_options,
    select_hosts,
)
from plainsail.deploy.rollback import previous_good
from plainsail.errors import PlainsailError, UsageError
from plainsail.hosts import docker
from plainsail.hosts.containers import fingerprint, parse_inspect
from plainsail.hosts.state import LockInfo, env_file_content, parse_history

DIGEST = "sha256:" + "ab" * 32
BASE = ("service: api\nimage: r.example.com/acme/api\nsigning: {verify: false}\n"
        "hosts: [local, 'ssh://deploy@web-1:2222']\n")


def cfg(extra: str = "") -> configlib.Config:
    return configlib.parse(BASE + extra, Path("/x/plainsail.yml"), {})


TARGET = Target("r.example.com/acme/api", "a3f1b2c3", DIGEST, True)


def test_app_container_argv() -> None:
    c = cfg("app:\n  port: 8080\n  publish: 80\n  volumes: ['data:/data']\n  stop_timeout: 7s\n")
    argv = app_run_argv(c, TARGET, "api-a3f1b2c3", "/h/.plainsail/api/env", "id-1", "fp")
    assert argv[argv.index("--publish") + 1] == "80:8080"
    assert argv[argv.index("--stop-timeout") + 1] == "7"
    assert f"{docker.LABEL_DIGEST}={DIGEST}" in argv and "--init" in argv
    assert argv[argv.index("--env-file") + 1] == "/h/.plainsail/api/env"
    assert argv[-1] == f"r.example.com/acme/api@{DIGEST}"  # by digest, never by tag


def test_host_network_publishes_nothing() -> None:
    c = cfg("app:\n  port: 9000\n  network: host\n")
    assert "--publish" not in app_run_argv(c, TARGET, "n", "/e", "i", "f")
    assert health_target(c) == ("127.0.0.1", 9000)
    assert health_target(cfg("app:\n  port: 9000\n")) is None  # bridge: the container IP
    assert health_target(cfg("app:\n  port: 9000\n  publish: 80\n")) == ("127.0.0.1", 80)


def test_migration_container_is_temporary_and_labelled() -> None:
    c = cfg("migrate:\n  command: [alembic, upgrade, head]\n")
    argv = migrate_argv(c, TARGET, "/e", "20260101T000000Z-abcdef")
    assert "--rm" in argv and "--detach" not in argv
    assert argv[-3:] == ["alembic", "upgrade", "head"]
    assert f"{docker.LABEL_ROLE}=migrate" in argv


def test_secrets_from_environment() -> None:
    c = cfg("app:\n  env: {A: '1'}\n  secrets: [DATABASE_URL, TOKEN]\n")
    assert missing_secrets(c, {"DATABASE_URL": "x"}) == ["TOKEN"]
    assert app_env(c, {"DATABASE_URL": "u", "TOKEN": "t"}) == {
        "A": "1", "DATABASE_URL": "u", "TOKEN": "t"}
    with pytest.raises(PlainsailError, match="newline"):
        env_file_content({"K": "a\nb"})
    assert env_file_content({"K": "v=1"}) == "K=v=1\n"


def test_fingerprint_changes_with_env_and_options() -> None:
    c = cfg()
    base = fingerprint("A=1\n", run_options(c))
    assert base == fingerprint("A=1\n", run_options(c))
    assert base != fingerprint("A=2\n", run_options(c))
    assert base != fingerprint("A=1\n", run_options(cfg("app:\n  publish: 81\n")))


def test_select_hosts() -> None:
    c = cfg()
    assert [h.name for h in select_hosts(c, [])] == ["local", "ssh://deploy@web-1:2222"]
    assert [h.name for h in select_hosts(c, ["web-1"])] == ["ssh://deploy@web-1:2222"]
    with pytest.raises(UsageError, match="not in hosts"):
        select_hosts(c, ["web-2"])


def test_health_check_verdicts() -> None:
    hc = cfg("health:\n  body_contains: '\"database\": \"ok\"'\n").health
    assert check(200, '{"database": "ok"}', hc) is None
    assert check(503, "", hc) == "answered 503, expected 200"
    assert "without" in (check(200, '{"database": "down"}', hc) or "")


def test_previous_good_skips_the_running_tag_and_failures() -> None:
    recs = [
        {"tag": "v1", "outcome": "succeeded", "started": "1", "digest": DIGEST},
        {"tag": "v2", "outcome": "succeeded", "started": "2", "digest": DIGEST},
        {"tag": "v3", "outcome": "failed-health-restored", "started": "3"},
    ]
    assert previous_good(recs, "v2")["tag"] == "v1"  # type: ignore[index]
    assert previous_good(recs, "v1") is None
    assert previous_good(recs, None)["tag"] == "v2"  # type: ignore[index]


def test_history_survives_a_torn_last_line() -> None:
    text = '{"id": "a"}\n{"id": "b"}\n{"id": "c", "outc'
    assert [r["id"] for r in parse_history(text)] == ["a", "b"]


def test_container_from_inspect_ignores_migration_containers() -> None:
    data = {"Name": "/api-a3f1b2c3", "Id": "x", "Created": "t",
            "State": {"Status": "running", "StartedAt": "s"},
            "Config": {"Image": "img", "Labels": {docker.LABEL_TAG: "a3f1b2c3",
                                                  docker.LABEL_ROLE: "app"}}}
    c = parse_inspect(data)
    assert c and c.name == "api-a3f1b2c3" and c.running and c.tag == "a3f1b2c3"
    data["Config"]["Labels"][docker.LABEL_ROLE] = "migrate"  # type: ignore[index]
    assert parse_inspect(data) is None


def test_stale_lock_is_called_out_only_for_dead_local_pids() -> None:
    import socket
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    dead = LockInfo("id", "bob@h", socket.gethostname(), p.pid, "2026-01-01T00:00:00Z", "t",
                    "o")
    assert "no longer running" in dead.stale_hint()
    alive = LockInfo("id", "bob@h", socket.gethostname(), os.getpid(), "x", "t", "o")
    assert alive.stale_hint() == ""
    elsewhere = LockInfo("id", "bob@h", "another-machine", p.pid, "x", "t", "o")
    assert elsewhere.stale_hint() == ""


def test_notification_and_exit_codes() -> None:
    rec = {"service": "api", "tag": "a3f1b2c3", "digest": DIGEST, "outcome": "failed-migration",
           "reason": "0003 failed", "hosts": ["web-1"], "who": "ci", "origin": "o", "id": "i"}
    text = message(rec)["text"]
    assert "FAILED-MIGRATION" in text and "0003 failed" in text and "web-1" in text
    assert exit_code(rec) == 1
    assert exit_code({"outcome": "succeeded"}) == 0 and exit_code({"outcome": "unchanged"}) == 0
    assert exit_code({"outcome": "interrupted"}) == 130


def test_migrate_layout_travels_to_the_migration_container() -> None:
    from plainsail.config.model import MIGRATION_LAYOUTS
    from plainsail.migrations.layouts import LAYOUTS

    assert MIGRATION_LAYOUTS == LAYOUTS
    c = cfg("migrate:\n  command: [plainsail, migrate]\n  layout: diesel\n")
    argv = migrate_argv(c, TARGET, "/e", "20260101T000000Z-abcdef")
    assert argv[argv.index("--env") + 1] == "PLAINSAIL_MIGRATIONS_LAYOUT=diesel"
    assert "--env" not in migrate_argv(cfg("migrate:\n  command: [m]\n"), TARGET, "/e", "i")
    with pytest.raises(configlib.ConfigError, match="migrate.layout"):
        cfg("migrate:\n  command: [m]\n  layout: rails\n")


def test_migrate_schema_travels_to_the_migration_container() -> None:
    c = cfg("migrate:\n  command: [plainsail, migrate]\n  schema: app\n  layout: flat\n")
    argv = migrate_argv(c, TARGET, "/e", "20260101T000000Z-abcdef")
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert envs == ["PLAINSAIL_MIGRATIONS_LAYOUT=flat", "PLAINSAIL_MIGRATIONS_SCHEMA=app"]
    assert cfg("migrate:\n  command: [m]\n").migrate.schema == "public"  # type: ignore[union-attr]
    for bad in ('""', '"a\\tb"', "x" * 64):
        with pytest.raises(configlib.ConfigError, match="migrate.schema"):
            cfg(f"migrate:\n  command: [m]\n  schema: {bad}\n")
