"""`plainsail lint migrations [PATH...] [--since REF] [--format text|json|sarif]`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from plainsail.errors import UsageError
from plainsail.output import say


def run(args: argparse.Namespace) -> int:
    try:
        import pglast  # noqa: F401
    except ImportError as exc:
        raise UsageError("plainsail lint needs pglast: pip install 'plainsail[lint]'") from exc
    from plainsail.lint import report
    from plainsail.lint.engine import lint_text
    from plainsail.lint.sources import added_since, expand, read_sources

    stdin = "-" in args.paths
    paths = [p for p in args.paths if p != "-"]
    if not paths and not stdin:
        paths = [os.environ.get("PLAINSAIL_MIGRATIONS") or "migrations"]
    if args.since:
        if stdin:
            raise UsageError("--since picks files from git; it cannot be combined with -")
        files = added_since(args.since, paths)
    else:
        files = expand(paths)
    sources = read_sources(files, stdin=stdin)
    known: dict[str, Any] = {}
    findings = [f for s in sources for f in lint_text(s.name, s.text, known=known)]
    if args.format == "json":
        say(report.as_json(findings, len(sources)))
    elif args.format == "sarif":
        say(report.sarif(findings))
    else:
        say(report.text(findings, len(sources)))
    return 1 if report.counts(findings)["errors"] else 0
