"""`plainsail rollback [--to TAG]`: deploy the previous known-good image again."""

from __future__ import annotations

import argparse
import sys

from plainsail import config as configlib
from plainsail.deploy import exit_code
from plainsail.output import append_step_summary, print_json, say
from plainsail.report import render_summary, summary_markdown
from plainsail.rollback import rollback


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config)
    report = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else say
    summary = rollback(cfg, to=args.to, hosts=args.host, dry_run=args.dry_run, report=report)
    if args.json:
        print_json(summary)
    else:
        say(render_summary(summary))
    append_step_summary(summary_markdown(summary))
    return exit_code(summary)
