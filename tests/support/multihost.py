"""Real hosts for fleet tests and a tiny app to deploy to them: three network-namespace hosts
(tests/support/nshosts.py), each with its own sshd and Docker Engine, so each has its own
containers, images and volumes as separate machines would; all reach the test registry on
their own loopback."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.nshosts import NSHost
from tests.support.services import Registry, remove_repo_images


@dataclass
class Fleet:
    """The namespace hosts of the session (scripts/hosts.sh), in order."""

    hosts: list[NSHost]

    @property
    def a(self) -> NSHost:
        return self.hosts[0]

    @property
    def b(self) -> NSHost:
        return self.hosts[1]

    @property
    def c(self) -> NSHost:
        return self.hosts[2]

    @property
    def known_hosts(self) -> Path:
        return self.a.known_hosts

    def docker(self, host: NSHost, *args: str) -> subprocess.CompletedProcess[str]:
        return host.docker(*args)

    def config(self, service: str, image: str, volume: str) -> str:
        """plainsail.yml of the tiny app on every host, its flag volume mounted at /flag."""
        return (f"service: {service}\nimage: {image}\nsigning:\n  verify: false\n"
                "hosts:\n" + "".join(f"  - {h.host}\n" for h in self.hosts) +
                f"ssh:\n  identity_file: {self.a.identity_file}\n"
                f"  known_hosts: {self.known_hosts}\n"
                f"app:\n  port: 8080\n  volumes: ['{volume}:/flag']\n  stop_timeout: 2s\n"
                "migrate:\n  command: [/bin/busybox, echo, migrated]\n  timeout: 30s\n"
                "health:\n  body_contains: '\"database\": \"ok\"'\n  attempts: 8\n"
                "  interval: 250ms\nretain: 2\n")


@pytest.fixture(scope="session")
def fleet(ns_hosts: list[NSHost]) -> Fleet:
    """Three hosts, each its own network namespace with its own sshd and Docker Engine."""
    return Fleet(ns_hosts)


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
    remove_repo_images(image)
