"""The release gate on real traffic, for real: `plainsail deploy` over the real sshd, a real
Caddy (Debian's 2.6 and a current one) and Docker Engine, under load from Debian's `hey` on
the app's /api/. A release answering 500 on 30% of /api/ (its /health passes) and one 3x
slower are routed back with the old version serving; a healthy one completes, and so does
one failing a steady 2% like the version before it; SIGTERM to the deployer during the window
routes back; with `canary: 10%` the bad release's failures stay near 10% of its share, and
the requests still in flight to the canary when it is routed back finish."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.proxy_env import ProxyApps, ProxyService, proxy_service, start_load
from tests.test_proxy_integration import ProxyHost, ph  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

GATE = "traffic_gate:\n  window: 3s\n  min_requests: 30\n"
CANARY = "traffic_gate:\n  window: 4s\n  canary: 10%\n  min_requests: 10\n"


@pytest.fixture(scope="module")
def caddy_ref(request: pytest.FixtureRequest) -> str:
    """Debian's Caddy 2.6 unless a test asks for the current one (indirect parameter)."""
    name = getattr(request, "param", "caddy_image")
    image: str = request.getfixturevalue(name)
    return image


@pytest.fixture
def svc(ph: ProxyHost, proxy_apps: ProxyApps, tmp_path: Path  # noqa: F811
        ) -> Iterator[ProxyService]:
    s = proxy_service(ph, proxy_apps, tmp_path, prefix="tg")
    s.write_config(GATE)
    try:
        yield s
    finally:
        s.remove()


def deploy_under_load(s: ProxyService, name: str, code: int, seconds: float = 16
                      ) -> tuple[dict[str, Any], dict[str, int], str]:
    """Load on /api/ for a baseline, then the deploy; (summary, hey's counts, its errors)."""
    load = start_load(s.ph.http_port, s.host_name, seconds, workers=4, path="/api/x")
    time.sleep(4)  # the old version's baseline window (and more)
    doc = s.run("deploy", s.ref(name), code=code)
    codes, errors = load.stop()
    return doc, codes, errors


def gate_of(s: ProxyService) -> dict[str, Any]:
    tg: dict[str, Any] = s.records()[-1]["traffic_gate"]
    return tg


def test_a_bad_release_is_routed_back_and_canary_is_refused_on_caddy_2_6(
        svc: ProxyService) -> None:
    first = svc.run("deploy", svc.ref("v1"))
    assert first["outcome"] == "succeeded"
    assert gate_of(svc)["verdict"] == "not-judged"
    doc, codes, errors = deploy_under_load(svc, "flaky", code=1)
    assert doc["outcome"] == "failed-traffic-restored", (doc["reason"], doc["per_host"])
    assert "traffic gate failed: error rate" in doc["reason"], doc["reason"]
    assert svc.serving() == "200 v1"
    tg = gate_of(svc)
    assert tg["verdict"] == "failed" and tg["new"]["error_rate"] > 20, tg
    assert tg["old"]["requests"] > 30 and tg["old"]["errors"] == 0, tg
    # No request failed but the bad release's own answers (no connection error, no 502).
    assert set(codes) <= {"200", "500"} and not errors, (codes, errors)
    # (the new version's answers between the window's end and the route back count too)
    assert 0 < codes.get("500", 0) <= 1.5 * tg["new"]["errors"] + 10, (codes, tg)
    assert [c for c in svc.containers() if "running" in c] == \
        [f"{svc.service}-{svc.ref('v1').split('@')[0]} running"]
    # canary needs Caddy 2.8+: the running 2.6 is detected, one line, nothing switched
    svc.write_config(CANARY)
    doc = svc.run("deploy", svc.ref("v2"), code=1)
    assert doc["outcome"] == "aborted", doc
    assert "traffic_gate.canary needs Caddy 2.8 or newer" in doc["reason"]
    assert "runs 2.6.2" in doc["reason"]
    assert svc.serving() == "200 v1"


@pytest.mark.parametrize("caddy_ref", ["current_caddy_image"], indirect=True)
def test_healthy_slow_and_canary_releases_on_a_current_caddy(svc: ProxyService) -> None:
    assert svc.run("deploy", svc.ref("v1"))["outcome"] == "succeeded"
    # a healthy release completes after its window
    doc, codes, errors = deploy_under_load(svc, "v2", code=0)
    assert doc["outcome"] == "succeeded", doc
    assert set(codes) == {"200"} and not errors, (codes, errors)
    assert gate_of(svc)["verdict"] == "passed", gate_of(svc)
    assert svc.serving() == "200 v2"
    # 3x slower on /api/: routed back
    doc, codes, errors = deploy_under_load(svc, "sluggish", code=1)
    assert doc["outcome"] == "failed-traffic-restored", (doc["reason"], doc["per_host"])
    assert "p95" in doc["reason"], doc["reason"]
    assert set(codes) == {"200"} and not errors, (codes, errors)
    assert svc.serving() == "200 v2"
    # canary 10%: the bad release gets about a tenth of the window's requests
    svc.write_config(CANARY)
    doc, codes, errors = deploy_under_load(svc, "flaky", code=1)
    assert doc["outcome"] == "failed-traffic-restored", (doc["reason"], doc["per_host"])
    tg = gate_of(svc)
    assert tg["canary"] == 10.0 and 5 <= tg["new_share"] <= 16, tg
    window_total = tg["new"]["requests"] / (tg["new_share"] / 100)
    failed = codes.get("500", 0)
    assert 0 < failed <= 0.06 * window_total, (failed, window_total, tg)
    assert set(codes) <= {"200", "500"} and not errors, (codes, errors)
    assert svc.serving() == "200 v2"
    # status: the live error rate and p95 of the routed version over the last minute
    shown = svc.run("status")["hosts"][0]["proxy"]["last_minute"]
    assert shown["requests"] > 100 and shown["error_rate"] < 5 and shown["p95"] > 0.03, shown


def test_a_steady_error_rate_before_and_after_completes(svc: ProxyService) -> None:
    # both builds answer 500 on 2 of every 100 /api/ requests
    assert svc.run("deploy", svc.ref("steady"))["outcome"] == "succeeded"
    doc, codes, errors = deploy_under_load(svc, "steady2", code=0)
    assert doc["outcome"] == "succeeded", (doc["reason"], doc["per_host"])
    tg = gate_of(svc)
    assert tg["verdict"] == "passed", tg
    assert tg["old"]["requests"] >= 50 and 1 <= tg["old"]["error_rate"] <= 3.5, tg
    assert tg["new"]["requests"] >= 50 and 1 <= tg["new"]["error_rate"] <= 3.5, tg
    assert set(codes) == {"200", "500"} and not errors, (codes, errors)
    assert 1 <= 100 * codes["500"] / sum(codes.values()) <= 3, codes
    assert svc.serving() == "200 steady2"
    assert [c for c in svc.containers() if "running" in c] == \
        [f"{svc.service}-{svc.ref('steady2').split('@')[0]} running"]


def test_sigterm_during_the_window_routes_back(svc: ProxyService) -> None:
    svc.write_config("traffic_gate:\n  window: 20s\n  min_requests: 30\n")
    assert svc.run("deploy", svc.ref("v1"))["outcome"] == "succeeded"
    load = start_load(svc.ph.http_port, svc.host_name, 40, workers=4, path="/api/x")
    time.sleep(4)  # the old version's baseline
    proc = svc.start("deploy", svc.ref("v2"))
    svc.wait_for(proc, "watching real traffic")
    time.sleep(1)  # v2 serves the route now
    assert svc.serving() == "200 v2"
    proc.send_signal(signal.SIGTERM)
    code, doc, text = svc.finish(proc)
    assert doc["outcome"] == "interrupted" and code != 0, (code, doc, text)
    assert svc.serving() == "200 v1"
    assert [c for c in svc.containers() if "running" in c] == \
        [f"{svc.service}-{svc.ref('v1').split('@')[0]} running"], svc.containers()
    assert not any(svc.ref("v2").split("@")[0] in c for c in svc.containers()), \
        svc.containers()
    assert svc.lock_free()
    time.sleep(1)
    codes, errors = load.stop()
    # neither version fails: not one request failed while the route went and came back
    assert set(codes) == {"200"} and not errors, (codes, errors)
    assert sum(codes.values()) > 200, codes


def slow_gets(s: ProxyService, count: int, seconds: float
              ) -> tuple[list[str], list[threading.Thread]]:
    """`count` requests to /slow?s=SECONDS at once, in threads; each appends "STATUS NAME"
    (or the error) to the returned list when it ends."""
    answers: list[str] = []

    def one() -> None:
        try:
            status, body = s.ph.get(s.host_name, f"/slow?s={seconds:g}", timeout=seconds + 30)
            answers.append(f"{status} {body.strip()}")
        except OSError as exc:
            answers.append(f"error {exc!r}")

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    return answers, threads


@pytest.mark.parametrize("caddy_ref", ["current_caddy_image"], indirect=True)
def test_requests_in_flight_to_a_canary_routed_back_finish(svc: ProxyService) -> None:
    svc.write_config(CANARY)
    assert svc.run("deploy", svc.ref("v1"))["outcome"] == "succeeded"
    load = start_load(svc.ph.http_port, svc.host_name, 40, workers=4, path="/api/x")
    time.sleep(4)  # the old version's baseline
    proc = svc.start("deploy", svc.ref("flaky"))
    svc.wait_for(proc, "watching real traffic")
    # long requests, about a tenth of them to the canary, still in flight at the route back
    answers, threads = slow_gets(svc, 40, 9)
    code, doc, text = svc.finish(proc)
    assert doc["outcome"] == "failed-traffic-restored", (doc.get("reason"), text)
    for t in threads:
        t.join(timeout=60)
    codes, errors = load.stop()
    assert len(answers) == 40, answers
    assert all(a in ("200 v1", "200 flaky") for a in answers), answers
    assert "200 flaky" in answers, answers  # the canary had some in flight, and answered
    assert set(codes) <= {"200", "500"} and not errors, (codes, errors)
    assert svc.serving() == "200 v1"
    assert not any(svc.ref("flaky").split("@")[0] in c for c in svc.containers()), \
        svc.containers()
