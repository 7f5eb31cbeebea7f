"""`plainsail drill --yes`: roll back to the previous known-good version, then deploy the
current one again; report how long each took and whether the previous version still works
with the current schema."""

from __future__ import annotations

import argparse
from typing import Any

from plainsail.commands._results import json_on_failure
from plainsail.config import model as configlib
from plainsail.deploy.drill import drill, render
from plainsail.output import append_step_summary, print_json, reporter, say


def run(args: argparse.Namespace) -> int:
    if args.backup:
        from plainsail.backup import ops

        with json_on_failure("backup-drill", args.json):
            result = ops.drill(configlib.load(args.config), args.host)
        text = (f"backup drill {result['id']}: {str(result['outcome']).upper()}\n"
                f"  {result['reason']}\n"
                f"  backup {result['backup']['id']} of {result['backup']['created']} on "
                f"{result['host']}: restored, counted and dropped in "
                f"{result['seconds']:.1f}s")
        return _report(args.json, result, text, "plainsail drill --backup")
    with json_on_failure("drill", args.json):
        cfg = configlib.load(args.config, swarm_ok=True)
        result = drill(cfg, hosts=args.host, yes=args.yes, report=reporter())
    return _report(args.json, result, render(result), "plainsail drill")


def _report(as_json: bool, result: dict[str, Any], text: str, title: str) -> int:
    if as_json:
        print_json(result)
    else:
        say(text)
    append_step_summary(f"### {title}\n\n```\n{text}\n```\n")
    return 0 if result["outcome"] == "succeeded" else 1
