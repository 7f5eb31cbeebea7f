"""`plainsail status`: per host, what runs, since when, its health now, the rollback
targets kept, the lock holder if any (an interrupted attempt named as such) and, with a
proxy, the proxy's state, whether the service is behind it, and maintenance on/off. A host
that cannot be reached is listed as such (exit 1) and the others are still shown."""

from __future__ import annotations

import argparse

from plainsail.config import model as configlib
from plainsail.deploy.status import describe_minute, describe_proxy, status
from plainsail.output import print_json, say, warn


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config, swarm_ok=True)
    if cfg.target == "swarm":
        from plainsail.swarm.morning import render_status
        from plainsail.swarm.morning import status as swarm_status

        found = swarm_status(cfg)
        if args.json:
            print_json(found)
        else:
            for line in render_status(cfg, found):
                say(line)
        return 0 if found["reachable"] else 1
    result = status(cfg, args.host)
    unreachable = [e for e in result["hosts"] if not e["reachable"]]
    code = 1 if unreachable else 0
    if args.json:
        print_json(result)
        return code
    for e in result["hosts"]:
        if not e["reachable"]:
            error = e["error"].removeprefix(f"{e['host']}: ")
            say(f"{e['host']}: UNREACHABLE: {error}")
            continue
        run_ = e["running"]
        if run_:
            say(f"{e['host']}: {cfg.service} {run_['tag']} ({run_['digest'][:19]}) since "
                f"{run_['since'][:19]}Z, health: {e['health']}")
        else:
            say(f"{e['host']}: nothing of {cfg.service} is running")
        say("  " + describe_proxy(e["proxy"]))
        minute = (e["proxy"] or {}).get("last_minute")
        if minute is not None:
            say("  last minute through the proxy: " + describe_minute(minute))
        if e["retained"]:
            say("  rollback targets kept: " + ", ".join(
                f"{r['tag']} ({r['status']})" for r in e["retained"]))
        lock = e["lock"]
        if lock:
            since = f" since {lock['started']}" if lock.get("started") else ""
            say(f"  LOCKED by {lock['holder']}{since}"
                + (f"; {lock['hint']}" if lock.get("hint") else ""))
    mixed = result["versions"]
    if len(mixed) > 1:
        warn(f"MIXED VERSIONS: the hosts of {cfg.service} do not run one version: "
             + "; ".join(f"{v.split('@')[0]} on {', '.join(hosts)}" for v, hosts in mixed.items())
             + ". Deploy one version to every host (plainsail deploy TAG) or roll back")
    return code
