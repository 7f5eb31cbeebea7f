"""`plainsail recover`: put the last known-good version back after an interrupted attempt."""

from __future__ import annotations

import argparse

from plainsail.commands._results import finish, json_on_failure
from plainsail.config import model as configlib
from plainsail.deploy.recover import recover
from plainsail.output import reporter


def run(args: argparse.Namespace) -> int:
    with json_on_failure("recover", args.json):
        cfg = configlib.load(args.config, swarm_ok=True)
        if cfg.target == "swarm":
            from plainsail.swarm.morning import recover as swarm_recover

            summary = swarm_recover(cfg, force=args.force, report=reporter())
            return finish(summary, args.json)
        summary = recover(cfg, hosts=args.host, force=args.force,
                          report=reporter())
    return finish(summary, args.json)
