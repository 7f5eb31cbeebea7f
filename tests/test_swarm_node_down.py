"""A worker node's Docker Engine stopped while Swarm replaces the tasks of a `plainsail
deploy` on the real 3-node Swarm (scripts/swarm.sh). Each node can hold one task of the
service (its host-mode port), so with 3 replicas and a node gone Swarm cannot place the
third task anywhere: plainsail must not count the update as done, must not wait past its
deadlines, and must say which node is down. The engine is started again and the node
rejoins before the test ends (the Swarm is shared by the other swarm tests)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import plainsail
from tests.support.services import Registry
from tests.support.swarm_env import (
    SwarmCluster,
    SwarmService,
    answers,
    build_swarm_app,
    deploy_until_update,
    remove_app_images,
    stop_engine,
    swarm_config,
    swarm_sh,
)

PORT = 18433
SECRET = "postgresql://app:node-down@db/app"


App = SwarmService


@pytest.fixture
def app(swarm_cluster: SwarmCluster, registry: Registry, tmp_path: Path) -> Iterator[App]:
    image, versions = build_swarm_app(registry.repo(f"t/swarmdown-{uuid.uuid4().hex[:8]}"),
                                      tmp_path)
    service = f"psdown{uuid.uuid4().hex[:6]}"
    (tmp_path / "plainsail.yml").write_text(
        swarm_config(service, image, swarm_cluster.manager, PORT, "DATABASE_URL",
                     "[/bin/busybox, echo, migrated]"))
    try:
        yield App(tmp_path, image, versions, service)
    finally:
        swarm_sh("up")  # the stopped engine again (a failed test too), the node rejoined
        swarm_cluster.docker("service", "rm", service)
        remove_app_images(image, versions)


def test_worker_engine_stopped_mid_update(swarm_cluster: SwarmCluster, app: App) -> None:
    first = plainsail("deploy", app.ref("v1"), "-c", str(app.dir / "plainsail.yml"), "--json",
                      cwd=app.dir, env={"DATABASE_URL": SECRET}, timeout=300)
    assert first.code == 0, first.text
    worker = swarm_cluster.nodes[2]
    start = time.monotonic()
    proc, seen = deploy_until_update(app.dir, app.ref("v2"), {"DATABASE_URL": SECRET})
    time.sleep(1)
    stop_engine(worker.docker_socket.parent)
    out, err = proc.communicate(timeout=300)
    took = time.monotonic() - start
    rec = json.loads(out)
    assert proc.returncode == 1 and rec["outcome"] == "restore-failed", "".join(seen) + err
    # Swarm calls a node whose engine stopped "down" (or "disconnected" for a moment).
    assert re.search(rf"\({re.escape(worker.hostname)}\) is (down|disconnected)",
                     rec["reason"]), rec["reason"]
    assert "no suitable node" in rec["reason"]
    # Swarm notices a silent node after its heartbeat period (about 15 s); then neither the
    # update nor the way back waits for the converge deadlines (156 s each here).
    assert took < 120, took
    assert rec["digest"] == app.versions["v2"][1]
    spec = json.loads(swarm_cluster.docker("service", "inspect", app.service).stdout)[0]
    assert spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].endswith(
        app.versions["v1"][1])  # the previous release's spec again
    swarm_sh("up")  # the engine again: the node rejoins and takes the unplaced task
    # Swarm places the unplaced task on the node back and finishes putting the previous
    # spec on the tasks the restore had not reached yet (at most 90 s).
    found: list[str] = []
    for _ in range(180):
        found = answers(swarm_cluster, PORT, timeout=2)
        if found == ["1", "1", "1"]:
            break
        time.sleep(0.5)
    assert found == ["1", "1", "1"]
