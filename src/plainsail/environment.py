"""Where plainsail runs: in CI or not, in GitHub Actions or not (read from the environment,
nothing written anywhere)."""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["in_ci", "in_github_actions"]


def in_github_actions(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("GITHUB_ACTIONS") == "true"


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this runs in CI: `CI` is set and not false, no or 0 (GitHub Actions, GitLab
    CI and most others set CI=true), or GITHUB_ACTIONS is true."""
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no") \
        or in_github_actions(env)
