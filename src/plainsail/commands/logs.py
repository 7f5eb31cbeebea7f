"""`plainsail logs [--tail N]`: the running app container's logs on each host."""

from __future__ import annotations

import argparse

from plainsail import config as configlib
from plainsail import docker
from plainsail.containers import current, list_service
from plainsail.fleet import opened
from plainsail.output import say


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config)
    with opened(cfg, args.host) as fleet:
        for o in fleet:
            containers = list_service(o.ex, cfg.service)
            cur = current(containers) or (containers[0] if containers else None)
            if cur is None:
                say(f"==> {o.host.name}: no container of {cfg.service}")
                continue
            say(f"==> {o.host.name}: {cur.name} ({cur.tag}, {cur.status})")
            res = o.ex.run(docker.logs(cur.name, args.tail), timeout=60)
            for line in (res.stdout + res.stderr).splitlines():
                say(line)
    return 0
