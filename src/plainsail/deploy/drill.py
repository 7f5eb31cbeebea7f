"""Rollback drill: prove the way back works, then come back.

1. Refuse unless the current version runs, healthy, on every selected host (one version).
2. Find the previous known-good version (the rollback's choice) and estimate from the
   hosts' records how long each switch interrupts the service (no proxy: the old
   container stops before the new one passes its gate).
3. Roll back to it: the real rollback path, health gate included, migrations not run, so
   the previous version meets the current schema; a pass means it still works with it.
4. Deploy the version that ran before the drill again (migrations skipped: the schema is
   already current), unless the rollback left it running (a failed gate restores it).

Both attempts are ordinary records (`kind` rollback and deploy) that carry the drill's id
in `drill`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from plainsail.config.model import Config
from plainsail.deploy import rollback
from plainsail.deploy.outcomes import RESTORE_FAILED, SUCCEEDED
from plainsail.deploy.plan import Request
from plainsail.deploy.records import new_deploy_id
from plainsail.deploy.run import Deploy, Reporter
from plainsail.deploy.status import status
from plainsail.errors import DeployError, UsageError
from plainsail.hosts import state as hoststate
from plainsail.hosts.fleet import opened
from plainsail.progress import NULL, Progress, reporter

RECORDS_FOR_ESTIMATE = 5  # the newest successful switches per host the estimate reads


class DrillRefused(DeployError):
    """The drill cannot start: the current version is not healthy, or nothing to roll to."""


@dataclass
class DrillPlan:
    current_tag: str
    current_digest: str
    previous_tag: str
    hosts: list[str]
    interruption: float | None  # seconds per switch, estimated; None: no record to go by


def interruption(records: Sequence[Mapping[str, Any]]) -> float | None:
    """How long one switch kept the service down in the newest successful records: from
    stopping the old container to the new one's passed health gate (the longest of the
    newest few), or None when no record has those steps."""
    good = rollback.successes([dict(r) for r in records])[:RECORDS_FOR_ESTIMATE]
    found: list[float] = []
    for rec in good:
        steps = rec.get("steps") or []
        names = [str(s.get("name", "")) for s in steps]
        if "converge" in names:  # a Swarm update: Swarm replacing the tasks, then the gate
            found.append(sum(float(st.get("seconds") or 0) for st in steps
                             if st.get("name") in ("converge", "gate")))
            continue
        if "stop-old" not in names:
            continue
        down = 0.0
        for step in steps[names.index("stop-old"):]:
            down += float(step.get("seconds") or 0)
            if str(step.get("name", "")).startswith("health:"):
                break
        found.append(down)
    return max(found) if found else None


def prepare_swarm(cfg: Config, hosts: list[str], warn: Callable[[str], None]) -> DrillPlan:
    """`prepare` for `target: swarm`: the service runs one release, every task the Swarm
    wants running runs it and passes a health probe, no update is paused or rolling back,
    the lock is free, and the manager's records name a release before it."""
    from plainsail.swarm import cluster, morning

    if hosts:
        raise UsageError("--host: a swarm drill updates the whole service through "
                         "swarm.manager, on the nodes Swarm chooses; remove --host")
    now = morning.status(cfg)
    where = now["host"]
    if not now["reachable"]:
        raise DrillRefused(f"{where}: {now['error']}")
    run = now["running"]
    if not run:
        raise DrillRefused(f"{where}: no Swarm service {cfg.service} runs; a drill starts "
                           "from a healthy current version: deploy it first")
    good = [t for t in now["tasks"] if t["state"] == "running" and t["health"] == "ok"
            and t["digest"] == run["digest"]]
    update = str((now["update_status"] or {}).get("State") or "")
    if len(good) < int(now["replicas"] or 0) or len(good) < len(now["tasks"]) \
            or update in cluster.FAILED_UPDATE or update == "updating":
        bad = [f"task {t['task'][:12]} on {t['address'] or t['node_id']}: {t['state']}, "
               f"health {t['health']}" for t in now["tasks"] if t not in good]
        raise DrillRefused(
            f"{where}: {len(good)} of {now['replicas']} task(s) of {run['tag']} run healthy"
            + (f" ({'; '.join(bad)})" if bad else "")
            + (f", Swarm's last update is {update.replace('_', ' ')}" if update not in (
                "", "completed") else "")
            + "; a drill starts from a healthy current version: fix it first (plainsail "
            "status, plainsail logs)")
    if now["lock"]:
        raise DrillRefused(f"{where}: the deploy lock is held; wait for that attempt or see "
                           "plainsail lock status")
    with closing(morning.manager(cfg)) as ex:
        previous = morning.choose(ex, cfg, None, warn).tag
        paths, _ = hoststate.probe(ex, cfg.host_dir, cfg.service, timeout=cfg.timeouts.query)
        estimate = interruption(hoststate.read_history(ex, paths, warn))
    return DrillPlan(run["tag"], run["digest"], previous, [where], estimate)


def prepare(cfg: Config, hosts: list[str], warn: Callable[[str], None]) -> DrillPlan:
    """Check that the drill may run and decide what it will do; change nothing (`warn` is
    told of damaged history lines)."""
    now = status(cfg, hosts)
    running: set[tuple[str, str]] = set()
    for h in now["hosts"]:
        if not h["running"]:
            raise DrillRefused(f"{h['host']}: nothing of {cfg.service} is running; a drill "
                               "starts from a healthy current version: deploy it first")
        if h["health"] != "healthy":
            raise DrillRefused(f"{h['host']}: {h['running']['tag']} is {h['health']}; a drill "
                               "starts from a healthy current version: fix it first (plainsail "
                               "status, plainsail logs)")
        if h["lock"]:
            raise DrillRefused(f"{h['host']}: the deploy lock is held; wait for that attempt "
                               "or see plainsail lock status")
        running.add((h["running"]["tag"], h["running"]["digest"]))
    if len(running) != 1:
        shown = ", ".join(sorted(t for t, _ in running))
        raise DrillRefused(f"the hosts run different versions ({shown}); deploy one version "
                           "everywhere before a drill")
    tag, digest = running.pop()
    previous, _, _ = rollback.choose(cfg, hosts, None, warn=warn)
    estimates: list[float] = []
    with opened(cfg, hosts) as fleet:
        for o in fleet:
            est = interruption(hoststate.read_history(o.ex, o.paths, warn))
            if est is not None:
                estimates.append(est)
    return DrillPlan(tag, digest, previous, [str(h["host"]) for h in now["hosts"]],
                     max(estimates) if estimates else None)


def interruption_notice(plan: DrillPlan, proxied: bool = False, swarm: bool = False) -> str:
    if swarm and proxied:
        return (f"the drill updates the Swarm service from {plan.current_tag} to "
                f"{plan.previous_tag} and back behind the proxy on every node: no request "
                "is dropped")
    if swarm:
        each = (f"each update took about {plan.interruption:.0f}s (the longest recent one)"
                if plan.interruption is not None else "no earlier record has step times")
        return (f"the drill updates the Swarm service from {plan.current_tag} to "
                f"{plan.previous_tag} and back through {', '.join(plan.hosts)}: without a "
                "proxy in front of the tasks, requests that reach a node while its task is "
                f"replaced fail, twice on every node; {each}")
    if proxied:
        return (f"the drill switches {', '.join(plan.hosts)} from {plan.current_tag} to "
                f"{plan.previous_tag} and back behind the proxy: no request is dropped")
    each = (f"about {plan.interruption:.0f}s each time (the longest recent switch)"
            if plan.interruption is not None else
            "for as long as a switch takes (no earlier record has step times)")
    return (f"the drill switches {', '.join(plan.hosts)} from {plan.current_tag} to "
            f"{plan.previous_tag} and back: without a proxy in front of the app the service "
            f"is interrupted twice, {each}")


def drill(cfg: Config, *, hosts: list[str] | None = None, yes: bool = False,
          report: Reporter = NULL, environ: dict[str, str] | None = None,
          progress: Progress = NULL, **swarm_kw: Any) -> dict[str, Any]:
    """Run the drill; return its result (`outcome` succeeded or failed). `swarm_kw` goes
    to each attempt of a swarm drill (`plainsail.swarm.deploy.SwarmDeploy`)."""
    hosts = hosts or []
    out = reporter(report, progress)
    swarm = cfg.target == "swarm"
    plan = (prepare_swarm if swarm else prepare)(cfg, hosts, out.warn)
    proxied = cfg.proxy is not None  # hosts: per-host Caddy; swarm: the global proxy service
    notice = interruption_notice(plan, proxied=proxied, swarm=swarm)
    if not yes and not proxied:
        raise UsageError(f"{notice}; run it again with --yes to go ahead")
    out.say(notice, "drill")
    drill_id = new_deploy_id()
    env = dict(os.environ if environ is None else environ)
    out.say(f"{drill_id}: rolling back to {plan.previous_tag}", "drill")
    if swarm:
        from plainsail.swarm import morning
        from plainsail.swarm.deploy import SwarmDeploy

        back = morning.rollback(cfg, to=plan.previous_tag, report=out, environ=env,
                                drill=drill_id, **swarm_kw)
    else:
        back = rollback.rollback(cfg, hosts=hosts, report=out, environ=env, drill=drill_id)
    result: dict[str, Any] = {
        "kind": "drill", "id": drill_id, "service": cfg.service, "hosts": plan.hosts,
        "current": {"tag": plan.current_tag, "digest": plan.current_digest},
        "previous": {"tag": plan.previous_tag, "digest": back.get("digest")},
        "interruption_estimate": plan.interruption,
        "rollback": _phase(back), "deploy": None,
    }
    works = back.get("outcome") == SUCCEEDED
    result["previous_works_with_current_schema"] = works
    # A failed gate restores the current version; anything else that left it stopped or
    # switched is undone by deploying it again.
    current_runs = back.get("outcome") not in (SUCCEEDED, RESTORE_FAILED) and not any(
        h.get("outcome") == RESTORE_FAILED for h in back.get("per_host") or [])
    if not current_runs:
        out.say(f"deploying {plan.current_tag} again (migrations skipped: the schema "
                "is current)", "drill")
        req = Request(ref=f"{plan.current_tag}@{plan.current_digest}", hosts=hosts,
                      skip_migrations=True, kind="deploy", drill=drill_id)
        again = (SwarmDeploy(cfg, req, out, environ=env, **swarm_kw) if swarm
                 else Deploy(cfg, req, out, environ=env)).run()
        result["deploy"] = _phase(again)
        returned = again.get("outcome") == SUCCEEDED
    else:
        returned = True
    result["returned_to_current"] = returned
    result["outcome"] = SUCCEEDED if works and returned else "failed"
    result["reason"] = _verdict(plan, back, works, returned)
    return result


def _phase(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": summary.get("id"), "tag": summary.get("tag"),
            "outcome": summary.get("outcome"), "seconds": summary.get("seconds"),
            "reason": summary.get("reason")}


def _verdict(plan: DrillPlan, back: Mapping[str, Any], works: bool, returned: bool) -> str:
    if works:
        first = (f"{plan.previous_tag} still works with the current schema (it passed its "
                 "health gate)")
    else:
        first = (f"the rollback to {plan.previous_tag} did not pass ({back.get('outcome')}: "
                 f"{back.get('reason')}); fix the way back before you need it")
    if returned:
        return f"{first}; {plan.current_tag} runs again"
    return (f"{first}; {plan.current_tag} could NOT be deployed again: run plainsail deploy "
            f"{plan.current_tag}@{plan.current_digest}")


def render(result: Mapping[str, Any]) -> str:
    lines = [f"drill {result['id']}: {str(result['outcome']).upper()}",
             f"  {result['reason']}"]
    back, again = result.get("rollback"), result.get("deploy")
    if back:
        lines.append(f"  rollback to {result['previous']['tag']}: {back['outcome']} in "
                     f"{float(back.get('seconds') or 0):.1f}s")
    if again:
        lines.append(f"  deploy of {result['current']['tag']} again: {again['outcome']} in "
                     f"{float(again.get('seconds') or 0):.1f}s")
    return "\n".join(lines)
