"""The release gate on real traffic in the deploy engine, on fake hosts behind a fake proxy
whose log says how each version answered: every branch (complete, route back on errors or
latency, a first deploy, too little traffic, a fresh log, a signal in the window)."""

from __future__ import annotations

import argparse
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from plainsail.commands import history as history_cmd
from plainsail.deploy.outcomes import INTERRUPTED, SUCCEEDED, TRAFFIC_RESTORED, exit_code
from tests.test_engine import V1, V2, ProxyBench

GATE = "traffic_gate:\n  window: 40ms\n  min_requests: 20\n"


def bench(tmp: Path, gate: str = GATE) -> ProxyBench:
    b = ProxyBench(tmp, extra=gate)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    return b


def test_a_healthy_release_completes_after_the_window(tmp_path: Path) -> None:
    b = bench(tmp_path)
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s
    assert b.routed_tag() == V2.tag and b.running_tags() == [V2.tag]
    rec = b.fake.history("api")[-1]
    tg = rec["traffic_gate"]
    assert tg["verdict"] == "passed" and tg["new"]["requests"] >= 20, tg
    assert tg["old"]["tag"] == V1.tag and tg["new"]["tag"] == V2.tag
    steps = [st["name"] for st in rec["steps"]]
    # the old version keeps running through the window: drained and stopped after it
    assert steps.index("route") < steps.index("traffic-gate") < steps.index("drain") \
        < steps.index("stop-old")
    assert b.proxy.outages == []


def test_a_release_answering_errors_is_routed_back(tmp_path: Path) -> None:
    b = bench(tmp_path)
    b.proxy.answers[f"api-{V2.tag}"] = (2000.0, 0.3, 0.01)
    s = b.deploy(V2)
    assert s["outcome"] == TRAFFIC_RESTORED and exit_code(s) == 1, s
    assert "traffic gate failed: error rate " in s["reason"]
    assert "against 0.0% before" in s["reason"]
    assert "never stopped" in s["reason"]
    assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag]
    assert f"api-{V2.tag}" not in b.fake.containers  # removed after its requests finished
    assert b.proxy.calls.index("drain") > b.proxy.calls.index("route_to")
    rec = b.fake.history("api")[-1]
    assert rec["outcome"] == TRAFFIC_RESTORED
    assert rec["traffic_gate"]["verdict"] == "failed"
    assert rec["traffic_gate"]["new"]["error_rate"] > 25
    assert not any(a[:2] == ["docker", "stop"] and f"api-{V1.tag}" in a for a in b.fake.log)
    assert b.proxy.outages == []


def test_a_slower_release_is_routed_back(tmp_path: Path) -> None:
    b = bench(tmp_path)
    b.proxy.answers[f"api-{V1.tag}"] = (2000.0, 0.0, 0.1)
    b.proxy.answers[f"api-{V2.tag}"] = (2000.0, 0.0, 0.3)
    s = b.deploy(V2)
    assert s["outcome"] == TRAFFIC_RESTORED, s
    assert "p95 300ms above 2x the old p95 100ms" in s["reason"]
    assert b.routed_tag() == V1.tag


def test_a_steady_error_rate_before_and_after_completes(tmp_path: Path) -> None:
    b = bench(tmp_path)
    b.proxy.answers["api-"] = (20000.0, 0.02, 0.01)
    assert b.deploy(V2)["outcome"] == SUCCEEDED


def test_a_first_deploy_is_not_judged_and_the_record_says_so(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path, extra=GATE)
    b.proxy.answers["api-"] = (2000.0, 1.0, 0.01)
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s
    tg = b.fake.history("api")[-1]["traffic_gate"]
    assert tg["verdict"] == "not-judged" and "first deploy" in tg["notes"][0]


def test_too_little_traffic_is_extended_once_then_judged(tmp_path: Path) -> None:
    b = bench(tmp_path, "traffic_gate:\n  window: 20ms\n  min_requests: 100000\n")
    b.proxy.answers[f"api-{V2.tag}"] = (2000.0, 0.5, 0.01)
    s = b.deploy(V2)
    assert s["outcome"] == TRAFFIC_RESTORED, s
    tg = b.fake.history("api")[-1]["traffic_gate"]
    assert tg["extended"] is True
    assert "extended once" in tg["notes"][0]
    assert any("fewer than min_requests 100000" in n for n in tg["notes"])
    assert "watching 0.02s more" in "\n".join(b.lines)


def test_a_fresh_traffic_log_watches_the_old_version_first(tmp_path: Path) -> None:
    # (a window long enough that the deploy's steps before the switch do not fill it)
    b = bench(tmp_path, GATE.replace("40ms", "300ms"))
    b.proxy.fresh_log = True
    b.proxy.answers["api-"] = (20000.0, 0.02, 0.01)
    assert b.deploy(V2)["outcome"] == SUCCEEDED
    assert "traffic log is new: watching" in "\n".join(b.lines)
    tg = b.fake.history("api")[-1]["traffic_gate"]
    assert tg["old"]["requests"] > 0 and tg["old"]["error_rate"] > 0


def test_a_signal_during_the_window_routes_back(tmp_path: Path) -> None:
    b = bench(tmp_path, "traffic_gate:\n  window: 5s\n")
    real = b.proxy.host_time
    calls: list[int] = []

    def host_time(ex: Any) -> float:
        calls.append(1)
        if len(calls) == 1:  # at the switch: a signal arrives during the window
            signal.setitimer(signal.ITIMER_REAL, 0.05)
        return real(ex)

    old = signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGTERM))
    try:
        b.proxy.host_time = host_time  # type: ignore[method-assign]
        s = b.deploy(V2)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert s["outcome"] == INTERRUPTED, s
    assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag]
    assert b.proxy.outages == []


def test_a_proxy_that_cannot_read_its_log_routes_back(tmp_path: Path) -> None:
    b = bench(tmp_path)
    b.proxy.faults["read_traffic"] = "fail"
    s = b.deploy(V2)
    assert s["outcome"] == "failed-health-restored" and exit_code(s) == 1, s
    assert s["reason"].startswith("traffic-read failed: injected failure"), s["reason"]
    assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag]


CANARY = "traffic_gate:\n  window: 60ms\n  canary: 10%\n  min_requests: 10\n"


def test_a_canary_sends_a_share_and_completes(tmp_path: Path) -> None:
    b = bench(tmp_path, CANARY)
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s
    rec = b.fake.history("api")[-1]
    steps = [st["name"] for st in rec["steps"]]
    assert steps.index("proxy-version") < steps.index("canary") < steps.index("traffic-gate") \
        < steps.index("route") < steps.index("drain") < steps.index("stop-old")
    tg = rec["traffic_gate"]
    assert tg["canary"] == 10.0 and 5 < tg["new_share"] < 15, tg
    assert b.routed_tag() == V2.tag and b.running_tags() == [V2.tag]
    assert b.proxy.outages == []


def test_a_bad_canary_is_routed_back(tmp_path: Path) -> None:
    b = bench(tmp_path, CANARY)
    b.proxy.answers[f"api-{V2.tag}"] = (2000.0, 0.3, 0.01)
    s = b.deploy(V2)
    assert s["outcome"] == TRAFFIC_RESTORED, s
    assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag]
    assert (b.fake.host.name, "api") not in b.proxy.shares  # the whole route is back


def test_a_canary_on_an_old_proxy_is_refused_in_one_line_before_any_switch(
        tmp_path: Path) -> None:
    b = bench(tmp_path, CANARY)
    b.proxy.caddy = (2, 6, 2)
    s = b.deploy(V2)
    assert s["outcome"] == "aborted" and exit_code(s) == 1, s
    assert "traffic_gate.canary needs Caddy 2.8 or newer" in s["reason"]
    assert "runs 2.6.2" in s["reason"] and "\n" not in s["reason"]
    assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag]


def test_hosts_switched_together_are_each_judged_and_routed_back(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path, nhosts=2, extra=GATE)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.proxy.answers[f"api-{V2.tag}"] = (2000.0, 0.3, 0.01)
    s = b.deploy(V2)
    assert s["outcome"] == TRAFFIC_RESTORED, s
    assert [h["outcome"] for h in s["per_host"]] == [TRAFFIC_RESTORED] * 2
    assert "failed their traffic gates" in s["reason"] or "traffic gate failed" in s["reason"]
    assert b.routed_tag(0) == V1.tag and b.routed_tag(1) == V1.tag
    assert b.running_tags() == [V1.tag, V1.tag]


def test_a_signal_during_the_window_of_hosts_in_threads_routes_all_back(
        tmp_path: Path) -> None:
    b = ProxyBench(tmp_path, nhosts=2, extra="traffic_gate:\n  window: 5s\n")
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    old = signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGTERM))
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        s = b.deploy(V2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert s["outcome"] == INTERRUPTED, s
    assert s["seconds"] < 4, s["seconds"]  # the window did not run to its end
    assert b.routed_tag(0) == V1.tag and b.routed_tag(1) == V1.tag
    assert b.running_tags() == [V1.tag, V1.tag]


def test_history_shows_the_traffic_gates_verdict(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    b = bench(tmp_path)
    b.proxy.answers[f"api-{V2.tag}"] = (2000.0, 0.3, 0.01)
    assert b.deploy(V2)["outcome"] == TRAFFIC_RESTORED
    capsys.readouterr()
    args = argparse.Namespace(config=tmp_path / "plainsail.yml", host=[], source="local",
                              limit=10, json=False)
    assert history_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "TRAFFIC GATE" in out and "not-judged" in out
    assert re.search(r"failed: (2[5-9]|3[0-5])(\.\d+)?% 5xx, p95 10ms", out), out


def test_a_rollback_is_not_judged_and_switches_the_whole_route_at_once(
        tmp_path: Path) -> None:
    # a long window and a canary share: a deploy would wait 5 s with 10% on the new version
    b = bench(tmp_path, "traffic_gate:\n  window: 5s\n  canary: 10%\n  min_requests: 1\n")
    assert b.deploy(V2)["outcome"] == SUCCEEDED
    b.proxy.caddy = (2, 6, 2)  # too old for a canary: a rollback needs none
    b.proxy.calls.clear()
    s = b.deploy(V1, kind="rollback")
    assert s["outcome"] == SUCCEEDED and s["seconds"] < 4, s
    assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag]
    assert "split" not in b.proxy.calls and "check_canary" not in b.proxy.calls
    tg = b.fake.history("api")[-1]["traffic_gate"]
    assert tg["verdict"] == "not-judged" and tg["notes"] == [
        "a rollback is not judged on traffic: the version it goes back to got the whole "
        "route at once"], tg
