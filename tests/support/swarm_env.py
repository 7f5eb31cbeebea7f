"""A real 3-node Docker Swarm for the swarm tests: one manager and two workers, each a
namespace host with its own sshd and Docker Engine, brought up by the project's
`scripts/swarm.sh` (its own folder, names pss1..pss3 and addresses 10.232.N.2, apart from the
fleet tests' hosts). Every node reaches the session registry on its own 127.0.0.1.

The session fixture `swarm_cluster` brings the Swarm up (or reuses one already up) and
forwards the registry's port; a Swarm it started it takes down at the end.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.nshosts import NSHost, parse, run_script
from tests.support.services import Registry

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "swarm.sh"
NODES = 3


def swarm_sh(*args: str) -> str:
    return run_script(SCRIPT, *args, timeout=300)


@dataclass(frozen=True)
class SwarmCluster:
    nodes: list[NSHost]  # the manager first

    @property
    def manager(self) -> NSHost:
        return self.nodes[0]

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """docker against the manager's engine (test-side inspection and clean-up)."""
        return self.manager.docker(*args, timeout=timeout)


@pytest.fixture(scope="session")
def swarm_cluster(registry: Registry) -> Iterator[SwarmCluster]:
    if os.geteuid() != 0:
        pytest.skip("namespace hosts need root")
    was_up = len(swarm_sh("list").splitlines()) >= NODES
    listing = swarm_sh("up")
    port = registry.host.rsplit(":", 1)[1]
    swarm_sh("forward", port)
    env = dict(line.split("=", 1) for line in swarm_sh("env").splitlines())
    nodes = parse(listing, env, Path(env["PLAINSAIL_HOSTS_KEY"]).parent)[:NODES]
    try:
        yield SwarmCluster(nodes)
    finally:
        swarm_sh("unforward", port)
        if not was_up:
            swarm_sh("down")
