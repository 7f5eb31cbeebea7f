"""`plainsail proxy status|logs|boot`: the per-host proxy of the config's hosts."""

from __future__ import annotations

import argparse
import os
from typing import Any

from plainsail import proxy
from plainsail.commands.logs import secrets_to_hide
from plainsail.config import model as configlib
from plainsail.hosts.fleet import opened
from plainsail.output import print_json, say
from plainsail.proxy.host import proxy_config
from plainsail.secret import redact


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config)
    proxy_config(cfg)  # a clear error when the config has no proxy: block
    results: list[dict[str, object]] = []
    with opened(cfg, args.host) as fleet:
        for o in fleet:
            if args.action == "boot":
                booted = proxy.ensure_booted(o.ex, cfg)
                results.append({"host": booted.host, "container": booted.container,
                                "action": booted.action, "seconds": round(booted.seconds, 2),
                                "warning": booted.warning})
                if not args.json:
                    what = {"none": "already running", "created": "created and started",
                            "started": "started", "restarted": "restarted"}[booted.action]
                    say(f"{booted.host}: proxy {booted.container} {what}")
                    if booted.warning:
                        say(f"{booted.host}: warning: {booted.warning}")
            elif args.action == "status":
                st = proxy.status(o.ex, cfg)
                results.append(st)
                if not args.json:
                    _show_status(st)
            else:
                secrets = secrets_to_hide(cfg, os.environ)
                say(f"==> {o.host.name}: proxy logs")
                for line in proxy.logs(o.ex, cfg, args.tail).splitlines():
                    say(redact(line, secrets))
    if args.json and args.action != "logs":
        print_json({"hosts": results})
    return 0


def _show_status(st: dict[str, Any]) -> None:
    settings = st["settings"]
    line = f"{st['host']}: proxy {st['container']} {st['status']}"
    if isinstance(settings, dict):
        line += (f", {settings['image']}, ports {settings['http_port']}/"
                 f"{settings['https_port']}, network {settings['network']}")
    if st.get("set_by"):
        line += f" (settings set by {st['set_by']})"
    say(line)
    if st["status"] == "running" and st["admin"] != "ok":
        say(f"  admin API: {st['admin']}")
    if st.get("warning"):
        say(f"  warning: {st['warning']}")
    for r in st["routes"]:
        path = "" if r["path"] == "/" else r["path"]
        hosts = ", ".join(h + path for h in r["hosts"])
        extra = " MAINTENANCE" if r["maintenance"] is not None else ""
        say(f"  {r['service']}: {hosts} (tls {r['tls']}) -> {r['upstream']}, "
            f"{r['in_flight']} in flight{extra}")
