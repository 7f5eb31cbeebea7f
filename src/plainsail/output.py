"""How results reach the user: plain lines, JSON, and GitHub Actions integration."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def say(message: str = "") -> None:
    print(message, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
    if in_github_actions():
        print(f"::warning::{_escape(message)}", flush=True)


def gha_error(message: str) -> None:
    if in_github_actions():
        print(f"::error::{_escape(message)}", flush=True)


def gha_group(title: str) -> None:
    if in_github_actions():
        print(f"::group::{_escape(title)}", flush=True)


def gha_endgroup() -> None:
    if in_github_actions():
        print("::endgroup::", flush=True)


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def print_json(data: Any) -> None:
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
            f.write(markdown.rstrip() + "\n")
