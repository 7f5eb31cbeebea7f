"""What runs on each host now: the running version and its health, the rollback targets
kept, the deploy lock (with an interrupted attempt named as such) and, with a proxy, the
proxy's state, whether the service is behind it, and its maintenance mode."""

from __future__ import annotations

import http.client
from typing import Any

from plainsail.config.model import Config
from plainsail.deploy.health import app_address, check, probe_once
from plainsail.deploy.plan import select_hosts
from plainsail.errors import PlainsailError, one_line
from plainsail.hosts import state as hoststate
from plainsail.hosts.containers import Container, current, list_service
from plainsail.hosts.executor import Executor
from plainsail.hosts.fleet import Opened, opened


def status(cfg: Config, hosts: list[str],
           executors: dict[str, Executor] | None = None) -> dict[str, Any]:
    """Per selected host: running (tag, digest, container, since), health now, retained
    containers, the lock (`interrupted` when its holder died without finishing), and the
    proxy (None without a proxy: block; see `proxy_now`)."""
    out: list[dict[str, Any]] = []
    for host in select_hosts(cfg, hosts):
        try:
            with opened(cfg, [host.name], executors) as fleet:
                out.append(_host_status(cfg, fleet[0]))
        except PlainsailError as exc:  # one host down must not hide the others
            out.append({"host": host.name, "reachable": False, "error": one_line(exc),
                        "running": None, "health": None, "proxy": None, "retained": [],
                        "lock": None})
    return {"service": cfg.service, "hosts": out, "versions": versions(out)}


def versions(hosts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Which hosts run which version (`TAG@DIGEST`, or "nothing"), of the hosts reached; more
    than one key means the fleet runs mixed versions."""
    by: dict[str, list[str]] = {}
    for e in hosts:
        if e["reachable"]:
            r = e["running"]
            by.setdefault(f"{r['tag']}@{r['digest']}" if r else "nothing", []).append(e["host"])
    return by


def _host_status(cfg: Config, o: Opened) -> dict[str, Any]:
    containers = list_service(o.ex, cfg.service)
    cur = current(containers)
    entry: dict[str, Any] = {"host": o.host.name, "reachable": True, "error": None,
                             "running": None, "health": None}
    if cur:
        entry["running"] = {"tag": cur.tag, "digest": cur.digest, "container": cur.name,
                            "since": cur.started, "deploy_id": cur.deploy_id}
        entry["health"] = health_now(cfg, o, cur.name)
    entry["proxy"] = proxy_now(cfg, o, cur) if cfg.proxy is not None else None
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
    return entry


def health_now(cfg: Config, o: Opened, name: str) -> str:
    try:
        host, port = o.ex.reach(*app_address(o.ex, cfg, name))
        code, body = probe_once(o.ex, host, port, cfg.health.path, cfg.health.timeout)
    except (OSError, http.client.HTTPException, ValueError, PlainsailError) as exc:
        return f"unhealthy ({exc or type(exc).__name__})"
    problem = check(code, body, cfg.health)
    return "healthy" if problem is None else f"unhealthy ({problem})"


def proxy_now(cfg: Config, o: Opened, cur: Container | None) -> dict[str, Any]:
    """The host's proxy: its state (running, stopped or missing), whether this service's
    route points at the running container, and its maintenance mode (on, message).
    `behind_proxy` and `maintenance` are None when the proxy cannot be asked."""
    from plainsail import proxy

    out: dict[str, Any] = {"state": "unknown", "container": None, "admin": None,
                           "behind_proxy": None, "upstream": None, "in_flight": None,
                           "maintenance": None}
    try:
        st = proxy.status(o.ex, cfg)
    except PlainsailError as exc:
        out["admin"] = f"not asked ({one_line(exc)})"
        return out
    status = str(st["status"])
    out["state"] = status if status in ("running", "missing") else "stopped"
    out["container"], out["admin"] = st["container"], st["admin"]
    if st["admin"] != "ok":
        return out
    route = next((r for r in st["routes"] if r["service"] == cfg.service), None)
    message = route["maintenance"] if route else None
    out["maintenance"] = {"on": message is not None, "message": message}
    if route is None:
        out["behind_proxy"] = False
        return out
    out["upstream"], out["in_flight"] = route["upstream"], route["in_flight"]
    out["behind_proxy"] = bool(cur and route["upstream"] == proxy.upstream_of(cfg, cur.name))
    if cfg.traffic_gate is not None:
        out["last_minute"] = last_minute(cfg, o, str(route["upstream"]))
    return out


def last_minute(cfg: Config, o: Opened, upstream: str) -> dict[str, Any] | None:
    """traffic_gate: the routed upstream's answers over the last minute, from the proxy's
    traffic log (requests, 5xx, error rate, p50, p95); None when the log cannot be read."""
    from plainsail import proxy
    from plainsail.deploy import trafficgate

    try:
        now = proxy.host_time(o.ex)
        samples = proxy.read_traffic(o.ex, cfg, now - 60)
    except PlainsailError:
        return None
    return trafficgate.figures(samples, {upstream}, now - 60, now).to_json()


def describe_minute(m: dict[str, Any]) -> str:
    """The last minute's figures (`last_minute`) in one line."""
    if not m.get("requests"):
        return "no requests"
    p95 = m.get("p95")
    return (f"{m['requests']} requests, error rate {m.get('error_rate', 0):g}%, p95 "
            + (f"{float(p95) * 1000:.0f}ms" if isinstance(p95, int | float) else "-"))


def describe_proxy(p: dict[str, Any] | None) -> str:
    """One line for `plainsail status`."""
    if p is None:
        return "proxy: none configured (stop-start deploys)"
    if p["state"] == "missing":
        return ("proxy: MISSING (plainsail proxy boot, or the next deploy, starts it); the "
                "service is not behind it")
    if p["state"] != "running":
        return (f"proxy: {p['state'].upper()}"
                + (f" ({p['container']})" if p["container"] else "")
                + f"; admin: {p['admin']}; plainsail proxy boot starts it")
    if p["behind_proxy"] is None:
        return f"proxy: running ({p['container']}), admin: {p['admin']}"
    routed = ("behind the proxy" if p["behind_proxy"] else
              f"NOT behind the proxy (the route points at {p['upstream']})" if p["upstream"]
              else "NOT behind the proxy (no route)")
    m = p["maintenance"] or {}
    maint = (f"maintenance ON: {m.get('message')!r}" if m.get("on") else "maintenance off")
    flight = f", {p['in_flight']} request(s) in flight" if p["in_flight"] else ""
    return f"proxy: running ({p['container']}); {routed}{flight}; {maint}"
