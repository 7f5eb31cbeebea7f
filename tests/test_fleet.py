"""Deploys to two hosts, each with its own Docker Engine, one at a time: migrations run once
before any host switches; a host failing its gate restores it and every host already
switched; the rest are not touched; rollback needs the hosts to agree."""

from __future__ import annotations

import json
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CliResult, plainsail
from tests.support.multihost import Fleet, TinyApp
from tests.support.sshd import SSHHost


@dataclass
class FleetDir:
    path: Path
    service: str
    volume: str
    fleet: Fleet
    app: TinyApp

    def run(self, *args: str) -> CliResult:
        return plainsail(*args, cwd=self.path)

    def version_on(self, host: SSHHost) -> str:
        """The version the running container answers with on `host` (via its bridge IP)."""
        names = self.fleet.docker(host, "ps", "--filter",
                                  f"label=dev.plainsail.service={self.service}",
                                  "--format", "{{.Names}}").stdout.split()
        if not names:
            return "nothing"
        ip = self.fleet.docker(host, "inspect", "--format",
                               "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                               names[0]).stdout.strip()
        with urllib.request.urlopen(f"http://{ip}:8080/health", timeout=3) as r:
            return str(json.loads(r.read())["version"])

    def records(self, host: SSHHost) -> list[dict[str, object]]:
        res = host.run(["cat", f"{host.home}/.plainsail/{self.service}/history.jsonl"])
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def fail_on(self, host: SSHHost, version: str) -> None:
        """Make `version` fail its health check on `host` only (a file in its volume)."""
        tag, digest = self.app.versions["v1"]
        r = self.fleet.docker(host, "run", "--rm", "-v", f"{self.volume}:/flag",
                              f"{self.app.image}@{digest}", "/bin/busybox", "touch",
                              f"/flag/fail-{version}")
        assert r.returncode == 0, r.stderr


@pytest.fixture
def fleet_dir(tmp_path: Path, fleet: Fleet, tiny_app: TinyApp) -> Iterator[FleetDir]:
    service = f"tiny-{uuid.uuid4().hex[:8]}"
    volume = f"{service}-flag"
    (tmp_path / "plainsail.yml").write_text(
        f"service: {service}\nimage: {tiny_app.image}\nsigning:\n  verify: false\n"
        f"hosts:\n  - {fleet.a.host}\n  - {fleet.b.host}\n"
        f"ssh:\n  identity_file: {fleet.a.identity_file}\n  known_hosts: {fleet.known_hosts}\n"
        f"app:\n  port: 8080\n  volumes: ['{volume}:/flag']\n  stop_timeout: 2s\n"
        "migrate:\n  command: [/bin/busybox, echo, migrated]\n  timeout: 30s\n"
        "health:\n  body_contains: '\"database\": \"ok\"'\n  attempts: 8\n  interval: 250ms\n"
        "retain: 2\n"
    )
    d = FleetDir(tmp_path, service, volume, fleet, tiny_app)
    yield d
    for host in (fleet.a, fleet.b):
        ids = fleet.docker(host, "ps", "-aq", "--filter",
                           f"label=dev.plainsail.service={service}").stdout.split()
        if ids:
            fleet.docker(host, "rm", "-f", *ids)
        fleet.docker(host, "volume", "rm", "-f", volume)
        host.run(["rm", "-rf", f"{host.home}/.plainsail/{service}"])
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_fleet_deploy_migrates_once_and_rolls_back_everywhere(fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    for v in ("v1", "v2"):
        r = d.run("deploy", d.app.ref(v))
        assert r.code == 0, r.text
    assert d.version_on(f.a) == "2" and d.version_on(f.b) == "2"
    a, b = d.records(f.a)[-1], d.records(f.b)[-1]
    assert a["id"] == b["id"] and a["outcome"] == b["outcome"] == "succeeded"
    # One migration, on the first host, before any host switched.
    assert a["migration"]["host"] == b["migration"]["host"] == f.a.host
    assert "migrate" in {s["name"] for s in a["steps"]}
    assert "migrate" not in {s["name"] for s in b["steps"]}
    status = json.loads(d.run("status", "--json").out)
    assert [h["running"]["tag"] for h in status["hosts"]] == [d.app.versions["v2"][0]] * 2
    r = d.run("rollback")
    assert r.code == 0, r.text
    assert d.version_on(f.a) == "1" and d.version_on(f.b) == "1"
    history = json.loads(d.run("history", "--json").out)
    assert sorted(history[0]["hosts"]) == sorted([f.a.host, f.b.host])


def test_second_host_failing_restores_the_first(fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    assert d.run("deploy", d.app.ref("v1")).code == 0
    d.fail_on(f.b, "2")
    r = d.run("deploy", d.app.ref("v2"))
    assert r.code == 1, r.text
    assert d.version_on(f.a) == "1" and d.version_on(f.b) == "1"
    a, b = d.records(f.a)[-1], d.records(f.b)[-1]
    assert b["outcome"] == "failed-health-restored"
    assert a["outcome"] == "failed-health-restored"
    assert f"{f.b.host} failed its health gate" in str(a["reason"])


def test_first_host_failing_leaves_the_rest_untouched(fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    assert d.run("deploy", d.app.ref("v1")).code == 0
    d.fail_on(f.a, "2")
    r = d.run("deploy", d.app.ref("v2"))
    assert r.code == 1
    b = d.records(f.b)[-1]
    assert b["outcome"] == "aborted" and "not touched" in str(b["reason"])
    assert "start-new" not in {s["name"] for s in b["steps"]}
    assert d.version_on(f.a) == "1" and d.version_on(f.b) == "1"


def test_host_filter_and_rollback_disagreement(fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    assert d.run("deploy", d.app.ref("v1")).code == 0
    assert d.run("deploy", d.app.ref("v2")).code == 0
    r = d.run("deploy", d.app.ref("v3"), "--host", f.a.host)
    assert r.code == 0, r.text
    assert d.version_on(f.a) == "3" and d.version_on(f.b) == "2"
    r = d.run("rollback")
    assert r.code == 2 and "disagree" in r.err and "--to" in r.err
    r = d.run("rollback", "--to", d.app.versions["v2"][0])
    assert r.code == 0, r.text
    assert d.version_on(f.a) == "2" and d.version_on(f.b) == "2"
    per_host = json.loads(d.run("history", "--json", "--limit", "1").out)[0]
    assert per_host["kind"] == "rollback"
