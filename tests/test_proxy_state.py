"""The proxy's state in `plainsail status` and in the deploy records, through the fake host
(the real proxy's counterpart is in tests/test_proxy_deploy.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plainsail import proxy
from plainsail.deploy.outcomes import SUCCEEDED
from plainsail.deploy.status import describe_proxy, status
from plainsail.proxy import ProxyError
from tests.test_engine import V1, V2, Bench, ProxyBench


def test_the_record_carries_the_maintenance_state_at_the_deploy(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    first = b.fake.history("api")[-1]
    assert first["maintenance"] == {"on": False, "message": None}
    b.proxy.maintenance[(b.fake.host.name, "api")] = "Back soon"
    assert b.deploy(V2)["outcome"] == SUCCEEDED
    rec = b.fake.history("api")[-1]
    assert rec["maintenance"] == {"on": True, "message": "Back soon"}
    assert rec["in_flight_at_switch"] == 2


def test_stop_start_records_no_maintenance(bench: Bench) -> None:
    bench.deploy(V1)
    rec = bench.fake.history("api")[-1]
    assert rec["maintenance"] is None and rec["in_flight_at_switch"] is None


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return Bench(tmp_path)


def _status(b: Bench) -> dict[str, Any]:
    return status(b.cfg, [], {f.host.name: f.executor() for f in b.fakes})


def _proxy_answer(monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any] | Exception
                  ) -> None:
    def fake_status(ex: object, cfg: object) -> dict[str, Any]:
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(proxy, "status", fake_status)


def _running(routes: list[dict[str, Any]], admin: str = "ok",
             state: str = "running") -> dict[str, Any]:
    return {"host": "web-1", "container": "plainsail-proxy", "status": state,
            "admin": admin, "routes": routes}


def _route(upstream: str | None, maintenance: str | None = None,
           service: str = "api") -> dict[str, Any]:
    return {"service": service, "hosts": ["api.example.com"], "path": "/", "tls": "internal",
            "upstream": upstream, "maintenance": maintenance, "draining": [],
            "in_flight": 3}


def test_status_says_behind_the_proxy_and_maintenance(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    running = next(c for c in b.fake.containers.values() if c.status == "running")
    _proxy_answer(monkeypatch, _running([
        _route("other-1:8080", service="other"),
        _route(f"{running.name}:8080", "Back at 3pm")]))
    p = _status(b)["hosts"][0]["proxy"]
    assert p == {"state": "running", "container": "plainsail-proxy", "admin": "ok",
                 "behind_proxy": True, "upstream": f"{running.name}:8080", "in_flight": 3,
                 "maintenance": {"on": True, "message": "Back at 3pm"}}
    line = describe_proxy(p)
    assert "behind the proxy" in line and "maintenance ON: 'Back at 3pm'" in line
    assert "3 request(s) in flight" in line


def test_status_when_the_route_points_elsewhere_or_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    _proxy_answer(monkeypatch, _running([_route("api-old:8080")]))
    p = _status(b)["hosts"][0]["proxy"]
    assert p["behind_proxy"] is False and p["maintenance"] == {"on": False, "message": None}
    assert "NOT behind the proxy (the route points at api-old:8080)" in describe_proxy(p)
    assert "maintenance off" in describe_proxy(p)
    _proxy_answer(monkeypatch, _running([]))
    p = _status(b)["hosts"][0]["proxy"]
    assert p["behind_proxy"] is False and "NOT behind the proxy (no route)" in describe_proxy(p)


@pytest.mark.parametrize("state, shown", [("missing", "proxy: MISSING"),
                                          ("exited", "proxy: STOPPED"),
                                          ("created", "proxy: STOPPED")])
def test_status_of_a_missing_or_stopped_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              state: str, shown: str) -> None:
    b = ProxyBench(tmp_path)
    _proxy_answer(monkeypatch, _running([], admin="not running", state=state))
    p = _status(b)["hosts"][0]["proxy"]
    assert p["state"] == ("missing" if state == "missing" else "stopped")
    assert p["behind_proxy"] is None and p["maintenance"] is None
    assert describe_proxy(p).startswith(shown)


def test_status_when_the_proxy_cannot_be_asked(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    b = ProxyBench(tmp_path)
    _proxy_answer(monkeypatch, _running([], admin="socket missing"))
    p = _status(b)["hosts"][0]["proxy"]
    assert p["state"] == "running" and p["behind_proxy"] is None
    assert "admin: socket missing" in describe_proxy(p)
    _proxy_answer(monkeypatch, ProxyError("web-1: $HOME is not set on the host"))
    p = _status(b)["hosts"][0]["proxy"]
    assert p["state"] == "unknown" and "$HOME is not set" in p["admin"]


def test_status_without_a_proxy_block(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    bench.deploy(V1)
    _proxy_answer(monkeypatch, AssertionError("the proxy is not asked without proxy:"))
    host = _status(bench)["hosts"][0]
    assert host["proxy"] is None and host["running"]["tag"] == V1.tag
    assert describe_proxy(None) == "proxy: none configured (stop-start deploys)"
