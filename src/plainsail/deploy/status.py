"""What runs on each host now: the running version and its health, the rollback targets
kept, and the deploy lock (with an interrupted attempt named as such)."""

from __future__ import annotations

import http.client
from typing import Any

from plainsail.config.model import Config
from plainsail.deploy.health import app_address, check, probe_once
from plainsail.errors import PlainsailError
from plainsail.hosts import state as hoststate
from plainsail.hosts.containers import current, list_service
from plainsail.hosts.fleet import Opened, opened


def status(cfg: Config, hosts: list[str]) -> dict[str, Any]:
    """Per selected host: running (tag, digest, container, since), health now, retained
    containers, and the lock (`interrupted` when its holder died without finishing)."""
    out: list[dict[str, Any]] = []
    with opened(cfg, hosts) as fleet:
        for o in fleet:
            containers = list_service(o.ex, cfg.service)
            cur = current(containers)
            entry: dict[str, Any] = {"host": o.host.name, "running": None, "health": None}
            if cur:
                entry["running"] = {"tag": cur.tag, "digest": cur.digest, "container": cur.name,
                                    "since": cur.started, "deploy_id": cur.deploy_id}
                entry["health"] = health_now(cfg, o, cur.name)
            entry["retained"] = [
                {"tag": c.tag, "digest": c.digest, "container": c.name, "status": c.status,
                 "created": c.created}
                for c in containers if c is not cur
            ]
            lock = hoststate.read_lock(o.ex, o.paths)
            if lock is None:
                entry["lock"] = None
            elif isinstance(lock, str):
                entry["lock"] = {"holder": "unknown", "interrupted": False}
            else:
                entry["lock"] = {**lock.__dict__, "interrupted": lock.holder_dead(),
                                 "hint": lock.stale_hint().lstrip("; ")}
            out.append(entry)
    return {"service": cfg.service, "hosts": out}


def health_now(cfg: Config, o: Opened, name: str) -> str:
    try:
        host, port = o.ex.reach(*app_address(o.ex, cfg, name))
        code, body = probe_once(o.ex, host, port, cfg.health.path, cfg.health.timeout)
    except (OSError, http.client.HTTPException, ValueError, PlainsailError) as exc:
        return f"unhealthy ({exc or type(exc).__name__})"
    problem = check(code, body, cfg.health)
    return "healthy" if problem is None else f"unhealthy ({problem})"
