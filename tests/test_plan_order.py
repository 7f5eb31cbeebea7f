"""The deploy runs its plan: on every path (stop-start, behind the proxy, with the host's own
registry, the rollback fast path, the traffic gate with a canary) and on every host of a
fleet, the steps executed are the plan's steps, in the plan's order: the runner walked
exactly the plan (record and unlock included), and the steps timed in the record are the
plan's (the health gate is recorded per container, the record and the unlock after the
outcome). The runner itself: an unknown step raises before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plainsail.deploy import hostregistry
from plainsail.deploy.outcomes import SUCCEEDED
from plainsail.deploy.plan import HostPlan, PlannedStep, Request, Target
from plainsail.deploy.run import Deploy
from plainsail.deploy.runner import HostRunner, UnknownStep
from plainsail.deploy.switch import HostRun
from plainsail.hosts.addresses import parse_host
from plainsail.supply.registrycopy import CopyStats
from tests.test_engine import V1, V2, Bench, ProxyBench

AFTER_THE_OUTCOME = ("record", "unlock")


def executed(d: Deploy) -> list[tuple[list[str], list[str]]]:
    """Per host: (the plan's step names, the names of the steps it ran)."""
    out = []
    for run in d.runs:
        ran = ["gate" if s.name.startswith("health:") else s.name for s in run.steps]
        planned = [s.name for s in run.plan.steps if s.name not in AFTER_THE_OUTCOME]
        out.append((planned, ran))
    return out


def attempt(b: Bench, target: Target, proxy: Any = None, **kw: Any) -> Deploy:
    d = Deploy(b.cfg, Request(ref=f"{target.tag}@{target.digest}", **kw), b.lines.append,
               environ=dict(b.env), executors={f.host.name: f.executor() for f in b.fakes},
               resolve=lambda cfg, r: target, proxy=proxy)
    assert d.run()["outcome"] == SUCCEEDED
    return d


def assert_ran_the_plan(d: Deploy, must: list[str]) -> None:
    """Every host ran exactly its plan; the first (which migrates) ran at least `must`."""
    for run in d.runs:
        assert run.walked == [s.name for s in run.plan.steps], run.host.name
    hosts = executed(d)
    for planned, ran in hosts:
        assert ran == planned
    assert all(name in hosts[0][1] for name in must), (must, hosts[0][1])


def test_stop_start(tmp_path: Path) -> None:
    b = Bench(tmp_path, nhosts=2, extra="retain: 0\n")
    attempt(b, V1)
    assert_ran_the_plan(attempt(b, V2), ["pull", "migrate", "stop-old", "start-new", "gate",
                                        "prune"])


def test_behind_the_proxy(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path, nhosts=2)
    attempt(b, V1, proxy=b.proxy)
    assert_ran_the_plan(attempt(b, V2, proxy=b.proxy),
                        ["proxy-boot", "start-new", "gate", "route", "check-through", "drain",
                         "stop-old"])


def test_rollback_fast_path(tmp_path: Path) -> None:
    b = Bench(tmp_path, nhosts=2)
    attempt(b, V1)
    attempt(b, V2)
    assert_ran_the_plan(attempt(b, V1, kind="rollback", skip_migrations=True),
                        ["stop-old", "start-retained", "gate"])


def test_host_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.test_engine as engine

    monkeypatch.setattr(engine, "IMAGE", "acme/api")
    b = Bench(tmp_path, nhosts=2, extra="registry: {mode: host}\n")
    # The registry's own work is tested elsewhere (tests/test_host_registry.py, for real).
    monkeypatch.setattr(hostregistry, "ensure", lambda *a: "running")
    monkeypatch.setattr(hostregistry, "send", lambda *a, **k: CopyStats(1, 10, 1, 1, True))
    monkeypatch.setattr(hostregistry, "verify_there", lambda *a: None)
    v1, v2 = (Target(hostregistry.pull_repository(b.cfg), v.tag, v.digest, True)
              for v in (V1, V2))
    attempt(b, v1)
    assert_ran_the_plan(attempt(b, v2), ["host-registry", "send", "verify-host", "pull",
                                        "stop-old", "start-new", "gate"])


def test_a_doomed_container_that_still_runs_is_stopped_before_it_is_removed() -> None:
    """An interrupted attempt behind the proxy leaves two versions running (the one routed
    to and the one it was draining); the deploy that follows stops the extra one
    gracefully (its requests in flight finish) before `docker rm --force`."""
    from pathlib import Path as _Path

    from plainsail.config.model import parse
    from plainsail.deploy import plan
    from plainsail.hosts.containers import Container
    from plainsail.hosts.state import LockInfo, Paths

    cfg = parse("service: api\nimage: 127.0.0.1:5000/acme/api\nproxy:\n  host: a.test\n"
                "  image: caddy:2@sha256:" + "c0" * 32 + "\n  tls: off\nretain: 1\n",
                _Path("/x/plainsail.yml"), {})
    d1, d2 = "sha256:" + "11" * 32, "sha256:" + "22" * 32

    def box(name: str, digest: str, status: str, created: str) -> Container:
        return Container(name, "id-" + name, name[-2:], digest, "d", "fp", status, created,
                         "", cfg.image)

    routed = box("api-v2", d2, "running", "2026-01-01T00:00:02Z")
    left = box("api-v1", d1, "running", "2026-01-01T00:00:01Z")
    gone = box("api-v0", "sha256:" + "00" * 32, "exited", "2026-01-01T00:00:00Z")
    target = plan.Target(cfg.image, "v1", d1, True)
    hp = plan.host_plan(cfg, target, "d3", "fp", Paths("/h/.plainsail/api"),
                        [routed, left, gone], routed, None,
                        LockInfo("d3", "me@m", "m", 1, "t", "v1", "ci"),
                        unchanged=False, migrate_here=False)
    names = [s.name for s in hp.steps]
    assert names.index("stop-old") < names.index("stop-others") < names.index("prune")
    stop = hp.step("stop-others")
    assert stop is not None and stop.argv == ["docker", "stop", "-t", "10", "api-v1"]
    assert stop.timeout == cfg.app.stop_timeout + cfg.timeouts.command
    prune = hp.step("prune")
    assert prune is not None and prune.argv is not None
    assert "api-v1" in prune.argv and "api-v2" not in prune.argv


def test_traffic_gate_with_a_canary(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path, nhosts=2, extra="traffic_gate:\n  window: 40ms\n  canary: 10%\n"
                   "  min_requests: 20\n")
    attempt(b, V1, proxy=b.proxy)
    d = attempt(b, V2, proxy=b.proxy)
    for run in d.runs:
        assert run.walked == [s.name for s in run.plan.steps]
        assert run.walked.index("canary") < run.walked.index("check-through") \
            < run.walked.index("traffic-gate") < run.walked.index("route") \
            < run.walked.index("drain") < run.walked.index("stop-old")
        # details timed beside their step: the proxy's log and version (proxy-boot), the
        # window's reads (traffic-gate)
        timed = [s.name for s in run.steps
                 if s.name not in ("traffic-log", "proxy-version", "traffic-read")]
        assert [n for n in timed if not n.startswith("health:")] == [
            n for n in run.walked if n not in ("gate", *AFTER_THE_OUTCOME)]


def test_a_host_that_stops_walks_no_further(tmp_path: Path) -> None:
    """A failed gate stops the host's walk of the switch: the restore is no plan step, and
    the record and the unlock are still walked, in order."""
    b = Bench(tmp_path, nhosts=1)
    attempt(b, V1)
    b.fakes[0].healthy = lambda c: V2.tag not in c.name
    d = Deploy(b.cfg, Request(ref=f"{V2.tag}@{V2.digest}"), b.lines.append,
               environ=dict(b.env), executors={f.host.name: f.executor() for f in b.fakes},
               resolve=lambda cfg, r: V2)
    assert d.run()["outcome"] == "failed-health-restored"
    run = d.runs[0]
    names = [s.name for s in run.plan.steps]
    assert run.walked == names[:names.index("gate") + 1] + ["record", "unlock"]


def test_an_unknown_step_raises_before_any_step_runs() -> None:
    plan = HostPlan("web-1", [PlannedStep("lock", ["true"], 1, "lock"),
                              PlannedStep("reboot", ["reboot"], 1, "not a step")])
    ran: list[str] = []
    runner = HostRunner({"lock": lambda run, step: ran.append(step.name)})
    with pytest.raises(UnknownStep, match="'reboot' has no action"):
        runner.check(plan)
    run = HostRun(parse_host("web-1"), None, None, [], None, plan=plan)  # type: ignore[arg-type]
    with pytest.raises(UnknownStep, match="'reboot'"):
        runner.walk(run, "lock")
    assert ran == []


def test_the_walk_keeps_the_plan_order_and_stops_when_told() -> None:
    plan = HostPlan("web-1", [PlannedStep(n, None, 1, n) for n in
                              ("lock+env", "pull", "stop-old", "start-new", "gate", "record",
                               "unlock")])
    ran: list[str] = []

    def act(run: HostRun, step: PlannedStep) -> object:
        ran.append(step.name)
        return step.name != "gate"

    runner = HostRunner({s.name: act for s in plan.steps})
    runner.check(plan)
    run = HostRun(parse_host("web-1"), None, None, [], None, plan=plan)  # type: ignore[arg-type]
    assert runner.walk(run, "lock") and runner.walk(run, "prepare")
    assert runner.walk(run, "switch") is False
    assert runner.walk(run, "finish")
    assert ran == run.walked == ["lock+env", "pull", "stop-old", "start-new", "gate", "record",
                                 "unlock"]
    with pytest.raises(AssertionError, match="walked twice"):
        runner.walk(run, "prepare")
    out_of_order = HostPlan("web-1", [plan.steps[3], plan.steps[1]])
    with pytest.raises(UnknownStep, match="comes after a step of the switch phase"):
        runner.check(out_of_order)


def test_a_rollback_behind_a_traffic_gate_plans_and_runs_no_window(tmp_path: Path) -> None:
    """traffic_gate judges deploys only: a rollback's plan has the whole route at once, and
    that plan is what runs."""
    b = ProxyBench(tmp_path, nhosts=2, extra="traffic_gate:\n  window: 40ms\n  canary: 10%\n"
                   "  min_requests: 20\n")
    attempt(b, V1, proxy=b.proxy)
    attempt(b, V2, proxy=b.proxy)
    d = attempt(b, V1, proxy=b.proxy, kind="rollback", skip_migrations=True)
    for run in d.runs:
        assert run.walked == [s.name for s in run.plan.steps]
        assert "canary" not in run.walked and "traffic-gate" not in run.walked
        assert run.walked.index("route") < run.walked.index("check-through")
