"""Small helpers shared by the migration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plainsail.migrations.dburl import parse_database_url
from plainsail.migrations.runner import Options, Result, migrate


def write(folder: Path, name: str, sql: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(sql, encoding="utf-8")
    return path


def run(folder: Path, url: str, **kw: Any) -> Result:
    opts = Options(folder=folder, database=parse_database_url(url), **kw)
    messages: list[str] = []
    return migrate(opts, say=messages.append, warn=messages.append)
