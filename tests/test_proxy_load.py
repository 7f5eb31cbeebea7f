"""Deploys behind the proxy under steady load, for real: `plainsail deploy` over the real
sshd, a real Caddy container and Docker Engine, and Debian's `hey` through the proxy. A
deploy whose migration fails, a deploy interrupted by SIGTERM during its gate or right
after its switch, a 2-second request across the switch, two services on one host, and a
proxy that is missing, stopped or lost its admin socket: no request fails, and every
attempt ends in a defined outcome."""

from __future__ import annotations

import http.client
import signal
import threading
from pathlib import Path

import pytest

from plainsail.proxy import argv as pargv
from tests.support.proxy_env import ProxyApps, ProxyService, proxy_service, start_load
from tests.test_proxy_integration import ProxyHost, caddy_ref, ph  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

FAILING_MIGRATION = ("migrate:\n  command: [python3, -c, \"import sys; "
                     "sys.exit('0002_add_column: column exists')\"]\n")


@pytest.fixture
def svc(ph: ProxyHost, proxy_apps: ProxyApps, tmp_path: Path  # noqa: F811
        ) -> ProxyService:
    s = proxy_service(ph, proxy_apps, tmp_path)
    yield s  # type: ignore[misc]
    s.remove()


def test_failed_migration_and_a_slow_request_across_the_switch(svc: ProxyService) -> None:
    assert svc.run("deploy", svc.ref("v1"))["outcome"] == "succeeded"
    assert svc.ph.get_until(svc.host_name, "v1")[0] == 200

    # A migration that fails: nothing is switched, the old version never stops.
    svc.write_config(FAILING_MIGRATION)
    load = start_load(svc.ph.http_port, svc.host_name, 5)
    doc = svc.run("deploy", svc.ref("v2"), code=1)
    assert doc["outcome"] == "failed-migration", doc
    assert "column exists" in doc["reason"]
    load.assert_no_failure()
    assert svc.serving() == "200 v1"
    assert [c.split()[1] for c in svc.containers()] == ["running"]
    svc.write_config("")

    # A 2-second request that starts just before the switch ends with 200 from the old
    # version: the drain waits for it before the old container stops.
    load = start_load(svc.ph.http_port, svc.host_name, 8)
    proc = svc.start("deploy", svc.ref("v2"))
    svc.wait_for(proc, "healthy:")  # the gate passed; the route switches next
    slow: list[tuple[int, str]] = []

    def request() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", svc.ph.http_port, timeout=20)
        try:
            conn.request("GET", "/slow?s=2", headers={"Host": svc.host_name})
            r = conn.getresponse()
            slow.append((r.status, r.read().decode().strip()))
        finally:
            conn.close()

    t = threading.Thread(target=request)
    t.start()
    code, doc, text = svc.finish(proc)
    t.join(timeout=30)
    assert code == 0 and doc["outcome"] == "succeeded", text
    assert slow == [(200, "v1")]
    load.assert_no_failure()
    rec = svc.records()[-1]
    assert rec["in_flight_at_switch"] >= 1, rec
    drain = next(s for s in rec["steps"] if s["name"] == "drain")
    assert drain["ok"] and drain["seconds"] > 0.5, rec["steps"]
    assert svc.serving() == "200 v2"


@pytest.mark.parametrize(("when", "marker"), [
    ("during the gate", "start-new: ok"),
    ("right after the switch", "route: ok"),
])
def test_sigterm_during_the_switch_drops_no_request(svc: ProxyService, when: str,
                                                    marker: str) -> None:
    assert svc.run("deploy", svc.ref("v1"))["outcome"] == "succeeded"
    assert svc.ph.get_until(svc.host_name, "v1")[0] == 200
    load = start_load(svc.ph.http_port, svc.host_name, 8)
    # v3 takes 3 s to boot, so its gate is still running when the signal comes.
    proc = svc.start("deploy", svc.ref("v3" if "gate" in when else "v2"))
    svc.wait_for(proc, marker)
    proc.send_signal(signal.SIGTERM)
    code, doc, text = svc.finish(proc)
    assert (code, doc["outcome"]) == (130, "interrupted"), text
    load.assert_no_failure()
    # The defined outcome: the previous version has the route and serves, nothing of the
    # new version is left running, the lock is free and the host has the record.
    assert svc.serving() == "200 v1"
    assert [c.split()[1] for c in svc.containers()] == ["running"], svc.containers()
    assert svc.lock_free()
    rec = svc.records()[-1]
    assert rec["id"] == doc["id"] and rec["outcome"] == "interrupted"
    if "switch" in when:
        assert [s["name"] for s in rec["steps"]][-1] == "route-back", rec["steps"]
    # And the next deploy works as usual.
    assert svc.run("deploy", svc.ref("v2"))["outcome"] == "succeeded"
    assert svc.serving() == "200 v2"


def test_two_services_on_one_host_deploying_one_disturbs_neither(
        ph: ProxyHost, proxy_apps: ProxyApps, tmp_path: Path) -> None:  # noqa: F811
    a = proxy_service(ph, proxy_apps, tmp_path, "pxa")
    b = proxy_service(ph, proxy_apps, tmp_path, "pxb")
    try:
        assert a.run("deploy", a.ref("v1"))["outcome"] == "succeeded"
        assert b.run("deploy", b.ref("v2"))["outcome"] == "succeeded"
        loads = [start_load(ph.http_port, s.host_name, 6) for s in (a, b)]
        assert a.run("deploy", a.ref("v2"))["outcome"] == "succeeded"
        for load in loads:
            load.assert_no_failure()
        assert (a.serving(), b.serving()) == ("200 v2", "200 v2")
        loads = [start_load(ph.http_port, s.host_name, 6) for s in (a, b)]
        # A failed deploy of one service disturbs neither.
        assert b.run("deploy", b.ref("broken"), code=1)["outcome"] == "failed-health-old-kept"
        for load in loads:
            load.assert_no_failure()
        assert (a.serving(), b.serving()) == ("200 v2", "200 v2")
    finally:
        a.remove()
        b.remove()


# ---------------------------------------------------------------- the proxy itself broken


def test_a_missing_stopped_or_socketless_proxy_is_booted_again(
        ph: ProxyHost, proxy_apps: ProxyApps, tmp_path: Path) -> None:  # noqa: F811
    """Before a deploy: the proxy-boot step brings it back (idempotent), with every
    service's route as it was saved, and the deploy goes on."""
    a = proxy_service(ph, proxy_apps, tmp_path, "pxa")
    b = proxy_service(ph, proxy_apps, tmp_path, "pxb")
    name = pargv.container_name(ph.host_dir)
    state = f"{ph.ssh.home}/{ph.host_dir[2:]}/_proxy"
    try:
        assert a.run("deploy", a.ref("v1"))["outcome"] == "succeeded"
        assert b.run("deploy", b.ref("v1"))["outcome"] == "succeeded"
        for breakage, version in ((["docker", "stop", "-t", "1", name], "v2"),
                                  (["rm", "-f", f"{state}/admin.sock"], "v1"),
                                  (["docker", "rm", "-f", name], "v2")):
            assert ph.ssh.run(breakage).returncode == 0
            doc = a.run("deploy", a.ref(version))
            assert doc["outcome"] == "succeeded", (breakage, doc)
            boot = next(s for s in a.records()[-1]["steps"] if s["name"] == "proxy-boot")
            assert boot["ok"], boot
            assert ph.get_until(a.host_name, version)[1].strip() == version, breakage
            assert b.serving() == "200 v1", breakage  # its route came back with the proxy
    finally:
        a.remove()
        b.remove()


@pytest.mark.parametrize("breakage", ["stop", "socket"])
def test_a_proxy_lost_mid_switch_leaves_no_half_switched_route(
        svc: ProxyService, breakage: str) -> None:
    """The proxy stops, or its admin socket goes, after the proxy-boot step and before the
    route switches (while the new version, slow to boot, is in its gate): the route change
    boots the proxy again and the switch completes; never a route to a container that is
    gone, never the proxy left down."""
    host = svc.ph
    name = pargv.container_name(host.host_dir)
    assert svc.run("deploy", svc.ref("v1"))["outcome"] == "succeeded"
    proc = svc.start("deploy", svc.ref("v3"))  # 3 s to boot
    svc.wait_for(proc, "start-new: ok")
    argv = (["docker", "stop", "-t", "1", name] if breakage == "stop" else
            ["rm", "-f", f"{host.ssh.home}/{host.host_dir[2:]}/_proxy/admin.sock"])
    assert host.ssh.run(argv).returncode == 0
    code, doc, text = svc.finish(proc)
    assert (code, doc["outcome"]) == (0, "succeeded"), text
    assert "booting it again" in text and "proxy " in text
    assert [c.split()[1] for c in svc.containers()] == ["exited", "running"], \
        svc.containers()
    assert svc.serving() == "200 v3"
    assert svc.lock_free()


def test_other_proxy_settings_are_refused_in_preflight(svc: ProxyService) -> None:
    assert svc.run("deploy", svc.ref("v1"))["outcome"] == "succeeded"
    other = proxy_service(svc.ph, svc.apps, svc.path.parent, "pxo")
    text = (other.path / "plainsail.yml").read_text()
    (other.path / "plainsail.yml").write_text(
        text.replace(f"  network: {svc.ph.network}\n", "  network: pst-other\n"))
    from tests.support.cli import plainsail

    r = plainsail("deploy", other.ref("v2"), cwd=other.path)
    assert r.code == 1 and f"set by service {svc.service}" in r.err, r.text
    assert [line for line in r.err.splitlines() if not line.startswith("warning:")] == [
        next(line for line in r.err.splitlines() if line.startswith("error:"))], r.err
    assert other.containers() == [] and other.records() == []
    assert svc.serving() == "200 v1"
