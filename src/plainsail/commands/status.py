"""`plainsail status`: per host, what runs, since when, its health now, the rollback
targets kept, and the lock holder if any."""

from __future__ import annotations

import argparse
import http.client
from typing import Any

from plainsail import config as configlib
from plainsail import hoststate
from plainsail.containers import current, list_service
from plainsail.fleet import opened
from plainsail.health import app_address, check, probe_once
from plainsail.output import print_json, say


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config)
    hosts: list[dict[str, Any]] = []
    with opened(cfg, args.host) as fleet:
        for o in fleet:
            containers = list_service(o.ex, cfg.service)
            cur = current(containers)
            entry: dict[str, Any] = {"host": o.host.name, "running": None, "health": None}
            if cur:
                entry["running"] = {"tag": cur.tag, "digest": cur.digest, "container": cur.name,
                                    "since": cur.started, "deploy_id": cur.deploy_id}
                entry["health"] = _health_now(cfg, o, cur.name)
            entry["retained"] = [
                {"tag": c.tag, "digest": c.digest, "container": c.name, "status": c.status,
                 "created": c.created}
                for c in containers if c is not cur
            ]
            lock = hoststate.read_lock(o.ex, o.paths)
            entry["lock"] = (None if lock is None else "unknown" if isinstance(lock, str)
                             else lock.__dict__)
            hosts.append(entry)
    if args.json:
        print_json({"service": cfg.service, "hosts": hosts})
        return 0
    for e in hosts:
        run_ = e["running"]
        if run_:
            say(f"{e['host']}: {cfg.service} {run_['tag']} ({run_['digest'][:19]}) since "
                f"{run_['since'][:19]}Z, health: {e['health']}")
        else:
            say(f"{e['host']}: nothing of {cfg.service} is running")
        if e["retained"]:
            say("  rollback targets kept: " + ", ".join(
                f"{r['tag']} ({r['status']})" for r in e["retained"]))
        if e["lock"]:
            holder = e["lock"] if isinstance(e["lock"], str) else (
                f"{e['lock']['holder']} since {e['lock']['started']}")
            say(f"  LOCKED by {holder}")
    return 0


def _health_now(cfg: configlib.Config, o: Any, name: str) -> str:
    try:
        host, port = o.ex.reach(*app_address(o.ex, cfg, name))
        status, body = probe_once(o.ex, host, port, cfg.health.path, cfg.health.timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"unhealthy ({exc or type(exc).__name__})"
    problem = check(status, body, cfg.health)
    return "healthy" if problem is None else f"unhealthy ({problem})"
