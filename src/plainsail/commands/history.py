"""`plainsail history`: deploy attempts, newest first, with why the failed ones failed.

Two sources: the hosts' records (every deploy, from any machine or CI) and the local
history beside plainsail.yml (the attempts run from this checkout, including those that
stopped in preflight). `--source auto` (the default) reads the hosts and, when a host
cannot be reached, falls back to the local history, saying so; `--source local` never
connects; `--source hosts` fails when a host is unreachable. The output names its source.
"""

from __future__ import annotations

import argparse
from typing import Any

from plainsail import config as configlib
from plainsail import hoststate
from plainsail.errors import PlainsailError
from plainsail.fleet import opened
from plainsail.history import local_path, read_local
from plainsail.output import print_json, say, warn
from plainsail.plan import select_hosts
from plainsail.report import table


def collect(cfg: configlib.Config, hosts: list[str]) -> list[dict[str, Any]]:
    """Attempts merged across hosts by deploy id (plus local preflight failures)."""
    by_id: dict[str, dict[str, Any]] = {}
    with opened(cfg, hosts) as fleet:
        for o in fleet:
            for rec in hoststate.read_history(o.ex, o.paths):
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


def collect_local(cfg: configlib.Config, hosts: list[str]) -> list[dict[str, Any]]:
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
    cfg: configlib.Config, hosts: list[str], source: str
) -> tuple[list[dict[str, Any]], str, str]:
    """The attempts, their source ("hosts" or "local") and a phrase naming it."""
    local = local_path(cfg)
    local_name = f"the local history {local} (attempts run from this checkout only)"
    if source == "local":
        return collect_local(cfg, hosts), "local", local_name
    try:
        attempts = collect(cfg, hosts)
    except PlainsailError as exc:
        if source == "hosts" or not local.exists():
            raise
        warn(f"{exc}; showing {local_name} instead (--source hosts to insist)")
        return collect_local(cfg, hosts), "local", local_name
    names = [h.name for h in select_hosts(cfg, hosts)]
    return attempts, "hosts", f"the records on {', '.join(names)}"


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config)
    found, kind, source = gather(cfg, args.host, args.source)
    attempts = found[: max(args.limit, 0)]
    if args.json:
        print_json([{**a, "source": kind} for a in attempts])
        return 0
    if not attempts:
        say(f"no deploys of {cfg.service} recorded yet in {source}")
        return 0
    say(f"deploys of {cfg.service} from {source}:")
    rows = []
    for a in attempts:
        tag = str(a.get("tag") or a.get("requested") or "-")
        if a.get("kind") == "rollback":
            tag = f"{a.get('rollback_from') or '?'} -> {tag} (rollback)"
        rows.append([
            str(a.get("started", ""))[:19].replace("T", " "), tag,
            str(a.get("digest") or "")[7:19], a.get("who", ""), a.get("outcome", ""),
            f"{float(a.get('seconds') or 0):.1f}s",
            "(stopped in preflight)" if a.get("preflight") else ",".join(a.get("hosts") or []),
        ])
    say(table(["WHEN (UTC)", "TAG", "DIGEST", "WHO", "OUTCOME", "TOOK", "HOSTS"], rows))
    failed = [a for a in attempts if a.get("outcome") not in ("succeeded", "unchanged")]
    for a in failed:
        say(f"  {str(a.get('started', ''))[:19]} {a.get('outcome')}: {a.get('reason')}")
    return 0
