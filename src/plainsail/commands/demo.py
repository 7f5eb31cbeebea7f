"""`plainsail demo`: the whole pipeline on the bundled example app, narrated."""

from __future__ import annotations

import argparse

from plainsail.demo import Demo
from plainsail.output import say


def run(args: argparse.Namespace) -> int:
    return Demo(keep=args.keep, workdir=args.workdir, out=say).run()
