"""`plainsail history`: deploy attempts, newest first, with why the failed ones failed."""

from __future__ import annotations

import argparse
from typing import Any

from plainsail import config as configlib
from plainsail import hoststate
from plainsail.fleet import opened
from plainsail.history import read_local
from plainsail.output import print_json, say
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
            if rec.get("preflight") and str(rec.get("id")) not in by_id:
                by_id[str(rec.get("id"))] = {**rec, "outcomes": {}}
    return sorted(by_id.values(), key=lambda r: str(r.get("started", "")), reverse=True)


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config)
    attempts = collect(cfg, args.host)[: max(args.limit, 0)]
    if args.json:
        print_json(attempts)
        return 0
    if not attempts:
        say(f"no deploys of {cfg.service} recorded yet")
        return 0
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
