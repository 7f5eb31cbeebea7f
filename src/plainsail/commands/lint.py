"""`plainsail lint migrations [PATH...] [--since REF] [--format text|json|sarif]`."""

from __future__ import annotations

import argparse
import os

from plainsail.errors import UsageError
from plainsail.output import say

LOGS = False  # nothing the lint runs logs: the CLI need not set up (or import) logging


def run(args: argparse.Namespace) -> int:
    from importlib.machinery import PathFinder

    if PathFinder.find_spec("pglast") is None:
        raise UsageError("plainsail lint needs pglast: pip install 'plainsail[lint]'")
    from plainsail.lint import report
    from plainsail.lint.batch import lint_sources
    from plainsail.lint.sources import added_since, collect, read_stdin
    from plainsail.migrations import layouts

    layout = layouts.choose(getattr(args, "layout", None), _configured_layout(args))
    stdin = "-" in args.paths
    paths = [p for p in args.paths if p != "-"]
    if not paths and not stdin:
        paths = [os.environ.get("PLAINSAIL_MIGRATIONS") or "migrations"]
    if args.since and stdin:
        raise UsageError("--since picks files from git; it cannot be combined with -")
    sources = collect(paths, layout)
    if args.since:
        # Earlier files are read too (not reported): they tell what a column's default
        # or type is, so the new files are judged on the schema they change.
        added = {p.resolve() for p in added_since(args.since, paths, layout=layout)}
        for s in sources:
            s.report = s.path is not None and s.path.resolve() in added
    if stdin:
        sources.insert(0, read_stdin())
    findings = lint_sources(sources)
    checked = sum(s.report for s in sources)
    if args.format == "json":
        say(report.as_json(findings, checked))
    elif args.format == "sarif":
        say(report.sarif(findings))
    else:
        say(report.text(findings, checked))
    return 1 if report.counts(findings)["errors"] else 0


def _configured_layout(args: argparse.Namespace) -> str | None:
    """`migrate.layout` from plainsail.yml when there is one (lint also runs without).
    A file that never says `layout` cannot set it, so it is not loaded (loading and
    checking the whole configuration costs more than linting a history)."""
    from pathlib import Path

    from plainsail.config.model import MAX_FILE_BYTES

    path = Path(args.config or "plainsail.yml")
    try:
        with path.open("rb") as f:  # a larger file is refused by load below, unread
            head = f.read(MAX_FILE_BYTES + 1)
        if len(head) <= MAX_FILE_BYTES and b"layout" not in head:
            return None
    except OSError:
        return None  # no configuration file: lint runs without one
    from plainsail.config import model as configlib

    cfg = configlib.load(path, swarm_ok=True)
    return cfg.migrate.layout if cfg.migrate else None
