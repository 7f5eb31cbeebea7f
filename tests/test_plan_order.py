"""The deploy runs its plan: on every path (stop-start, behind the proxy, with the host's own
registry, the rollback fast path) and on every host of a fleet, the steps executed are the
plan's steps, in the plan's order (the health gate is recorded per container, the record
and the unlock after the outcome)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plainsail.deploy import hostregistry
from plainsail.deploy.outcomes import SUCCEEDED
from plainsail.deploy.plan import Request, Target
from plainsail.deploy.run import Deploy
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
