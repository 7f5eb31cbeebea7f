"""How the CLI ends a deploy, rollback or recovery: the record shown (text or JSON), the
CI summary, the exit code; and exactly one JSON document when an attempt stops early."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from plainsail.deploy.outcomes import (
    ABORTED,
    INTERRUPTED,
    RECOVERED,
    SUCCEEDED,
    UNCHANGED,
    exit_code,
)
from plainsail.deploy.report import render_summary, summary_markdown
from plainsail.errors import PlainsailError
from plainsail.output import append_step_summary, gha_error, print_json, say
from plainsail.secret import scrub


@contextmanager
def json_on_failure(kind: str, as_json: bool) -> Iterator[None]:
    """With --json, an attempt that stops with an error still prints exactly one JSON
    object with a top-level outcome: the attempt's record when there is one."""
    try:
        yield
    except PlainsailError as exc:
        if as_json:
            print_json(exc.record or {"kind": kind, "outcome": ABORTED,
                                      "reason": scrub(str(exc).splitlines()[0]),
                                      "preflight": True})
        raise
    except KeyboardInterrupt:
        if as_json:
            print_json({"kind": kind, "outcome": INTERRUPTED, "reason": "interrupted",
                        "preflight": True})
        raise
    except Exception as exc:
        if as_json:
            print_json({"kind": kind, "outcome": ABORTED, "preflight": True,
                        "reason": f"plainsail hit an unexpected {type(exc).__name__} before "
                        "any host changed; this is a bug"})
        raise


def finish(summary: dict[str, Any], as_json: bool) -> int:
    """Show a deploy or rollback record (text or JSON), add the CI summary, return the
    exit code its outcome means."""
    if as_json:
        print_json(summary)
    else:
        say(render_summary(summary))
    if summary.get("outcome") not in (SUCCEEDED, RECOVERED, UNCHANGED, "dry-run"):
        gha_error(f"{summary.get('kind', 'deploy')} of {summary.get('tag')} "
                  f"{summary.get('outcome')}: {summary.get('reason', '')}")
    append_step_summary(summary_markdown(summary))
    return exit_code(summary)
