"""`plainsail deploy [TAG[@DIGEST]]`: deploy a built, signed image to the hosts."""

from __future__ import annotations

import argparse

from plainsail.commands._results import finish, json_on_failure
from plainsail.config import model as configlib
from plainsail.deploy.plan import Request
from plainsail.deploy.run import deploy
from plainsail.output import reporter


def run(args: argparse.Namespace) -> int:
    with json_on_failure("deploy", args.json):
        cfg = configlib.load(args.config, swarm_ok=True)
        req = Request(ref=args.ref, hosts=args.host, skip_migrations=args.skip_migrations,
                      dry_run=args.dry_run, force=args.force,
                      allow_breaking_migrations=args.allow_breaking_migrations,
                      allow_shallow_clone=args.allow_shallow_clone)
        if cfg.target == "swarm":
            from plainsail.swarm.deploy import deploy as swarm_deploy

            summary = swarm_deploy(cfg, req, reporter())
        else:
            summary = deploy(cfg, req, reporter())
    return finish(summary, args.json)
