"""`plainsail lock status|release`: who holds a service's deploy lock; remove a stale one."""

from __future__ import annotations

import argparse

from plainsail.config import model as configlib
from plainsail.hosts import state as hoststate
from plainsail.hosts.fleet import opened
from plainsail.output import say


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config, swarm_ok=True)  # a swarm's lock is the manager's
    with opened(cfg, args.host) as fleet:
        for o in fleet:
            holder = hoststate.read_lock(o.ex, o.paths)
            if args.action == "status":
                if holder is None:
                    say(f"{o.host.name}: unlocked")
                elif holder == "unknown":
                    say(f"{o.host.name}: LOCKED ({o.paths.lock}, holder unknown)")
                else:
                    assert not isinstance(holder, str)
                    say(f"{o.host.name}: LOCKED by {holder.describe()}{holder.stale_hint()}")
            else:
                if hoststate.release(o.ex, o.paths):
                    who = holder.describe() if holder and not isinstance(holder, str) else "?"
                    say(f"{o.host.name}: released the lock held by {who}")
                else:
                    say(f"{o.host.name}: was not locked")
    return 0
