"""Deploys behind the proxy, for real: `plainsail deploy` and `rollback` over the real sshd,
a real Caddy container and Docker Engine, under steady load from Debian's `hey` through the
proxy. An upgrade, a deploy whose gate fails and a rollback each drop no request."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import plainsail
from tests.support.notes_app import BASE_IMAGE
from tests.support.services import Registry
from tests.test_proxy_integration import (  # noqa: F401 - fixtures
    ProxyHost,
    caddy_ref,
    hey,
    hey_counts,
    ph,
)

pytestmark = pytest.mark.integration

APP = r"""
import http.server, os
NAME = os.environ["NAME"]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        broken = NAME == "broken" and self.path.startswith("/health")
        body = ("%s\n" % NAME).encode()
        self.send_response(500 if broken else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
"""


def sh(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def versions(registry: Registry, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[str, dict[str, str]]]:
    """Three builds of a tiny app in the test registry: name -> TAG@DIGEST."""
    repo = registry.repo(f"t/px-{uuid.uuid4().hex[:8]}")
    refs: dict[str, str] = {}
    for i, name in enumerate(("v1", "v2", "broken")):
        ctx = tmp_path_factory.mktemp(f"px-{name}")
        (ctx / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nENV NAME={name}\nCMD {json.dumps(['python3', '-c', APP])}\n")
        tag = f"{i + 1:x}" * 8
        sh("docker", "build", "-q", "-t", f"{repo}:{tag}", str(ctx))
        sh("docker", "push", "-q", f"{repo}:{tag}")
        digests = json.loads(sh("docker", "image", "inspect", "--format",
                                "{{json .RepoDigests}}", f"{repo}:{tag}"))
        refs[name] = f"{tag}@" + next(d for d in digests if d.startswith(repo + "@")).split(
            "@", 1)[1]
    yield repo, refs
    for ref in refs.values():
        subprocess.run(["docker", "image", "rm", f"{repo}:{ref.split('@')[0]}"],
                       capture_output=True)


def test_upgrade_failed_deploy_and_rollback_drop_no_request(
        ph: ProxyHost, versions: tuple[str, dict[str, str]],  # noqa: F811
        tmp_path: Path) -> None:
    repo, refs = versions
    service = f"pxd-{uuid.uuid4().hex[:6]}"
    cfg = tmp_path / "plainsail.yml"
    cfg.write_text(
        f"service: {service}\nimage: {repo}\nsigning: {{verify: false}}\n"
        f"hosts: ['{ph.ssh.host}']\nhost_dir: {ph.host_dir}\n"
        f"ssh:\n  identity_file: {ph.ssh.identity_file}\n  known_hosts: {ph.ssh.known_hosts}\n"
        "app:\n  port: 8000\n  stop_timeout: 2s\n"
        "health:\n  path: /health\n  attempts: 8\n  interval: 250ms\n"
        f"proxy:\n  host: {service}.test\n  image: {ph.image}\n  tls: off\n"
        f"  http_port: {ph.http_port}\n  https_port: {ph.https_port}\n"
        f"  network: {ph.network}\n  drain: 5s\n")

    def run(*args: str, code: int = 0) -> dict[str, object]:
        r = plainsail(*args, "--json", cwd=tmp_path, env={"GITHUB_ACTIONS": ""})
        assert r.code == code, r.text
        doc: dict[str, object] = json.loads(r.out)
        return doc

    try:
        assert run("deploy", refs["v1"])["outcome"] == "succeeded"
        assert ph.get_until(f"{service}.test", "v1")[0] == 200
        for args, code, outcome, serving in (
                (("deploy", refs["v2"]), 0, "succeeded", "v2"),
                (("deploy", refs["broken"]), 1, "failed-health-old-kept", "v2"),
                (("rollback",), 0, "succeeded", "v1")):
            load = hey(ph, f"{service}.test", 6, workers=4)
            doc = run(*args, code=code)
            out, _ = load.communicate(timeout=60)
            codes, errors = hey_counts(out)
            assert doc["outcome"] == outcome, doc
            assert set(codes) == {"200"} and not errors.strip(), (args, codes, errors)
            assert sum(codes.values()) > 100, codes
            assert ph.get(f"{service}.test")[1].strip() == serving
        # Maintenance: 503 with Retry-After for this service; a deploy still works behind it.
        r = plainsail("maintenance", "on", "--message", "Back soon", cwd=tmp_path)
        assert r.code == 0 and "maintenance of" in r.out, r.text
        status, body = ph.get(f"{service}.test")
        assert status == 503 and "Back soon" in body
        shown = json.loads(plainsail("status", "--json", cwd=tmp_path).out)["hosts"][0]
        assert shown["proxy"]["state"] == "running" and shown["proxy"]["behind_proxy"] is True
        assert shown["proxy"]["maintenance"] == {"on": True, "message": "Back soon"}
        assert shown["proxy"]["upstream"] == f"{shown['running']['container']}:8000"
        assert run("deploy", refs["v2"])["outcome"] == "succeeded"
        assert ph.get(f"{service}.test")[0] == 503
        assert plainsail("maintenance", "off", cwd=tmp_path).code == 0
        assert ph.get(f"{service}.test")[1].strip() == "v2"
        text = plainsail("status", cwd=tmp_path)
        assert text.code == 0 and "behind the proxy" in text.out, text.text
        assert "maintenance off" in text.out and "NOT behind" not in text.out
        records = [json.loads(line) for line in ph.ssh.run(
            ["cat", f"{ph.ssh.home}/{ph.host_dir[2:]}/{service}/history.jsonl"]
        ).stdout.splitlines()]
        switch = records[1]
        names = [s["name"] for s in switch["steps"]]
        assert names.index("route") < names.index("drain") < names.index("stop-old")
        assert isinstance(switch["in_flight_at_switch"], int)
        assert records[0]["maintenance"] == {"on": False, "message": None}
        assert records[-1]["maintenance"] == {"on": True, "message": "Back soon"}
    finally:
        ids = ph.ssh.run(["docker", "ps", "-aq", "--filter",
                          f"label=dev.plainsail.service={service}"]).stdout.split()
        if ids:
            ph.ssh.run(["docker", "rm", "-f", *ids])
