"""Deploy records: who, when, from where, and the redaction of their free-text fields.

A record is data (service, tag, digest, container names, paths) plus free text written by
people and programs (reasons, log tails, health answers, migration output). Only the free
text is redacted: a secret that happens to equal the service name must not turn the
record's `service` into `***`.
"""

from __future__ import annotations

import os
import secrets as pysecrets
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from plainsail.config.model import Config
from plainsail.errors import PlainsailError
from plainsail.secret import Secret, scrub
from plainsail.supply import git as gitlib

# Record keys whose values are free text (redacted), at any depth.
FREE_TEXT = frozenset({"reason", "detail", "log_tail", "output_tail", "body", "error"})


def new_deploy_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + pysecrets.token_hex(3)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def who(cfg: Config) -> str:
    actor = os.environ.get("GITHUB_ACTOR") or os.environ.get("GITLAB_USER_LOGIN")
    if actor:
        return actor
    try:
        return gitlib.user(cfg.root)
    except PlainsailError:
        return os.environ.get("USER", "unknown")


def origin() -> str:
    env = os.environ
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    if env.get("CI_JOB_URL"):
        return env["CI_JOB_URL"]
    return socket.gethostname()


def redact_free_text(record: dict[str, Any], secrets: Iterable[Secret] = ()) -> dict[str, Any]:
    """A copy of a record with every free-text field redacted; data fields untouched."""
    extra = list(secrets)

    def walk(v: Any, free: bool) -> Any:
        if isinstance(v, dict):
            return {k: walk(x, free or k in FREE_TEXT) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, free) for x in v]
        if free and isinstance(v, str):
            return scrub(v, extra)
        return v

    out: dict[str, Any] = walk(record, False)
    return out
