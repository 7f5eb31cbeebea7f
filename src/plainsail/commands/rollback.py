"""`plainsail rollback [--to TAG]`: deploy the previous known-good image again."""

from __future__ import annotations

import argparse

from plainsail.commands._results import finish, json_on_failure
from plainsail.config import model as configlib
from plainsail.deploy.rollback import rollback
from plainsail.output import reporter


def run(args: argparse.Namespace) -> int:
    with json_on_failure("rollback", args.json):
        cfg = configlib.load(args.config, swarm_ok=True)
        if cfg.target == "swarm":
            from plainsail.swarm.morning import rollback as swarm_rollback

            summary = swarm_rollback(
                cfg, to=args.to, dry_run=args.dry_run, report=reporter(),
                allow_breaking_migrations=args.allow_breaking_migrations,
                allow_shallow_clone=args.allow_shallow_clone)
            return finish(summary, args.json)
        summary = rollback(cfg, to=args.to, hosts=args.host, dry_run=args.dry_run,
                           report=reporter(),
                           allow_breaking_migrations=args.allow_breaking_migrations,
                           allow_shallow_clone=args.allow_shallow_clone)
    return finish(summary, args.json)
