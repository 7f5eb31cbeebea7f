"""The morning after, on a Swarm: `rollback` to a release the manager's records name,
`recover` after a deployer died mid-update (its lock recorded as `interrupted` and released,
then the last known-good release deployed again by digest), and `status` (the service's
release, its tasks per node with digest, state and health now, Swarm's update status, the
lock). `history` needs nothing of its own: the records on the manager have the host
records' format, and the manager is the config's only host."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from plainsail.config.model import Config
from plainsail.deploy import health
from plainsail.deploy.hostregistry import pull_repository
from plainsail.deploy.plan import Request, Target, select_hosts, ssh_options
from plainsail.deploy.records import new_deploy_id
from plainsail.deploy.recover import _interrupted_record, find_stale
from plainsail.deploy.rollback import Choice, previous_good, release_settings, successes
from plainsail.errors import DeployError, PlainsailError, UsageError, one_line
from plainsail.hosts import state as hoststate
from plainsail.hosts.executor import Executor, executor_for
from plainsail.progress import NULL, Progress, Reporter, reporter
from plainsail.swarm import cluster
from plainsail.swarm import proxy as swproxy
from plainsail.swarm.deploy import SwarmDeploy


def manager(cfg: Config) -> Executor:
    return executor_for(select_hosts(cfg, [])[0], ssh_options(cfg), cfg.secrets())


def choose(ex: Executor, cfg: Config, to: str | None, warn: Callable[[str], None]) -> Choice:
    """The release to roll back to, from the manager's records: `to`, or the newest success
    before the release the service runs now."""
    paths, _ = hoststate.probe(ex, cfg.host_dir, cfg.service, timeout=cfg.timeouts.query)
    records = hoststate.read_history(ex, paths, warn)
    spec, _ = cluster.current_spec(ex, cfg)
    running = spec.tag if spec and spec.tag else None
    good = successes(records)
    if to:
        rec = next((r for r in good if r["tag"] == to), None)
        if rec is None:
            raise UsageError(f"{ex.host.name}: {to} never deployed successfully to the Swarm, "
                             "so it is not a known-good version; successful tags: "
                             f"{', '.join(sorted({r['tag'] for r in good})) or 'none'}")
    else:
        if records.damaged:
            raise DeployError(records.describe_damage(ex.host.name) + ", so the previous "
                              "version cannot be chosen safely; name it with --to TAG")
        rec = previous_good(records, running)
        if rec is None:
            raise DeployError(f"{ex.host.name}: nothing to roll back to: no successful deploy "
                              f"before the one now running ({running or 'nothing runs'})")
    if spec is not None and spec.digest == rec["digest"]:
        raise UsageError(f"{rec['tag']} is already running; nothing to roll back")
    return Choice(rec["tag"], rec["digest"], running, rec)


def rollback(cfg: Config, *, to: str | None = None, dry_run: bool = False,
             report: Reporter = NULL, environ: dict[str, str] | None = None,
             allow_breaking_migrations: bool = False, allow_shallow_clone: bool = False,
             progress: Progress = NULL, executor: Executor | None = None,
             drill: str | None = None, **deploy_kw: Any) -> dict[str, Any]:
    """A deploy of the recorded release (by its digest, signature verified again), with
    the app settings it ran with and today's secrets; migrations never run."""
    out = reporter(report, progress)
    ex = executor or manager(cfg)
    try:
        choice = choose(ex, cfg, to, out.warn)
    except BaseException:
        ex.close()
        raise
    run_cfg, said = release_settings(cfg, choice)
    out.say(said, "rollback")
    req = Request(ref=f"{choice.tag}@{choice.digest}", skip_migrations=True, dry_run=dry_run,
                  force=True, kind="rollback", rollback_from=choice.running, drill=drill,
                  allow_breaking_migrations=allow_breaking_migrations,
                  allow_shallow_clone=allow_shallow_clone, settings_from=said)
    return SwarmDeploy(run_cfg, req, out, environ=environ, executor=ex, **deploy_kw).run()


def recover(cfg: Config, *, force: bool = False, report: Reporter = NULL,
            environ: dict[str, str] | None = None, progress: Progress = NULL,
            executor: Executor | None = None, **deploy_kw: Any) -> dict[str, Any]:
    """After an interrupted attempt (its lock's holder a dead process of this machine, or
    any lock with `force`): record it as interrupted, release its lock, and update the
    service to the last known-good release of the manager's records, whatever state the
    interrupted update left (running, paused, half done). Ends `recovered`, or
    `restore-failed` when that release does not come back healthy."""
    out = reporter(report, progress)
    ex = executor or manager(cfg)
    try:
        stale, good = find_stale(cfg, [], force, {ex.host.name: ex}, out.warn)
        if not stale:
            raise UsageError("nothing to recover: no interrupted attempt holds the lock on the "
                             "manager (plainsail status shows what runs)")
        rec = good.get(ex.host.name)
        if rec is None:
            raise DeployError(f"{ex.host.name}: no successful deploy in the manager's records, "
                              "so there is no known-good release to put back; deploy a fix "
                              "with plainsail deploy, then plainsail lock release")
        s = stale[0]
        if s.lock is not None:
            hoststate.append_history(ex, s.paths, _interrupted_record(cfg, s))
        hoststate.release(ex, s.paths)
        out.say("released the lock of the interrupted attempt "
                f"{s.lock.deploy_id if s.lock else '(no holder info)'}", s.host)
    except BaseException:
        ex.close()
        raise
    req = Request(ref=f"{rec['tag']}@{rec['digest']}", skip_migrations=True, force=True,
                  kind="recover", rollback_from=s.lock.deploy_id if s.lock else None)
    target = Target(pull_repository(cfg), rec["tag"], rec["digest"], True)  # verified then
    return SwarmDeploy(cfg, req, out, environ=environ, executor=ex,
                       resolve=lambda c, r: target, **deploy_kw).run()


def status(cfg: Config, executor: Executor | None = None) -> dict[str, Any]:
    """What runs on the Swarm now; `reachable` False (with `error`) when the manager or
    its Swarm cannot be asked."""
    ex = executor or manager(cfg)
    name = ex.host.name
    try:
        paths, _ = hoststate.probe(ex, cfg.host_dir, cfg.service, timeout=cfg.timeouts.query)
        spec, raw = cluster.current_spec(ex, cfg)
        out: dict[str, Any] = {"target": "swarm", "host": name, "reachable": True,
                               "service": cfg.service, "running": None, "tasks": [],
                               "replicas": None, "update_status": None, "lock": None}
        if spec is not None and raw is not None:
            mode = (raw.get("Spec") or {}).get("Mode") or {}
            out["replicas"] = ((mode.get("Replicated") or {}).get("Replicas"))
            out["running"] = {"tag": spec.tag, "digest": spec.digest,
                              "deploy": spec.labels.get("plainsail.deploy", ""),
                              "since": str(raw.get("UpdatedAt") or "")}
            known = cluster.nodes(ex, cfg)
            update, tasks = cluster.tasks(ex, cfg, known)
            out["update_status"] = update
            out["tasks"] = [{**t.to_json(), "health": "-"} for t in tasks]
            up = [(i, t) for i, t in enumerate(tasks) if t.state == "running"
                  and (cfg.proxy or cfg.app.publish) and all(cluster.probe_target(cfg, t))]
            if up:
                once = replace(cfg.health, attempts=1)
                name = swproxy.probe_name(cfg, new_deploy_id())
                with swproxy.prober(ex, cfg, name) as prober:
                    for i, task in up:
                        verdict = health.gate(prober, once, cluster.probe_target(cfg, task),
                                              task.id, cfg.secrets(), state=cluster.task_state)
                        out["tasks"][i]["health"] = "ok" if verdict.healthy else verdict.reason
        if cfg.proxy is not None:
            out["proxy"] = proxy_status(ex, cfg)
        lock = hoststate.read_lock(ex, paths)
        if isinstance(lock, hoststate.LockInfo):
            out["lock"] = {"holder": lock.holder, "started": lock.started,
                           "deploy_id": lock.deploy_id, "hint": lock.stale_hint().lstrip("; ")}
        elif lock:
            out["lock"] = {"holder": "unknown", "started": "", "hint": ""}
        return out
    except PlainsailError as exc:
        return {"target": "swarm", "host": name, "reachable": False, "error": one_line(exc),
                "service": cfg.service}
    finally:
        ex.close()


def proxy_status(ex: Executor, cfg: Config) -> dict[str, Any]:
    """The proxy service: its port, Swarm's last update of it, its task on each node."""
    assert cfg.proxy is not None
    name = swproxy.service_name(cfg.service)
    known = cluster.nodes(ex, cfg)
    if cluster.inspect(ex, cfg, name) is None:
        return {"service": name, "port": cfg.proxy.http_port, "exists": False, "tasks": [],
                "update_status": None, "nodes": len(known)}
    update, tasks = cluster.tasks(ex, cfg, known, service=name)
    return {"service": name, "port": cfg.proxy.http_port, "exists": True,
            "update_status": update, "nodes": len(known),
            "tasks": [{"task": t.id, "node_id": t.node_id, "node": t.node,
                       "address": t.address, "state": t.state, "error": t.error}
                      for t in tasks]}


def render_status(cfg: Config, s: dict[str, Any]) -> list[str]:
    if not s["reachable"]:
        return [f"{s['host']}: UNREACHABLE: {s['error'].removeprefix(s['host'] + ': ')}"]
    run = s["running"]
    if not run:
        lines = [f"{s['host']}: no Swarm service {cfg.service}"]
    else:
        tasks = s["tasks"]
        up = [t for t in tasks if t["state"] == "running"]
        state = (s["update_status"] or {}).get("State") or "none"
        lines = [f"{s['host']}: swarm service {cfg.service} {run['tag']} "
                 f"({run['digest'][:19]}) since {run['since'][:19]}Z, deploy {run['deploy']}; "
                 f"{len(up)}/{s['replicas']} task(s) running; last update: {state}"]
        for t in tasks:
            lines.append(f"  task {t['task'][:12]} on {t['address'] or t['node_id']} "
                         f"(node {t['node_id'][:12]}): {t['state']}, digest "
                         f"{t['digest'][7:19]}, health: {t['health']}")
    px = s.get("proxy")
    if px and not px["exists"]:
        lines.append(f"  proxy {px['service']}: not created yet (the next deploy creates it)")
    elif px:
        up = [t for t in px["tasks"] if t["state"] == "running"]
        state = (px["update_status"] or {}).get("State") or "none"
        lines.append(f"  proxy {px['service']}: port {px['port']} on {len(up)}/{px['nodes']} "
                     f"node(s) running; last update: {state}")
        for t in px["tasks"]:
            lines.append(f"    on {t['address'] or t['node_id']}: {t['state']}"
                         + (f" ({t['error']})" if t["error"] else ""))
    lock = s.get("lock")
    if lock:
        lines.append(f"  LOCKED by {lock['holder']}"
                     + (f" since {lock['started']}" if lock.get("started") else "")
                     + (f"; {lock['hint']}" if lock.get("hint") else ""))
    return lines
