"""`plainsail drill --yes`: roll back to the previous known-good version, then deploy the
current one again; report how long each took and whether the previous version still works
with the current schema."""

from __future__ import annotations

import argparse

from plainsail.config import model as configlib
from plainsail.deploy.drill import drill, render
from plainsail.deploy.report import json_on_failure, progress_printer
from plainsail.output import append_step_summary, print_json, say


def run(args: argparse.Namespace) -> int:
    with json_on_failure("drill", args.json):
        cfg = configlib.load(args.config)
        result = drill(cfg, hosts=args.host, yes=args.yes, report=progress_printer(args.json))
    text = render(result)
    if args.json:
        print_json(result)
    else:
        say(text)
    append_step_summary(f"### plainsail drill\n\n```\n{text}\n```\n")
    return 0 if result["outcome"] == "succeeded" else 1
