"""`plainsail deploy` and `rollback` on a real 3-node Swarm (scripts/swarm.sh), from a pristine
cluster: no service, no overlay network, no image in any node's engine. The tests run in
order on one service: first deploy, upgrade, a version failing its gate (the old digest
serves again), a failed migration (the service untouched), a rollback to a recorded digest.
Each node is asked directly on its host-mode port which version answers."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CliResult, plainsail
from tests.support.services import Registry
from tests.support.swarm_env import (
    SwarmCluster,
    answers,
    build_swarm_app,
    deploy_until_update,
    outcome,
    pristine,
    remove_app_images,
    swarm_config,
    swarm_sh,
)

PORT = 18431
SECRET_NAME = "DATABASE_URL"
SECRET = "postgresql://app:s3cr-et 'quoted' $x@db/app"  # shell-special on purpose

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

    def run(self, *args: str, config: str = "plainsail.yml", as_json: bool = True
            ) -> CliResult:
        return plainsail(*args, "-c", str(self.dir / config), *(["--json"] if as_json else []),
                         cwd=self.dir, env={"DATABASE_URL": SECRET}, timeout=600)

    def answers(self) -> list[str]:
        """The version each node's port answers with (\"-\" when it does not answer)."""
        return answers(self.cluster, PORT)

    def spec(self) -> dict[str, object]:
        res = self.cluster.docker("service", "inspect", self.service)
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout)[0])


@pytest.fixture(scope="module")
def swarm_app(swarm_cluster: SwarmCluster, registry: Registry,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmApp]:
    image, versions = build_swarm_app(registry.repo(f"t/swarm-{uuid.uuid4().hex[:8]}"),
                                      tmp_path_factory.mktemp("swarmapp"))
    service = f"pssw{uuid.uuid4().hex[:6]}"
    work = tmp_path_factory.mktemp("swarmdeploy")
    m = swarm_cluster.manager
    (work / "plainsail.yml").write_text(swarm_config(service, image, m, PORT, SECRET_NAME,
                                                     "[/bin/busybox, echo, migrated]"))
    (work / "no-check.yml").write_text(swarm_config(
        service, image, m, PORT, SECRET_NAME, "[/bin/busybox, echo, migrated]",
        healthcheck=False))
    (work / "failing-migration.yml").write_text(swarm_config(
        service, image, m, PORT, SECRET_NAME,
        "[/bin/busybox, sh, -c, 'echo relation missing; exit 3']"))
    pristine(swarm_cluster)
    yield SwarmApp(work, image, versions, swarm_cluster, service)
    pristine(swarm_cluster)
    remove_app_images(image, versions)


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


def test_version_failing_swarms_health_check_is_replaced_by_the_recorded_one(
        swarm_cluster: SwarmCluster, swarm_app: SwarmApp) -> None:
    """v3 answers 404 on /health: Swarm's health check (plainsail's script, run with the
    image's busybox nc) never passes, Swarm stops the task and pauses the update, and
    plainsail puts v2 back."""
    app = swarm_app
    container = app.spec()["Spec"]["TaskTemplate"]["ContainerSpec"]  # type: ignore[index]
    assert "/plainsail-health.sh nc http://127.0.0.1:8080/health 200" in " ".join(
        container["Healthcheck"]["Test"])
    res = app.run("deploy", app.ref("v3"))
    rec = outcome(res)
    assert res.code == 1 and rec["outcome"] == "failed-health-restored", res.text
    assert "update is paused" in str(rec["reason"]), rec["reason"]
    assert rec["healthcheck"] == {"source": "plainsail", "client": "nc", "every": "0.5s"}
    assert app.answers() == ["2", "2", "2"]
    assert f"@{app.versions['v2'][1]}" in json.dumps(app.spec())


def test_version_failing_its_gate_is_replaced_by_the_recorded_one(
        swarm_cluster: SwarmCluster, swarm_app: SwarmApp) -> None:
    """Without Swarm's health check v3's tasks run, and plainsail's own gate finds them
    failing; going back to v2 puts v2's health check back as well."""
    app = swarm_app
    res = app.run("deploy", app.ref("v3"), config="no-check.yml")
    rec = outcome(res)
    assert res.code == 1 and rec["outcome"] == "failed-health-restored", res.text
    assert "health gate failed" in str(rec["reason"]) and "404" in str(rec["reason"])
    assert app.answers() == ["2", "2", "2"]
    assert f"@{app.versions['v2'][1]}" in json.dumps(app.spec())
    container = app.spec()["Spec"]["TaskTemplate"]["ContainerSpec"]  # type: ignore[index]
    assert "/plainsail-health.sh" in " ".join(container["Healthcheck"]["Test"])


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
        ("deploy", "failed-health-restored"), ("deploy", "failed-health-restored"),
        ("deploy", "succeeded"), ("deploy", "succeeded")]
    assert all(a["source"] == "hosts" for a in attempts)


def test_drill_rolls_back_and_comes_back(swarm_cluster: SwarmCluster,
                                        swarm_app: SwarmApp) -> None:
    """v1 runs (rolled back to); the release before it in the records is v2: the drill
    updates the service to v2 and back to v1, both gated, no migration."""
    app = swarm_app
    v1, v2 = app.versions["v1"][0], app.versions["v2"][0]
    version = app.spec()["Version"]
    res = app.run("drill", as_json=False)
    assert res.code == 2 and "run it again with --yes" in res.err, res.text
    assert "requests that reach a node while its task is replaced fail" in res.err
    assert app.spec()["Version"] == version
    res = app.run("drill", "--yes")
    result = json.loads(res.out)
    assert res.code == 0 and result["outcome"] == "succeeded", res.text
    assert (result["current"]["tag"], result["previous"]["tag"]) == (v1, v2)
    assert result["rollback"]["outcome"] == result["deploy"]["outcome"] == "succeeded"
    assert result["previous_works_with_current_schema"] and result["interruption_estimate"]
    assert app.answers() == ["1", "1", "1"]
    attempts = json.loads(app.run("history").out)
    assert [(a["kind"], a["tag"], a["outcome"]) for a in attempts[:2]] == [
        ("deploy", v1, "succeeded"), ("rollback", v2, "succeeded")]


def test_sigterm_of_the_deployer_mid_update_puts_the_old_digest_back(
        swarm_cluster: SwarmCluster, swarm_app: SwarmApp) -> None:
    app = swarm_app
    proc, seen = deploy_until_update(app.dir, app.ref("v2"), {"DATABASE_URL": SECRET})
    time.sleep(2)  # Swarm is replacing the first task
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    rec = json.loads(out)
    assert proc.returncode == 130 and rec["outcome"] == "interrupted", "".join(seen) + err
    assert "runs " + app.versions["v1"][0] + " again" in rec["reason"]
    assert app.answers() == ["1", "1", "1"]
    assert f"@{app.versions['v1'][1]}" in json.dumps(app.spec())
    lock = app.run("status")
    assert json.loads(lock.out)["lock"] is None


def test_logs_and_lock(swarm_cluster: SwarmCluster, swarm_app: SwarmApp) -> None:
    app = swarm_app
    res = app.run("lock", "status", as_json=False)
    assert res.code == 0 and res.out.strip().endswith(": unlocked"), res.text
    res = app.run("logs", "--tail", "5", as_json=False)
    assert res.code == 0, res.text
    assert res.out.splitlines()[0].endswith(f"the tasks of the Swarm service {app.service}")


def test_registry_unreachable_from_workers_mid_update_restores_without_a_tag_fallback(
        swarm_cluster: SwarmCluster, swarm_app: SwarmApp, registry: Registry) -> None:
    """The manager pulls the new digest; the workers have neither it nor a way to the
    registry: their tasks cannot start, Swarm pauses the update, plainsail puts v1 back."""
    app = swarm_app
    port = registry.host.rsplit(":", 1)[1]
    v2 = f"{app.image}@{app.versions['v2'][1]}"
    try:
        for node in app.cluster.nodes[1:]:
            node.docker("container", "prune", "-f")
            node.docker("image", "rm", "-f", v2)
            pid = (node.docker_socket.parent / f"fwd-{port}.pid").read_text().strip()
            os.kill(int(pid), signal.SIGTERM)  # the node's way to the registry
        res = app.run("deploy", app.ref("v2"))
    finally:
        swarm_sh("forward", port)
    rec = outcome(res)
    assert res.code == 1 and rec["outcome"] == "failed-health-restored", res.text
    assert app.answers() == ["1", "1", "1"]
    images = {str(t["Spec"]["ContainerSpec"]["Image"]) for t in json.loads(  # type: ignore[index]
        app.cluster.docker("inspect", *app.cluster.docker(
            "service", "ps", "-q", "--no-trunc", app.service).stdout.split()).stdout)}
    assert all("@sha256:" in i for i in images), images  # every task by digest, never a tag


def test_recover_after_the_deployer_was_killed_mid_update(swarm_cluster: SwarmCluster,
                                                          swarm_app: SwarmApp) -> None:
    app = swarm_app
    proc, _ = deploy_until_update(app.dir, app.ref("v2"), {"DATABASE_URL": SECRET})
    time.sleep(2)
    proc.kill()  # no restore, no record, the lock left behind
    proc.communicate(timeout=60)
    res = app.run("lock", "status", as_json=False)
    assert "INTERRUPTED" in res.out, res.text
    res = app.run("recover")
    rec = outcome(res)
    assert res.code == 0 and rec["outcome"] == "recovered", res.text
    assert rec["tag"] == app.versions["v1"][0]
    assert app.answers() == ["1", "1", "1"]
    attempts = json.loads(app.run("history").out)
    assert [a["outcome"] for a in attempts[:2]] == ["recovered", "interrupted"]


def test_a_first_release_failing_swarms_health_check_ends_at_its_first_failed_task(
        swarm_cluster: SwarmCluster, swarm_app: SwarmApp) -> None:
    """A new service whose task Swarm stops as unhealthy (v3: 404 on /health) would be
    restarted for ever: plainsail ends at the first failed task (not at the converge
    deadline, minutes later) and removes the service."""
    app = swarm_app
    service = f"{app.service}n"
    (app.dir / "new-service.yml").write_text(swarm_config(
        service, app.image, swarm_cluster.manager, PORT + 1, SECRET_NAME,
        "[/bin/busybox, echo, migrated]"))
    res = app.run("deploy", app.ref("v3"), config="new-service.yml")
    rec = outcome(res)
    assert res.code == 1 and rec["outcome"] == "failed-health-restored", res.text
    assert "stopped by Swarm's health check of /health" in str(rec["reason"]), rec["reason"]
    assert "nothing ran before" in str(rec["reason"])
    assert "did not converge in time" not in str(rec["reason"])
    assert swarm_cluster.docker("service", "inspect", service).returncode != 0  # removed
    assert app.answers() == ["1", "1", "1"]  # the other service is untouched
