"""Deploys behind the proxy, for real: `plainsail deploy` and `rollback` over the real sshd,
a real Caddy container and Docker Engine, under steady load from Debian's `hey` through the
proxy. An upgrade, a deploy whose gate fails and a rollback each drop no request."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.support.cli import plainsail
from tests.support.proxy_env import ProxyApps, assert_served
from tests.test_proxy_integration import (  # noqa: F401 - fixtures
    ProxyHost,
    caddy_ref,
    hey,
    ph,
)

pytestmark = pytest.mark.integration


def test_upgrade_failed_deploy_and_rollback_drop_no_request(
        ph: ProxyHost, proxy_apps: ProxyApps,  # noqa: F811
        tmp_path: Path) -> None:
    repo, refs = proxy_apps.repo, proxy_apps.refs
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
            assert doc["outcome"] == outcome, doc
            assert_served(out, minimum=100, what=" ".join(args))
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
