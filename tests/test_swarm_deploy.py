"""`plainsail deploy` and `rollback` on a real 3-node Swarm (scripts/swarm.sh), from a pristine
cluster: no service, no overlay network, no image in any node's engine. The tests run in
order on one service: first deploy, upgrade, a version failing its gate (the old digest
serves again), a failed migration (the service untouched), a rollback to a recorded digest.
Each node is asked directly on its host-mode port which version answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CliResult, plainsail
from tests.support.services import Registry
from tests.support.swarm_env import SwarmCluster

PORT = 18431
SECRET = "postgresql://app:s3cr-et 'quoted' $x@db/app"  # shell-special on purpose

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY busybox /bin/sh
COPY busybox /bin/cat
COPY start.sh /start.sh
ARG VERSION
ARG HEALTHY
ENV VERSION=$VERSION HEALTHY=$HEALTHY
CMD ["/bin/busybox", "sh", "/start.sh"]
"""
# The app: /health says its version (and "down" when built unhealthy); /secret returns the
# secret it got as an environment variable, so the test sees that it arrived whole.
START = """/bin/busybox mkdir -p /www
if [ "$HEALTHY" = yes ]; then
  echo '{"database": "ok", "version": "'"$VERSION"'"}' > /www/health
else
  echo '{"database": "down", "version": "'"$VERSION"'"}' > /www/health
fi
printf '%s' "$DATABASE_URL" > /www/secret
exec /bin/busybox httpd -f -p 8080 -h /www
"""


@dataclass
class SwarmApp:
    dir: Path
    image: str
    versions: dict[str, tuple[str, str]]  # v1, v2, v3 (unhealthy) -> (tag, digest)
    cluster: SwarmCluster
    service: str

    def ref(self, name: str) -> str:
        tag, digest = self.versions[name]
        return f"{tag}@{digest}"

    def run(self, *args: str, config: str = "plainsail.yml") -> CliResult:
        return plainsail(*args, "-c", str(self.dir / config), "--json", cwd=self.dir,
                         env={"DATABASE_URL": SECRET}, timeout=600)

    def answers(self) -> list[str]:
        """The version each node's port answers with (\"-\" when it does not answer)."""
        out = []
        for node in self.cluster.nodes:
            try:
                with urllib.request.urlopen(  # noqa: S310
                        f"http://{node.hostname}:{PORT}/health", timeout=5) as a:
                    out.append(json.loads(a.read())["version"])
            except OSError:
                out.append("-")
        return out

    def spec(self) -> dict[str, object]:
        res = self.cluster.docker("service", "inspect", self.service)
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout)[0])


def _config(service: str, image: str, cluster: SwarmCluster, migrate: str) -> str:
    m = cluster.manager
    return (f"service: {service}\nimage: {image}\nsigning:\n  verify: false\n"
            f"target: swarm\nswarm:\n  manager: {m.host}\n  replicas: 3\n"
            "  update: {parallelism: 1, order: stop-first}\n"
            f"ssh:\n  identity_file: {m.identity_file}\n  known_hosts: {m.known_hosts}\n"
            f"app:\n  port: 8080\n  publish: {PORT}\n  secrets: [DATABASE_URL]\n"
            "  env: {MODE: swarm}\n  stop_timeout: 2s\n"
            f"migrate:\n  command: {migrate}\n  timeout: 60s\n"
            "health:\n  body_contains: '\"database\": \"ok\"'\n  attempts: 10\n"
            "  interval: 500ms\n")


def _pristine(cluster: SwarmCluster) -> None:
    """No service, no overlay network, no secret, no image on any node."""
    for sid in cluster.docker("service", "ls", "-q").stdout.split():
        cluster.docker("service", "rm", sid)
    for _ in range(60):
        if not any(n.docker("ps", "-aq").stdout.split() for n in cluster.nodes):
            break
        time.sleep(1)
    ids = cluster.docker("secret", "ls", "-q").stdout.split()
    if ids:
        cluster.docker("secret", "rm", *ids)
    for _ in range(30):
        if cluster.docker("network", "rm", "plainsail").returncode != 0:
            break
        time.sleep(1)
    for node in cluster.nodes:
        node.docker("container", "prune", "-f")
        images = node.docker("image", "ls", "-aq").stdout.split()
        if images:
            node.docker("image", "rm", "-f", *images)


@pytest.fixture(scope="module")
def swarm_app(swarm_cluster: SwarmCluster, registry: Registry,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmApp]:
    ctx = tmp_path_factory.mktemp("swarmapp")
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "start.sh").write_text(START)
    image = registry.repo(f"t/swarm-{uuid.uuid4().hex[:8]}")
    versions = {}
    for name, version, healthy in (("v1", "1", "yes"), ("v2", "2", "yes"), ("v3", "3", "no")):
        tag = uuid.uuid4().hex[:8]
        ref = f"{image}:{tag}"
        subprocess.run(["docker", "build", "-q", "--build-arg", f"VERSION={version}",
                        "--build-arg", f"HEALTHY={healthy}", "-t", ref, str(ctx)],
                       check=True, capture_output=True)
        subprocess.run(["docker", "push", "-q", ref], check=True, capture_output=True)
        digest = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", ref],
            check=True, capture_output=True, text=True).stdout.strip().split("@")[1]
        versions[name] = (tag, digest)
    service = f"pssw{uuid.uuid4().hex[:6]}"
    work = tmp_path_factory.mktemp("swarmdeploy")
    (work / "plainsail.yml").write_text(_config(service, image, swarm_cluster,
                                                "[/bin/busybox, echo, migrated]"))
    (work / "failing-migration.yml").write_text(_config(
        service, image, swarm_cluster, "[/bin/busybox, sh, -c, 'echo relation missing; exit 3']"))
    _pristine(swarm_cluster)
    yield SwarmApp(work, image, versions, swarm_cluster, service)
    _pristine(swarm_cluster)
    subprocess.run(["docker", "image", "rm", "-f", *[f"{image}:{t}" for t, _ in
                                                     versions.values()]], capture_output=True)


def outcome(res: CliResult) -> dict[str, object]:
    rec = json.loads(res.out)
    assert isinstance(rec, dict)
    return rec


def test_first_deploy_on_a_pristine_cluster(swarm_cluster: SwarmCluster,
                                            swarm_app: SwarmApp) -> None:
    app = swarm_app
    assert app.cluster.docker("network", "inspect", "plainsail").returncode != 0
    assert not any(n.docker("image", "ls", "-q").stdout.split() for n in app.cluster.nodes)
    res = app.run("deploy", app.ref("v1"))
    rec = outcome(res)
    assert res.code == 0 and rec["outcome"] == "succeeded", res.text
    assert app.answers() == ["1", "1", "1"]
    tasks = rec["tasks"]
    assert isinstance(tasks, list) and len({t["node_id"] for t in tasks}) == 3
    for node in app.cluster.nodes:  # the secret arrived whole, as an environment variable
        with urllib.request.urlopen(f"http://{node.hostname}:{PORT}/secret",  # noqa: S310
                                    timeout=5) as a:
            assert a.read().decode() == SECRET
    inspected = app.cluster.docker("service", "inspect", app.service).stdout
    assert "s3cr-et" not in inspected and "s3cr-et" not in res.text
    assert f"@{app.versions['v1'][1]}" in inspected


def test_upgrade_of_three_replicas(swarm_cluster: SwarmCluster, swarm_app: SwarmApp) -> None:
    app = swarm_app
    before = set(app.cluster.docker("secret", "ls", "--format", "{{.Name}}").stdout.split())
    res = app.run("deploy", app.ref("v2"))
    rec = outcome(res)
    assert res.code == 0 and rec["outcome"] == "succeeded", res.text
    assert rec["previous_tag"] == app.versions["v1"][0]
    assert app.answers() == ["2", "2", "2"]
    after = set(app.cluster.docker("secret", "ls", "--format", "{{.Name}}").stdout.split())
    assert len(after) == 1 and after.isdisjoint(before)  # the old version was removed


def test_version_failing_its_gate_is_replaced_by_the_recorded_one(
        swarm_cluster: SwarmCluster, swarm_app: SwarmApp) -> None:
    app = swarm_app
    res = app.run("deploy", app.ref("v3"))
    rec = outcome(res)
    assert res.code == 1 and rec["outcome"] == "failed-health-restored", res.text
    assert "health gate failed" in str(rec["reason"])
    assert app.answers() == ["2", "2", "2"]
    assert f"@{app.versions['v2'][1]}" in json.dumps(app.spec())


def test_failed_migration_leaves_the_service_untouched(swarm_cluster: SwarmCluster,
                                                       swarm_app: SwarmApp) -> None:
    app = swarm_app
    version = app.spec()["Version"]
    res = app.run("deploy", app.ref("v1"), config="failing-migration.yml")
    rec = outcome(res)
    assert res.code == 1 and rec["outcome"] == "failed-migration", res.text
    assert "relation missing" in str(rec["reason"])
    assert app.spec()["Version"] == version  # not one update
    assert app.answers() == ["2", "2", "2"]


def test_status_rollback_and_history(swarm_cluster: SwarmCluster, swarm_app: SwarmApp) -> None:
    app = swarm_app
    res = app.run("status")
    found = json.loads(res.out)
    assert res.code == 0 and found["running"]["tag"] == app.versions["v2"][0], res.text
    assert [t["health"] for t in found["tasks"]] == ["ok", "ok", "ok"]
    res = app.run("rollback")
    rec = outcome(res)
    assert res.code == 0 and rec["outcome"] == "succeeded", res.text
    assert rec["rollback_to"] == app.versions["v1"][0]
    assert rec["rollback_from"] == app.versions["v2"][0]
    assert app.answers() == ["1", "1", "1"]
    res = app.run("history")
    attempts = json.loads(res.out)
    assert res.code == 0, res.text
    assert [(a["kind"], a["outcome"]) for a in attempts] == [
        ("rollback", "succeeded"), ("deploy", "failed-migration"),
        ("deploy", "failed-health-restored"), ("deploy", "succeeded"),
        ("deploy", "succeeded")]
    assert all(a["source"] == "hosts" for a in attempts)
