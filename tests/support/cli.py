"""Run the real `plainsail` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def plainsail(
    *args: str, cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
    timeout: float = 600, input: str | None = None,
) -> CliResult:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("GITHUB_ACTIONS", None) if "GITHUB_ACTIONS" not in (env or {}) else None
    proc = subprocess.run(
        [sys.executable, "-m", "plainsail", *args], cwd=cwd, env=full_env,
        capture_output=True, text=True, timeout=timeout, input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.text, result.text
    return result
