"""The deployer's local history (`.plainsail/history.jsonl` next to plainsail.yml).

Every attempt is appended here, including those that failed in preflight and so never
reached a host; hosts keep their own history of what was done to them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from plainsail.config import Config
from plainsail.hoststate import parse_history


def local_path(cfg: Config) -> Path:
    return cfg.root / ".plainsail" / "history.jsonl"


def append_local(cfg: Config, record: dict[str, Any]) -> None:
    path = local_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_local(cfg: Config) -> list[dict[str, Any]]:
    path = local_path(cfg)
    if not path.exists():
        return []
    return parse_history(path.read_text(encoding="utf-8"))
