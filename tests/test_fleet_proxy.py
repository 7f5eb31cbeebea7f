"""Behind the proxy under load on three real hosts (network namespaces, each with its own
sshd and Docker Engine): an upgrade in batches (canary 1, then the rest) and a deploy whose
gate fails in batch 2 cost no request on any host, and every host ends on the right version.

The load is Debian's `hey` from this machine to each host's proxy (10.231.N.2), bounded in
time (and stopped as soon as the deploy ends) and in rate."""

from __future__ import annotations

import json
import random
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CliResult, plainsail
from tests.support.multihost import Fleet, TinyApp
from tests.support.nshosts import NSHost
from tests.support.proxy_env import Load, get_through, start_load

LOAD_SECONDS = 90  # an upper bound: each load is stopped when its deploy ends
WORKERS = 4
RATE = 50  # requests per second per worker, so at most 200/s on each host


@dataclass
class ProxyFleet:
    path: Path
    service: str
    volume: str
    fleet: Fleet
    app: TinyApp
    caddy: str
    http_port: int

    @property
    def site(self) -> str:
        return f"{self.service}.test"

    def write(self, extra: str = "") -> None:
        (self.path / "plainsail.yml").write_text(
            self.fleet.config(self.service, self.app.image, self.volume) +
            f"proxy:\n  host: {self.site}\n  image: {self.caddy}\n  tls: off\n"
            f"  http_port: {self.http_port}\n  https_port: {self.http_port + 1}\n"
            f"  network: {self.service}-net\n  drain: 3s\n" + extra)

    def run(self, *args: str) -> CliResult:
        return plainsail(*args, cwd=self.path, env={"GITHUB_ACTIONS": ""})

    def through_proxy(self, host: NSHost) -> str:
        """The version `host`'s proxy answers with for the service's site."""
        status, body = get_through(host.hostname, self.http_port, self.site)
        assert status == 200, (host.host, status, body)
        return str(json.loads(body)["version"])

    def versions(self) -> list[str]:
        return [self.through_proxy(h) for h in self.fleet.hosts]

    def load(self) -> list[Load]:
        return [start_load(self.http_port, self.site, LOAD_SECONDS, WORKERS, "/health",
                           address=h.hostname, rate=RATE) for h in self.fleet.hosts]

    def fail_on(self, host: NSHost, version: str) -> None:
        """Make `version` fail its health gate on `host` only (a file in its volume)."""
        tag, digest = self.app.versions["v1"]
        r = host.docker("run", "--rm", "-v", f"{self.volume}:/flag",
                        f"{self.app.image}@{digest}", "/bin/busybox", "touch",
                        f"/flag/fail-{version}")
        assert r.returncode == 0, r.stderr


def no_failure(loads: list[Load]) -> None:
    """Every host's load ended with only 200s (and enough of them to mean something)."""
    for ld in loads:
        ld.stop()
        ld.assert_no_failure(minimum=200)


@pytest.fixture
def proxy_fleet(tmp_path: Path, fleet: Fleet, tiny_app: TinyApp, caddy_image: str
                ) -> Iterator[ProxyFleet]:
    service = f"pxf-{uuid.uuid4().hex[:8]}"
    d = ProxyFleet(tmp_path, service, f"{service}-flag", fleet, tiny_app, caddy_image,
                   random.randrange(21000, 29000, 2))
    d.write()
    yield d
    for host in fleet.hosts:
        ids = host.docker("ps", "-aq", "--filter",
                          f"label=dev.plainsail.service={service}").stdout.split()
        proxies = host.docker("ps", "-aq", "--filter", f"network={service}-net").stdout.split()
        if ids or proxies:
            host.docker("rm", "-f", *ids, *proxies)
        host.docker("network", "rm", f"{service}-net")
        host.docker("volume", "rm", "-f", service + "-flag")
        host.run(["rm", "-rf", f"{host.home}/.plainsail/{service}"])
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_upgrade_and_a_failed_batch_behind_the_proxy_lose_no_request_on_any_host(
        proxy_fleet: ProxyFleet) -> None:
    d, f = proxy_fleet, proxy_fleet.fleet
    r = d.run("deploy", d.app.ref("v1"))
    assert r.code == 0, r.text
    assert d.versions() == ["1", "1", "1"]

    d.write("rollout:\n  canary: 1\n  batch: 2\n")
    loads = d.load()
    r = d.run("deploy", d.app.ref("v2"), "--json")
    no_failure(loads)
    assert r.code == 0, r.text
    summary = json.loads(r.out)
    assert [(h["outcome"], h["batch"]) for h in summary["per_host"]] == [
        ("succeeded", 1), ("succeeded", 2), ("succeeded", 2)]
    assert d.versions() == ["2", "2", "2"]

    d.fail_on(f.b, "3")
    loads = d.load()
    r = d.run("deploy", d.app.ref("v3"), "--json")
    no_failure(loads)
    assert r.code == 1, r.text
    per_host = {h["host"]: h for h in json.loads(r.out)["per_host"]}
    assert per_host[f.a.host]["outcome"] == "failed-health-restored"
    # Behind the proxy a host failing its gate never took traffic: its old one was kept.
    assert (per_host[f.b.host]["outcome"], per_host[f.b.host]["batch"]) == (
        "failed-health-old-kept", 2)
    # c, in the same batch, passed its gate and switched: it was put back.
    assert (per_host[f.c.host]["outcome"], per_host[f.c.host]["batch"]) == (
        "failed-health-restored", 2)
    assert d.versions() == ["2", "2", "2"]
