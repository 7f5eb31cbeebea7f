"""An unsigned image and a moved tag are refused on the real 3-node Swarm (scripts/swarm.sh)
with `signing.verify: true` and a real key, before anything changes: the service keeps its
spec (not one update), no secret, network, container or image appears on any node, the
manager's records and lock are as they were; only the local history holds the refusal."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CliResult, plainsail
from tests.support.deploy_env import COSIGN_PASSWORD
from tests.support.services import Registry
from tests.support.swarm_env import (
    SwarmCluster,
    SwarmService,
    answers,
    build_swarm_app,
    remove_app_images,
    swarm_config,
)

PORT = 18434
ENV = {"DATABASE_URL": "postgresql://app:signed@db/app", "COSIGN_PASSWORD": COSIGN_PASSWORD}


@dataclass
class App(SwarmService):
    cluster: SwarmCluster

    def run(self, *args: str) -> CliResult:
        return plainsail(*args, "-c", str(self.dir / "plainsail.yml"), cwd=self.dir, env=ENV,
                         timeout=300)

    def snapshot(self) -> dict[str, object]:
        """What a deploy of this service would change anywhere on the cluster (other
        services' containers may still be going away meanwhile)."""
        c = self.cluster
        spec = json.loads(c.docker("service", "inspect", self.service).stdout)[0]
        state = c.manager.home / ".plainsail" / self.service
        mine = f"label=com.docker.swarm.service.name={self.service}"
        return {
            "service": (spec["Version"]["Index"], spec["Spec"]),
            "secrets": c.docker("secret", "ls", "--filter", f"label=plainsail.service="
                                f"{self.service}", "--format", "{{.Name}}").stdout,
            "networks": c.docker("network", "ls", "--format", "{{.Name}}").stdout,
            "nodes": [(n.docker("ps", "-a", "--filter", mine, "--format",
                                "{{.ID}} {{.Image}}").stdout,
                       n.docker("image", "ls", "-a", "--digests", "--format", "{{.Digest}}",
                                self.image).stdout) for n in c.nodes],
            "history": (state / "history.jsonl").read_text(),
            "lock": (state / "lock").exists(),
        }


@pytest.fixture
def app(swarm_cluster: SwarmCluster, registry: Registry, tmp_path: Path) -> Iterator[App]:
    image, versions = build_swarm_app(registry.repo(f"t/swarmsig-{uuid.uuid4().hex[:8]}"),
                                      tmp_path)
    service = f"pssig{uuid.uuid4().hex[:6]}"
    text = swarm_config(service, image, swarm_cluster.manager, PORT, "DATABASE_URL",
                        "[/bin/busybox, echo, migrated]")
    (tmp_path / "plainsail.yml").write_text(text.replace(
        "signing:\n  verify: false\n",
        "signing:\n  verify: true\n  key: cosign.key\n  public_key: cosign.pub\n"))
    a = App(tmp_path, image, versions, service, swarm_cluster)
    try:
        keygen = plainsail("keygen", cwd=tmp_path, env=ENV)
        assert keygen.code == 0, keygen.text
        yield a
    finally:
        swarm_cluster.docker("service", "rm", service)
        remove_app_images(image, versions)


def refused(app: App, ref: str, words: str) -> None:
    before = app.snapshot()
    res = app.run("deploy", ref, "--json")
    rec = json.loads(res.out)
    assert res.code == 1 and rec["outcome"] == "aborted" and rec["preflight"], res.text
    assert words in rec["reason"], rec["reason"]
    assert app.snapshot() == before
    assert answers(app.cluster, PORT) == ["1", "1", "1"]
    local = (app.dir / ".plainsail" / "history.jsonl").read_text().splitlines()
    assert json.loads(local[-1])["id"] == rec["id"]


def test_unsigned_image_and_moved_tag_refused_before_any_change(app: App) -> None:
    (t1, d1), (t2, d2), (_, d3) = (app.versions[v] for v in ("v1", "v2", "v3"))
    signed = app.run("sign", t1)
    assert signed.code == 0, signed.text
    first = app.run("deploy", f"{t1}@{d1}", "--json")
    assert first.code == 0 and json.loads(first.out)["verified"], first.text
    # v2 was pushed but never signed.
    refused(app, f"{t2}@{d2}", "unsigned:")
    # v2 signed, then its tag moved to another image (v3's) in the registry.
    assert app.run("sign", t2).code == 0
    subprocess.run(["docker", "tag", f"{app.image}@{d3}", f"{app.image}:{t2}"], check=True)
    subprocess.run(["docker", "push", "-q", f"{app.image}:{t2}"], check=True,
                   capture_output=True)
    refused(app, f"{t2}@{d2}", "tag drift")
    refused(app, t2, "unsigned:")  # the tag alone now names v3, which nobody signed
