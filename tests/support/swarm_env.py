"""A real 3-node Docker Swarm for the swarm tests: one manager and two workers, each a
namespace host with its own sshd and Docker Engine, brought up by the project's
`scripts/swarm.sh` (its own folder, names pss1..pss3 and addresses 10.232.N.2, apart from the
fleet tests' hosts). Every node reaches the session registry on its own 127.0.0.1.

The session fixture `swarm_cluster` brings the Swarm up (or reuses one already up) and
forwards the registry's port; a Swarm it started it takes down at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CliResult
from tests.support.nshosts import NSHost, parse, run_script
from tests.support.services import Registry, remove_repo_images

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "swarm.sh"
NODES = 3


GOSSIP = re.compile(r"Node (\S+)/([\d.]+), (joined|left) gossip cluster")
GOSSIP_WAIT = 120.0


def swarm_sh(*args: str) -> str:
    out = run_script(SCRIPT, *args, timeout=300)
    if args[:1] == ("up",):
        wait_for_gossip(out)
    return out


def gossip_members(log: str) -> set[str]:
    """The addresses a node's engine counts in Swarm's gossip cluster, read from its log (an
    engine writes a new log each time it starts; a restarted node rejoins with a new id)."""
    ids: dict[str, str] = {}
    for node_id, address, event in GOSSIP.findall(log):
        if event == "joined":
            ids[node_id] = address
        else:
            ids.pop(node_id, None)
    return set(ids.values())


def wait_for_gossip(listing: str, timeout: float = GOSSIP_WAIT) -> None:
    """Until every node's engine counts every node in the gossip cluster that carries the
    overlay networks' addresses. A node's engine that started again is Ready at once but
    rejoins the gossip only some 30 s later; until then no container on it reaches one on
    another node ("No route to host"), so a test run right after a restart would fail."""
    nodes = [(Path(line.split()[2]).parent / "dockerd.log", line.split()[1])
             for line in listing.splitlines() if len(line.split()) == 4]
    wanted = {address for _, address in nodes}
    deadline = time.monotonic() + timeout
    while True:
        seen = {address: gossip_members(log.read_text(errors="replace"))
                for log, address in nodes}
        if all(members >= wanted for members in seen.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Swarm's gossip did not converge in {timeout:g}s: "
                               f"{ {a: sorted(m) for a, m in seen.items()} }")
        time.sleep(1)


@dataclass(frozen=True)
class SwarmCluster:
    nodes: list[NSHost]  # the manager first

    @property
    def manager(self) -> NSHost:
        return self.nodes[0]

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """docker against the manager's engine (test-side inspection and clean-up)."""
        return self.manager.docker(*args, timeout=timeout)


@dataclass
class SwarmService:
    """A test's service on the Swarm: its work folder (plainsail.yml), the app's image and
    versions (name -> (tag, digest)) and the service's name."""

    dir: Path
    image: str
    versions: dict[str, tuple[str, str]]
    service: str

    def ref(self, name: str) -> str:
        tag, digest = self.versions[name]
        return f"{tag}@{digest}"


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


# ---------------------------------------------------------------- an app to deploy to it

SWARM_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY busybox /bin/sh
COPY busybox /bin/cat
COPY start.sh /start.sh
ARG VERSION
ARG HEALTHY
ENV VERSION=$VERSION HEALTHY=$HEALTHY
CMD ["/bin/busybox", "sh", "/start.sh"]
"""
# The app: /health says its version (built unhealthy, it has none: 404, a broken release
# answering errors); /secret returns the secret it got as an environment variable, so a
# test sees that it arrived whole. It has the /bin/sh and cat plainsail's entry shim needs,
# and busybox's nc for Swarm's health check (the machine's static busybox wget crashes in
# a scratch image; plainsail's client lookup skips it).
SWARM_START = """/bin/busybox mkdir -p /www
if [ "$HEALTHY" = yes ]; then
  echo '{"database": "ok", "version": "'"$VERSION"'"}' > /www/health
fi
printf '%s' "$DATABASE_URL" > /www/secret
exec /bin/busybox httpd -f -p 8080 -h /www
"""


def build_swarm_app(image: str, ctx: Path) -> tuple[str, dict[str, tuple[str, str]]]:
    """The app in versions v1, v2 (healthy) and v3 (failing its gate), pushed to the
    registry of `image`; (image, name -> (tag, digest))."""
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text(SWARM_DOCKERFILE)
    (ctx / "start.sh").write_text(SWARM_START)
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
    return image, versions


def swarm_config(service: str, image: str, manager: NSHost, port: int, secret: str,
                 migrate: str, proxy_image: str | None = None,
                 order: str = "stop-first", healthcheck: bool = True) -> str:
    """plainsail.yml of the app on the Swarm: 3 replicas, `order` (stop-first), one secret,
    a migration command; the port published on each node, or with `proxy_image` (a
    pinned Caddy image) the port of the global proxy service on each node; `healthcheck`
    False: no Swarm health check (only plainsail's gate judges a release)."""
    entry = (f"proxy:\n  host: {service}.test\n  image: {proxy_image}\n  http_port: {port}\n"
             if proxy_image else "")
    publish = "" if proxy_image else f"  publish: {port}\n"
    return (f"service: {service}\nimage: {image}\nsigning:\n  verify: false\n"
            f"target: swarm\nswarm:\n  manager: {manager.host}\n  replicas: 3\n"
            f"  update: {{parallelism: 1, order: {order}}}\n"
            + ("" if healthcheck else "  healthcheck: false\n") +
            f"ssh:\n  identity_file: {manager.identity_file}\n"
            f"  known_hosts: {manager.known_hosts}\n"
            f"app:\n  port: 8080\n{publish}  secrets: [{secret}]\n"
            "  env: {MODE: swarm}\n  stop_timeout: 2s\n"
            f"migrate:\n  command: {migrate}\n  timeout: 60s\n"
            "health:\n  body_contains: '\"database\": \"ok\"'\n  attempts: 10\n"
            f"  interval: 500ms\n{entry}")


def remove_app_images(image: str, versions: dict[str, tuple[str, str]]) -> None:
    """The versions of build_swarm_app() out of the machine's engine (a test's clean-up),
    with any image a test tagged into the same repository (a moved tag)."""
    remove_repo_images(image)


def outcome(res: CliResult) -> dict[str, object]:
    """The record a `--json` command printed."""
    rec = json.loads(res.out)
    assert isinstance(rec, dict), res.text
    return rec


def pristine(cluster: SwarmCluster) -> None:
    """No service, no overlay network, no secret, no container, no image on any node."""
    for sid in cluster.docker("service", "ls", "-q").stdout.split():
        cluster.docker("service", "rm", sid)
    for _ in range(60):
        if not any(n.docker("ps", "-aq").stdout.split() for n in cluster.nodes):
            break
        time.sleep(1)
    ids = cluster.docker("secret", "ls", "-q").stdout.split()
    if ids:
        cluster.docker("secret", "rm", *ids)
    ids = cluster.docker("config", "ls", "-q", "--filter", "label=plainsail.proxy").stdout.split()
    if ids:
        cluster.docker("config", "rm", *ids)
    if not _network_removed(cluster, 30):
        # Docker 20.10 can leak the Swarm attachment of a container removed right after it
        # ran on an attachable network ("network ... is in use by task X", X of runtime
        # "attachment", its container gone): the network then cannot be removed until the
        # manager's engine restarts and reconciles its attachments.
        restart_manager_engine(cluster)
        assert _network_removed(cluster, 30), "the overlay network plainsail stays in use"
    for _ in range(60):  # and until the manager's own copy of it is gone too
        if cluster.docker("network", "inspect", "plainsail").returncode != 0:
            break
        time.sleep(0.25)
    for node in cluster.nodes:
        node.docker("container", "prune", "-f")
        images = node.docker("image", "ls", "-aq").stdout.split()
        if images:
            node.docker("image", "rm", "-f", *images)


def _network_removed(cluster: SwarmCluster, tries: int) -> bool:
    """Remove the overlay network plainsail, retrying once a second (tasks of removed
    services may still hold it); True once it is gone."""
    for _ in range(tries):
        res = cluster.docker("network", "rm", "plainsail")
        if res.returncode == 0 or "not found" in res.stderr or "No such" in res.stderr:
            return True
        time.sleep(1)
    return False


def stop_engine(node_dir: Path) -> None:
    """Stop a node's Docker Engine (SIGTERM) and wait until it is gone."""
    pid = int((node_dir / "docker.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    for _ in range(300):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)


def restart_manager_engine(cluster: SwarmCluster) -> None:
    """Stop the manager's Docker Engine and start it again (scripts/swarm.sh up)."""
    stop_engine(cluster.manager.docker_socket.parent)
    swarm_sh("up")


def deploy_until_update(work: Path, ref: str, env: dict[str, str]
                        ) -> tuple[subprocess.Popen[str], list[str]]:
    """`plainsail deploy REF --json` in the background, read until it has asked Swarm for
    the update: (the process, its stderr lines so far). Its progress goes to stderr while
    stdout carries the record."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "plainsail", "deploy", ref, "-c", str(work / "plainsail.yml"),
         "--json"], cwd=work, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **env})
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "update the service" in line:
            break
    return proc, seen


def answers(cluster: SwarmCluster, port: int, timeout: float = 5) -> list[str]:
    """The version each node's port answers with ("-" when it does not answer)."""
    out = []
    for node in cluster.nodes:
        try:
            with urllib.request.urlopen(  # noqa: S310
                    f"http://{node.hostname}:{port}/health", timeout=timeout) as a:
                out.append(json.loads(a.read())["version"])
        except OSError:
            out.append("-")
    return out
