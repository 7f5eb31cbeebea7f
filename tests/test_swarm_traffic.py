"""Traffic on a real 3-node Swarm (scripts/swarm.sh) behind plainsail's proxy: a global
Caddy service publishing one port on every node, sending each request to a task of
`tasks.<service>` on the overlay network; the app tasks publish nothing. From a pristine
cluster: a first deploy creates the proxy; an upgrade of 3 replicas (start-first) under
load from `hey` against a worker node's proxy port fails no request; a version failing
its gate (404 on /health), under the same load, fails no request (Swarm's health check
keeps its task out of `tasks.<service>`) and the old digest serves again."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CliResult, plainsail
from tests.support.proxy_env import Load, start_load
from tests.support.services import Registry
from tests.support.swarm_env import (
    SwarmCluster,
    build_swarm_app,
    outcome,
    pristine,
    remove_app_images,
    swarm_config,
)

PORT = 18441
PUBLISHED = 18442
SECRET = "postgresql://app:traffic-secret@db/app"


@dataclass
class ProxiedApp:
    dir: Path
    image: str
    versions: dict[str, tuple[str, str]]
    cluster: SwarmCluster
    service: str

    def ref(self, name: str) -> str:
        tag, digest = self.versions[name]
        return f"{tag}@{digest}"

    def run(self, *args: str, as_json: bool = True, config: str = "plainsail.yml"
            ) -> CliResult:
        return plainsail(*args, "-c", str(self.dir / config),
                         *(["--json"] if as_json else []), cwd=self.dir,
                         env={"DATABASE_URL": SECRET}, timeout=600)

    def answers(self, per_node: int = 3) -> list[str]:
        """The versions each node's proxy port answers with, `per_node` requests each."""
        out = []
        for node in self.cluster.nodes:
            for _ in range(per_node):
                try:
                    with urllib.request.urlopen(  # noqa: S310
                            f"http://{node.hostname}:{PORT}/health", timeout=5) as a:
                        out.append(json.loads(a.read())["version"])
                except OSError:
                    out.append("-")
        return out

    def load(self, seconds: float = 300) -> Load:
        """About 100 requests a second against a worker node's proxy port."""
        return start_load(PORT, f"{self.service}.test", seconds, workers=4, path="/health",
                          address=self.cluster.nodes[1].hostname, rate=25)

    def image_of_service(self) -> str:
        res = self.cluster.docker("service", "inspect", "--format",
                                  "{{.Spec.TaskTemplate.ContainerSpec.Image}}", self.service)
        return res.stdout.strip()


@pytest.fixture(scope="module")
def proxied(swarm_cluster: SwarmCluster, registry: Registry, caddy_image: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedApp]:
    image, versions = build_swarm_app(registry.repo(f"t/swarmpx-{uuid.uuid4().hex[:8]}"),
                                      tmp_path_factory.mktemp("swarmpxapp"))
    service = f"psspx{uuid.uuid4().hex[:6]}"
    work = tmp_path_factory.mktemp("swarmpx")
    (work / "plainsail.yml").write_text(swarm_config(
        service, image, swarm_cluster.manager, PORT, "DATABASE_URL",
        "[/bin/busybox, echo, migrated]",
        proxy_image=caddy_image,
        order="start-first"))
    (work / "stop-first.yml").write_text(swarm_config(
        service, image, swarm_cluster.manager, PORT, "DATABASE_URL",
        "[/bin/busybox, echo, migrated]", proxy_image=caddy_image, order="stop-first"))
    (work / "published.yml").write_text(swarm_config(  # no proxy: a port on each task
        service, image, swarm_cluster.manager, PUBLISHED, "DATABASE_URL",
        "[/bin/busybox, echo, migrated]"))
    pristine(swarm_cluster)
    yield ProxiedApp(work, image, versions, swarm_cluster, service)
    pristine(swarm_cluster)
    remove_app_images(image, versions)


def counted(load: Load, what: str) -> dict[str, int]:
    codes, errors = load.stop()
    failed = sum(n for code, n in codes.items() if code != "200")
    errored = sum(int(n) for n in re.findall(r"\[(\d+)\]", errors))
    print(f"{what}: {sum(codes.values())} answered ({codes}), {failed + errored} failed"
          + (f": {errors}" if errors else ""))
    assert errors == "" and set(codes) == {"200"}, (codes, errors)
    assert codes["200"] >= 200, codes
    return codes


def test_first_deploy_creates_the_proxy_on_every_node(proxied: ProxiedApp) -> None:
    app = proxied
    res = app.run("deploy", app.ref("v1"))
    rec = outcome(res)
    assert res.code == 0 and rec["outcome"] == "succeeded", res.text
    assert rec["proxy"]["changed"] is True  # type: ignore[index]
    assert set(app.answers()) == {"1"}
    spec = json.loads(app.cluster.docker("service", "inspect", app.service).stdout)[0]
    assert not (spec["Spec"].get("EndpointSpec") or {}).get("Ports")  # the tasks publish nothing
    status = json.loads(app.run("status").out)
    px = status["proxy"]
    assert px["exists"] and [t["state"] for t in px["tasks"]] == ["running"] * 3, px
    assert [t["health"] for t in status["tasks"]] == ["ok", "ok", "ok"], status


def test_upgrade_of_three_replicas_under_load_fails_no_request(proxied: ProxiedApp) -> None:
    app = proxied
    load = app.load()
    res = app.run("deploy", app.ref("v2"))
    codes = counted(load, "upgrade v1 -> v2 (start-first)")
    rec = outcome(res)
    assert res.code == 0 and rec["outcome"] == "succeeded", res.text
    assert rec["proxy"]["changed"] is False  # type: ignore[index]
    assert set(app.answers()) == {"2"}
    assert codes["200"] > 0


def test_failed_update_under_load_fails_no_request_and_the_old_digest_serves(
        proxied: ProxiedApp) -> None:
    app = proxied
    load = app.load()
    res = app.run("deploy", app.ref("v3"))
    counted(load, "failed update to v3 (404 on /health), back to v2")
    rec = outcome(res)
    assert res.code == 1 and rec["outcome"] == "failed-health-restored", res.text
    # Swarm's health check kept v3's task out of tasks.<service>: no request reached it.
    assert "update is paused" in str(rec["reason"]), rec["reason"]
    assert app.image_of_service().endswith("@" + app.versions["v2"][1])
    assert set(app.answers()) == {"2"}


def test_stop_first_update_under_load_fails_no_request(proxied: ProxiedApp) -> None:
    """Each task is stopped before its replacement starts: the other two serve meanwhile."""
    app = proxied
    load = app.load()
    res = app.run("deploy", app.ref("v1"), config="stop-first.yml")
    counted(load, "update v2 -> v1 (stop-first)")
    rec = outcome(res)
    assert res.code == 0 and rec["outcome"] == "succeeded", res.text
    assert set(app.answers()) == {"1"}


def test_app_publish_given_and_given_up_again_moves_the_tasks_port(
        proxied: ProxiedApp) -> None:
    app = proxied

    def ports() -> list[object]:
        spec = json.loads(app.cluster.docker("service", "inspect", app.service).stdout)[0]
        return list((spec["Spec"].get("EndpointSpec") or {}).get("Ports") or [])

    res = app.run("deploy", app.ref("v2"), config="published.yml")
    assert res.code == 0 and outcome(res)["outcome"] == "succeeded", res.text
    # The proxy is left running (a load balancer may point at it), and said so.
    assert f"docker service rm {app.service}-proxy" in res.err, res.err
    assert [(p["TargetPort"], p["PublishedPort"], p["PublishMode"])  # type: ignore[index]
            for p in ports()] == [(8080, PUBLISHED, "host")]
    for node in app.cluster.nodes:
        with urllib.request.urlopen(f"http://{node.hostname}:{PUBLISHED}/health",  # noqa: S310
                                    timeout=5) as a:
            assert json.loads(a.read())["version"] == "2"
    res = app.run("deploy", app.ref("v1"), config="stop-first.yml")
    assert res.code == 0 and outcome(res)["outcome"] == "succeeded", res.text
    assert ports() == []
    assert set(app.answers()) == {"1"}
