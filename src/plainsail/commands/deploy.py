"""`plainsail deploy [TAG[@DIGEST]]`: deploy a built, signed image to the hosts."""

from __future__ import annotations

import argparse
import sys

from plainsail import config as configlib
from plainsail.deploy import Request, deploy, exit_code
from plainsail.output import append_step_summary, print_json, say
from plainsail.report import render_summary, summary_markdown


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config)
    req = Request(ref=args.ref, hosts=args.host, skip_migrations=args.skip_migrations,
                  dry_run=args.dry_run, force=args.force)
    report = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else say
    summary = deploy(cfg, req, report)
    if args.json:
        print_json(summary)
    else:
        say(render_summary(summary))
    append_step_summary(summary_markdown(summary))
    return exit_code(summary)
