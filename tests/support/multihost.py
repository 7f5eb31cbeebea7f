"""Two real hosts for fleet tests: the first SSH test host on the machine's Docker Engine,
and a second one whose sshd points its user at a second Docker Engine (its own dockerd,
data root, bridge and socket). Each host has its own containers, images and volumes, as
two machines would; both reach the test registry on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import Registry
from tests.support.sshd import SSHHost, start_sshd, stop_sshd

BRIDGE = "psbr1"
BRIDGE_CIDR = "172.31.250.1/24"
STATE = Path("/var/tmp/plainsail-test-docker2")
SOCKET = Path("/run/psdocker2.sock")
PIDFILE = Path("/run/psdocker2.pid")


def _docker2(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "-H", f"unix://{SOCKET}", *args], capture_output=True,
                          text=True, check=check, timeout=120)


def _stop_old_daemon() -> None:
    """Stop a second engine left by an earlier run; drop its pid file if it died."""
    if PIDFILE.exists():
        try:
            os.kill(int(PIDFILE.read_text().strip()), 15)
        except (ValueError, ProcessLookupError):
            PIDFILE.unlink(missing_ok=True)
        for _ in range(100):
            if not PIDFILE.exists():
                break
            time.sleep(0.1)


@pytest.fixture(scope="session")
def second_engine() -> Iterator[str]:
    """A second dockerd; yields its DOCKER_HOST."""
    if os.geteuid() != 0:
        pytest.skip("a second Docker Engine needs root")
    _stop_old_daemon()
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", BRIDGE_CIDR, "dev", BRIDGE], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    STATE.mkdir(parents=True, exist_ok=True)
    log = open(STATE / "dockerd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["dockerd", "--data-root", str(STATE / "data"), "--exec-root", "/run/psdocker2",
         "-H", f"unix://{SOCKET}", "--pidfile", str(PIDFILE), "--bridge", BRIDGE,
         "--iptables=false", "--ip-masq=false", "--group", "docker"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while _docker2("info", check=False).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the second dockerd did not start:\n"
                        + (STATE / "dockerd.log").read_text()[-2000:])
        time.sleep(0.2)
    yield f"unix://{SOCKET}"
    leftovers = _docker2("ps", "-aq", check=False).stdout.split()
    if leftovers:
        _docker2("rm", "-f", *leftovers, check=False)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


@dataclass
class Fleet:
    a: SSHHost  # on the machine's engine
    b: SSHHost  # on the second engine
    b_docker_host: str
    known_hosts: Path

    def docker(self, host: SSHHost, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ}
        if host is self.b:
            env["DOCKER_HOST"] = self.b_docker_host
        return subprocess.run(["docker", *args], capture_output=True, text=True, env=env,
                              timeout=120)


@pytest.fixture(scope="session")
def fleet(ssh_host: SSHHost, second_engine: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Fleet]:
    b, proc = start_sshd("psdeploy2", identity_from=ssh_host.identity_file,
                         extra_config=f"SetEnv DOCKER_HOST={second_engine}\n",
                         docker_socket=SOCKET)
    known = tmp_path_factory.mktemp("fleet") / "known_hosts"
    known.write_text(ssh_host.known_hosts.read_text() + b.known_hosts.read_text())
    try:
        yield Fleet(ssh_host, b, second_engine, known)
    finally:
        stop_sshd(proc, b.directory)


# ---------------------------------------------------------------- a tiny app per version


@dataclass
class TinyApp:
    image: str
    versions: dict[str, tuple[str, str]]  # name -> (tag, digest)

    def ref(self, name: str) -> str:
        tag, digest = self.versions[name]
        return f"{tag}@{digest}"


DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY start.sh /start.sh
ARG VERSION
ENV VERSION=$VERSION
CMD ["/bin/busybox", "sh", "/start.sh"]
"""
START = """/bin/busybox mkdir -p /www
if [ -e "/flag/fail-$VERSION" ]; then
  echo '{"database": "down"}' > /www/health
else
  echo '{"database": "ok", "version": "'"$VERSION"'"}' > /www/health
fi
exec /bin/busybox httpd -f -p 8080 -h /www
"""


@pytest.fixture(scope="session")
def tiny_app(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyApp]:
    """A busybox httpd app in three versions; version N fails its health check on a host
    whose volume holds the file fail-N (how a fleet test makes one host fail)."""
    ctx = tmp_path_factory.mktemp("tiny")
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "start.sh").write_text(START)
    image = registry.repo(f"t/tiny-{uuid.uuid4().hex[:8]}")
    versions = {}
    for n in ("1", "2", "3"):
        tag = uuid.uuid4().hex[:8]
        ref = f"{image}:{tag}"
        subprocess.run(["docker", "build", "-q", "--build-arg", f"VERSION={n}", "-t", ref,
                        str(ctx)], check=True, capture_output=True)
        subprocess.run(["docker", "push", "-q", ref], check=True, capture_output=True)
        digest = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", ref],
            check=True, capture_output=True, text=True).stdout.strip().split("@")[1]
        versions[f"v{n}"] = (tag, digest)
    yield TinyApp(image, versions)
    images = [f"{image}:{t}" for t, _ in versions.values()]
    subprocess.run(["docker", "image", "rm", "-f", *images], capture_output=True)
