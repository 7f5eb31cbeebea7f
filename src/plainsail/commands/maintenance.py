"""`plainsail maintenance on|off`: the proxy answers 503 for this service only."""

from __future__ import annotations

import argparse

from plainsail import proxy
from plainsail.config import model as configlib
from plainsail.hosts.fleet import opened
from plainsail.output import print_json, say
from plainsail.proxy.host import proxy_config


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config)
    proxy_config(cfg)  # a clear error when the config has no proxy: block
    on = args.state == "on"
    results = []
    with opened(cfg, args.host) as fleet:
        for o in fleet:
            changed = proxy.maintenance(o.ex, cfg, on, args.message)
            results.append({"host": o.host.name, "maintenance": on, "changed": changed})
            if not args.json:
                state = "ON (503 with Retry-After for this service)" if on else "off"
                say(f"{o.host.name}: maintenance of {cfg.service} {state}"
                    + ("" if changed else " (already so)"))
    if args.json:
        print_json({"service": cfg.service, "hosts": results})
    return 0
