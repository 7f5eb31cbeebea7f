"""How results reach the user: plain lines, JSON, and GitHub Actions integration.

This is the output boundary: every human line leaves through `say`, `warn` and the
`gha_*` functions, which redact every known secret (`plainsail.secret.scrub`). In JSON
mode (`--json`) stdout carries only the JSON document; human lines and GitHub Actions
workflow commands go to stderr, which the Actions runner reads as well.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from plainsail.secret import scrub

_json_mode = False


def set_json_mode(on: bool) -> None:
    """Reserve stdout for one JSON document (the command's result)."""
    global _json_mode
    _json_mode = on


def human() -> TextIO:
    """Where human lines go: stdout, or stderr when stdout carries JSON."""
    return sys.stderr if _json_mode else sys.stdout


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def say(message: str = "") -> None:
    print(scrub(message), file=human(), flush=True)


def error(message: str) -> None:
    print(f"error: {scrub(message)}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {scrub(message)}", file=sys.stderr, flush=True)
    if in_github_actions():
        print(f"::warning::{_escape(scrub(message))}", file=human(), flush=True)


def gha_error(message: str) -> None:
    if in_github_actions():
        print(f"::error::{_escape(scrub(message))}", file=human(), flush=True)


def gha_group(title: str) -> None:
    if in_github_actions():
        print(f"::group::{_escape(scrub(title))}", file=human(), flush=True)


def gha_endgroup() -> None:
    if in_github_actions():
        print("::endgroup::", file=human(), flush=True)


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def print_json(data: Any) -> None:
    """The command's result document. Records redact their own free-text fields; the
    structured fields are data and are printed as they are."""
    print(json.dumps(data, indent=2, sort_keys=False, default=str), flush=True)


def append_github_file(var: str, values: Mapping[str, str]) -> bool:
    """Append `key=value` lines to the file named by $var (GITHUB_OUTPUT, GITHUB_ENV)."""
    path = os.environ.get(var)
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as f:
        for key, value in values.items():
            if "\n" in value:
                raise ValueError(f"{key} contains a newline")
            f.write(f"{key}={value}\n")
    return True


def append_step_summary(markdown: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(scrub(markdown).rstrip() + "\n")
