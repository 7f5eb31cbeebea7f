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

from plainsail.config import model as configlib
from plainsail.deploy.history import gather
from plainsail.deploy.report import gate_figures, table
from plainsail.output import print_json, say, warn


def hosts_cell(a: dict[str, object]) -> str:
    """The hosts of an attempt; with several, how many ended in each outcome."""
    hosts = [str(h) for h in a.get("hosts") or []]  # type: ignore[attr-defined]
    outcomes = a.get("outcomes")
    if len(hosts) < 2 or not isinstance(outcomes, dict):
        return ",".join(hosts)
    counts: dict[str, int] = {}
    for h in hosts:
        o = str(outcomes.get(h) or "?")
        counts[o] = counts.get(o, 0) + 1
    return f"{len(hosts)} hosts: " + ", ".join(f"{n} {o}" for o, n in counts.items())


def gate_cell(a: dict[str, Any]) -> str:
    """The traffic gate's verdict of an attempt, with the new version's figures on its
    first failed host (else its first judged one); with several hosts judged, on how many
    of them (`failed on 1 of 3 hosts: ...`); "-" when it had none."""
    gates = [a.get("traffic_gate")] + [p.get("traffic_gate") for p in a.get("per_host") or []
                                       if isinstance(p, dict)]
    found = [g for g in gates if isinstance(g, dict) and g.get("verdict")]
    judged = [g for g in found if isinstance(g.get("new"), dict)]
    if not found:
        return "-"
    gate = next((g for g in judged if g["verdict"] == "failed"), None) or (judged or found)[0]
    verdict = str(gate["verdict"])
    if len(found) > 1:
        same = sum(g["verdict"] == gate["verdict"] for g in found)
        verdict += f" on {same} of {len(found)} hosts"
    new = gate.get("new")
    if not isinstance(new, dict):
        return verdict
    return f"{verdict}: {gate_figures(new)}"


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config, swarm_ok=True)  # a swarm's records are the manager's
    found, kind, source = gather(cfg, args.host, args.source, warn)
    attempts = found[: max(args.limit, 0)]
    if args.json:
        print_json([{**a, "source": kind} for a in attempts])
        return 0
    if not attempts:
        say(f"no deploys of {cfg.service} recorded yet in {source}")
        return 0
    say(f"deploys of {cfg.service} from {source}:")
    gated = any(gate_cell(a) != "-" for a in attempts)
    rows = []
    for a in attempts:
        tag = str(a.get("tag") or a.get("requested") or "-")
        if a.get("kind") == "rollback":
            tag = f"{a.get('rollback_from') or '?'} -> {tag} (rollback)"
        rows.append([
            str(a.get("started", ""))[:19].replace("T", " "), tag,
            str(a.get("digest") or "")[7:19], a.get("who", ""), a.get("outcome", ""),
            f"{float(a.get('seconds') or 0):.1f}s",
            "(stopped in preflight)" if a.get("preflight") else hosts_cell(a),
        ] + ([gate_cell(a)] if gated else []))
    say(table(["WHEN (UTC)", "TAG", "DIGEST", "WHO", "OUTCOME", "TOOK", "HOSTS"]
              + (["TRAFFIC GATE"] if gated else []), rows))
    failed = [a for a in attempts
              if a.get("outcome") not in ("succeeded", "unchanged", "recovered")]
    for a in failed:
        say(f"  {str(a.get('started', ''))[:19]} {a.get('outcome')}: {a.get('reason')}")
    return 0
