"""Real hosts for fleet tests: network namespaces, each with its own sshd and Docker Engine,
brought up by the project's `scripts/hosts.sh` (see its header for the interface). A host
is reached only over SSH (`ssh://psdeploy@10.231.N.2`); the registry and PostgreSQL are
reached from inside it on 127.0.0.1 through forwards over the shared filesystem, so image
names and database URLs are the same on every host.

The session fixture `ns_hosts` brings up three hosts (or reuses hosts already up) and
forwards the session registry's port; hosts it started it tears down at the end. The script
inherits the test run's environment: PLAINSAIL_HOSTS_DIR, PLAINSAIL_HOSTS_PREFIX and
PLAINSAIL_HOSTS_NET select a set of hosts other than the default one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import Registry
from tests.support.sshd import SSHHost

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "hosts.sh"
COUNT = 3


def run_script(script: Path, *args: str, timeout: float = 180) -> str:
    """Run a scripts/ script; its stdout. A failure fails the test with the script's words."""
    res = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                         timeout=timeout, check=False)
    if res.returncode != 0:
        pytest.fail(f"scripts/{script.name} {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def hosts_sh(*args: str) -> str:
    return run_script(SCRIPT, *args)


@dataclass(frozen=True)
class NSHost(SSHHost):
    name: str = ""
    docker_socket: Path = Path()

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """docker against this host's own engine, from the machine (test-side inspection)."""
        return subprocess.run(["docker", "-H", f"unix://{self.docker_socket}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def parse(listing: str, env: dict[str, str], directory: Path) -> list[NSHost]:
    """The hosts of `scripts/hosts.sh list` (NAME ADDRESS DOCKER_SOCKET HOME per line)."""
    hosts = []
    for line in listing.splitlines():
        name, address, socket, home = line.split()
        hosts.append(NSHost(
            host=f"ssh://{env['PLAINSAIL_HOSTS_USER']}@{address}", hostname=address, port=22,
            user=env["PLAINSAIL_HOSTS_USER"], home=Path(home),
            identity_file=Path(env["PLAINSAIL_HOSTS_KEY"]),
            known_hosts=Path(env["PLAINSAIL_HOSTS_KNOWN_HOSTS"]), directory=directory,
            name=name, docker_socket=Path(socket)))
    return hosts


def hosts_env() -> dict[str, str]:
    return dict(line.split("=", 1) for line in hosts_sh("env").splitlines() if "=" in line)


@pytest.fixture(scope="session")
def ns_hosts(registry: Registry) -> Iterator[list[NSHost]]:
    """Three namespace hosts, each reaching the session registry on its own 127.0.0.1."""
    if os.geteuid() != 0:
        pytest.skip("namespace hosts need root")
    was_up = len(hosts_sh("list").splitlines()) >= COUNT
    listing = hosts_sh("up", str(COUNT))
    port = registry.host.rsplit(":", 1)[1]
    hosts_sh("forward", port)
    env = hosts_env()
    hosts = parse(listing, env, Path(env["PLAINSAIL_HOSTS_KEY"]).parent)[:COUNT]
    try:
        yield hosts
    finally:
        hosts_sh("unforward", port)
        if not was_up:
            hosts_sh("down")
