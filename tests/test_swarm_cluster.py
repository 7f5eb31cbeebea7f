"""The Swarm the swarm tests run on (scripts/swarm.sh): three real Docker Engines in network
namespaces form one manager and two workers; `up` is idempotent; an overlay network spans the
nodes, and a dnsrr service with host-mode ports (no routing mesh: no IPVS here) pulls its
image by digest from the registry on every node."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from functools import partial
from pathlib import Path

import pytest

from plainsail.config import model as configlib
from plainsail.deploy.plan import ssh_options
from plainsail.hosts.addresses import parse_host
from plainsail.hosts.executor import executor_for
from plainsail.swarm import objects
from tests.support.multihost import TinyApp
from tests.support.swarm_env import SwarmCluster, swarm_sh


def nodes(cluster: SwarmCluster) -> list[dict[str, str]]:
    out = cluster.docker("node", "ls", "--format", "{{json .}}").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_one_manager_two_workers_and_up_is_idempotent(swarm_cluster: SwarmCluster) -> None:
    before = nodes(swarm_cluster)
    assert len(before) == 3
    assert all(n["Status"] == "Ready" and n["Availability"] == "Active" for n in before)
    assert sorted(n["ManagerStatus"] for n in before) == ["", "", "Leader"]
    for node in swarm_cluster.nodes[1:]:
        info = node.docker("info", "--format", "{{.Swarm.LocalNodeState}} "
                           "{{.Swarm.ControlAvailable}}").stdout.split()
        assert info == ["active", "false"], info  # a worker
    listing = swarm_sh("list")
    assert swarm_sh("up") == listing
    assert sorted(n["ID"] for n in nodes(swarm_cluster)) == sorted(n["ID"] for n in before)


def wait_running(cluster: SwarmCluster, service: str, count: int) -> list[str]:
    """The node ids of the service's running tasks, once `count` of them run."""
    deadline = time.monotonic() + 120
    while True:
        out = cluster.docker("service", "ps", service, "--filter", "desired-state=running",
                             "--format", "{{.CurrentState}}|{{.Node}}|{{.Error}}").stdout
        running = [line for line in out.splitlines() if line.startswith("Running")]
        if len(running) >= count:
            ids = cluster.docker("service", "ps", service, "-q", "--filter",
                                 "desired-state=running").stdout.split()
            return [cluster.docker("inspect", "--format", "{{.NodeID}}", t).stdout.strip()
                    for t in ids]
        assert time.monotonic() < deadline, out
        time.sleep(1)


def test_dnsrr_service_on_an_overlay_spans_every_node(swarm_cluster: SwarmCluster,
                                                      tiny_app: TinyApp) -> None:
    name = f"ps-swt-{uuid.uuid4().hex[:8]}"
    image = f"{tiny_app.image}@{tiny_app.versions['v1'][1]}"
    port = "18080"
    try:
        made = swarm_cluster.docker("network", "create", "--driver", "overlay", "--attachable",
                                    name)
        assert made.returncode == 0, made.stderr
        created = swarm_cluster.docker(
            "service", "create", "--detach", "--name", name, "--replicas", "3",
            "--endpoint-mode", "dnsrr", "--network", name, "--no-resolve-image",
            "--publish", f"mode=host,target=8080,published={port}", image)
        assert created.returncode == 0, created.stderr
        # One host-mode port per node: the three tasks land on the three nodes.
        assert len(set(wait_running(swarm_cluster, name, 3))) == 3
        for node in swarm_cluster.nodes:
            url = f"http://{node.hostname}:{port}/health"
            with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310
                assert json.loads(answer.read())["version"] == "1"
        # Over the overlay (VXLAN between the nodes): a task on the manager reaches every
        # task by the addresses of tasks.<service>.
        task = swarm_cluster.docker("ps", "-q", "--filter",
                                    f"label=com.docker.swarm.service.name={name}").stdout.split()
        assert task, "no task of the service runs on the manager"
        looked = swarm_cluster.docker("exec", task[0], "/bin/busybox", "nslookup",
                                      f"tasks.{name}").stdout
        addresses = sorted({line.split()[-1] for line in looked.splitlines()
                            if line.startswith("Address") and "127.0.0.11" not in line})
        assert len(addresses) == 3, looked
        for address in addresses:
            got = swarm_cluster.docker(  # busybox nc: its static wget crashes on this path
                "exec", task[0], "/bin/busybox", "sh", "-c",
                'printf "GET /health HTTP/1.0\\r\\n\\r\\n" | /bin/busybox nc -w 5 "$0" 8080',
                address)
            assert got.returncode == 0 and '"version": "1"' in got.stdout, (address, got)
    finally:
        swarm_cluster.docker("service", "rm", name)
        for _ in range(60):
            if swarm_cluster.docker("network", "rm", name).returncode == 0:
                break
            time.sleep(1)


def test_a_container_joins_a_network_removed_and_made_again_at_once(
        swarm_cluster: SwarmCluster, tiny_app: TinyApp, tmp_path: Path) -> None:
    """Right after `docker network rm`, the manager still shows the overlay network for a
    moment: plainsail does not create it, and a container asked to join it is refused
    ("Could not attach to network ...: network ... not found") before it starts. Seen on
    every try here over SSH; objects.attach waits the copy out, creates the network and
    runs the container again."""
    manager = swarm_cluster.manager
    net = f"ps-net-{uuid.uuid4().hex[:8]}"
    (tmp_path / "plainsail.yml").write_text(
        f"service: {net}\nimage: {tiny_app.image}\ntarget: swarm\n"
        f"swarm:\n  manager: {manager.host}\n  replicas: 1\n"
        f"ssh:\n  identity_file: {manager.identity_file}\n"
        f"  known_hosts: {manager.known_hosts}\napp:\n  port: 8080\n  publish: 18080\n")
    cfg = configlib.load(tmp_path / "plainsail.yml", {}, swarm_ok=True)
    ex = executor_for(parse_host(manager.host), ssh_options(cfg))
    image = f"{tiny_app.image}@{tiny_app.versions['v1'][1]}"
    run = ["docker", "run", "--rm", "--network", net, "--entrypoint", "/bin/busybox", image]
    retries: list[str] = []
    try:
        ex.run(["docker", "pull", image], timeout=120)
        for _ in range(5):
            objects.ensure_network(ex, cfg, net)
            ex.run([*run, "true"], timeout=60)  # a container leaves the network
            ex.run(["docker", "network", "rm", net], timeout=60)
            objects.ensure_network(ex, cfg, net)  # sees the manager's stale copy
            got = objects.attach(ex, cfg, net, partial(ex.run, [*run, "echo", "joined"],
                                                       check=False, timeout=60),
                                 on_retry=retries.append)
            assert got.returncode == 0 and got.stdout.strip() == "joined", got.tail()
            if retries:
                break
        assert retries and "does not know the overlay network" in retries[0], retries
    finally:
        ex.run(["docker", "network", "rm", net], check=False, timeout=60)
        ex.close()


@pytest.mark.parametrize(("script", "variable"), [("hosts.sh", "PLAINSAIL_HOSTS_NET"),
                                                  ("swarm.sh", "PLAINSAIL_SWARM_NET")])
@pytest.mark.parametrize("net", ["10.256", "192.168", "10.1.2", "10.1;x"])
def test_a_test_cluster_address_range_is_checked_first(script: str, variable: str,
                                                       net: str) -> None:
    """The address range of a set of namespace hosts is refused, with one line, before
    anything is created (a fleet set and the Swarm set must not share one by accident)."""
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run(["bash", str(root / "scripts" / script), "list"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, variable: net,
                                                     "PLAINSAIL_HOSTS_DIR": "/nonexistent",
                                                     "PLAINSAIL_SWARM_DIR": "/nonexistent"})
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"hosts: PLAINSAIL_HOSTS_NET must be 10.N (N 0-255), got {net}"]
