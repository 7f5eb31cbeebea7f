"""The PostgreSQL client image for backups: Debian's client binaries on the local base
image (scripts/setup.sh builds it), pushed to the test registry once per session because
backup.image must be pinned by digest. And the test server reached from containers on
bridge networks (the proxy's), as a real host reaches its database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.notes_app import PG_HOST, PG_PORT
from tests.support.proxy_env import pushed_pinned
from tests.support.services import Registry, free_port

PGCLIENT_IMAGE = os.environ.get("PLAINSAIL_PGCLIENT_IMAGE", "plainsail-pgclient:bookworm")
# The name containers give the Docker host (`add_hosts: [host.docker.internal:host-gateway]`)
GATEWAY_NAME = "host.docker.internal"


@pytest.fixture(scope="session")
def pgclient_image(registry: Registry) -> Iterator[str]:
    """REPOSITORY:TAG@DIGEST of the client image in the test registry."""
    yield from pushed_pinned(registry, PGCLIENT_IMAGE, "pgclient", "15")


@dataclass
class BridgedPostgres:
    """Where a container on a bridge network reaches the test server."""

    host: str  # the name to use in DATABASE_URL (with the add_hosts entry below)
    port: int
    add_host: str = f"{GATEWAY_NAME}:host-gateway"


@pytest.fixture(scope="session")
def pg_on_bridge(registry: Registry) -> Iterator[BridgedPostgres]:
    """The test server on the Docker host's gateway address (what `host-gateway` names):
    a forwarder there to the server on 127.0.0.1 stands in for `listen_addresses` and a
    pg_hba line for the Docker subnets, so the shared server is never restarted."""
    if not shutil.which("socat"):
        pytest.fail("socat is not installed; run scripts/setup.sh")
    gateway = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format",
         "{{(index .IPAM.Config 0).Gateway}}"], capture_output=True, text=True,
        check=True).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind={gateway},reuseaddr,fork",
                             f"TCP:{PG_HOST}:{PG_PORT}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((gateway, port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    f"socat did not listen on {gateway}:{port}"
                time.sleep(0.05)
        yield BridgedPostgres(GATEWAY_NAME, port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
