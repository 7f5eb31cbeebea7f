"""Deploy history: the hosts' records (every attempt, from any machine or CI) and the
deployer's local history (`.plainsail/history.jsonl` next to plainsail.yml).

Every attempt is appended here, including those that failed in preflight and so never
reached a host; hosts keep their own history of what was done to them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plainsail.config.model import Config
from plainsail.deploy.plan import select_hosts
from plainsail.errors import PlainsailError
from plainsail.hosts import state as hoststate
from plainsail.hosts.fleet import opened
from plainsail.hosts.state import parse_history


def local_path(cfg: Config) -> Path:
    return cfg.root / ".plainsail" / "history.jsonl"


def append_local(cfg: Config, record: dict[str, Any]) -> None:
    path = local_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_local(cfg: Config) -> list[dict[str, Any]]:
    path = local_path(cfg)
    if not path.exists():
        return []
    return parse_history(path.read_text(encoding="utf-8"))


def collect(cfg: Config, hosts: list[str],
            warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """Attempts merged across hosts by deploy id (plus local preflight failures); `warn` is
    told of damaged history lines."""
    by_id: dict[str, dict[str, Any]] = {}
    with opened(cfg, hosts) as fleet:
        for o in fleet:
            for rec in hoststate.read_history(o.ex, o.paths, warn):
                entry = by_id.setdefault(str(rec.get("id")), {**rec, "hosts": [],
                                                               "outcomes": {}})
                entry["hosts"].append(o.host.name)
                entry["outcomes"][o.host.name] = rec.get("outcome")
                if rec.get("outcome") != "succeeded":
                    entry["outcome"], entry["reason"] = rec.get("outcome"), rec.get("reason")
    if not hosts:
        for rec in read_local(cfg):
            if (rec.get("preflight") and str(rec.get("id")) not in by_id
                    and rec.get("service", cfg.service) == cfg.service):
                by_id[str(rec.get("id"))] = {**rec, "outcomes": {}}
    return _newest_first(by_id.values())


def collect_local(cfg: Config, hosts: list[str]) -> list[dict[str, Any]]:
    """Attempts from the local history (one summary per attempt), without connecting."""
    wanted = {h.name for h in select_hosts(cfg, hosts)} if hosts else None
    found = []
    for rec in read_local(cfg):
        if rec.get("service", cfg.service) != cfg.service:
            continue
        names = [str(h) for h in rec.get("hosts") or []]
        if wanted is not None and not wanted & set(names):
            continue
        outcomes = {str(p.get("host")): p.get("outcome") for p in rec.get("per_host") or []
                    if isinstance(p, dict)}
        found.append({**rec, "hosts": names, "outcomes": outcomes})
    return _newest_first(found)


def _newest_first(records: Any) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: str(r.get("started", "")), reverse=True)


def gather(
    cfg: Config, hosts: list[str], source: str, warn: Callable[[str], None]
) -> tuple[list[dict[str, Any]], str, str]:
    """The attempts, their source ("hosts" or "local") and a phrase naming it; `warn` is
    told what the person should know (damaged lines, the hosts unreachable)."""
    local = local_path(cfg)
    local_name = f"the local history {local} (attempts run from this checkout only)"
    if source == "local":
        return collect_local(cfg, hosts), "local", local_name
    try:
        attempts = collect(cfg, hosts, warn)
    except PlainsailError as exc:
        if source == "hosts" or not local.exists():
            raise
        warn(f"{exc}; showing {local_name} instead (--source hosts to insist)")
        return collect_local(cfg, hosts), "local", local_name
    names = [h.name for h in select_hosts(cfg, hosts)]
    return attempts, "hosts", f"the records on {', '.join(names)}"
