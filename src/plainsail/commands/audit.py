"""`plainsail audit [PATH] [--format text|json|sarif|github]`."""

from __future__ import annotations

import argparse

from plainsail.audit import audit
from plainsail.audit.formats import RENDER
from plainsail.output import say


def run(args: argparse.Namespace) -> int:
    report = audit(args.path)
    say(RENDER[args.format](report))
    return report.exit_code
