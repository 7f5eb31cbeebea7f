"""Build records: what `plainsail build` produced, written down as JSON.

One file per tag under `.plainsail/builds/` at the root of the git work tree that holds
plainsail.yml (beside plainsail.yml outside a git work tree; `--record-dir` or
$PLAINSAIL_BUILD_RECORDS override it), so every config of a repository (`-c
deploy/staging.yml`) finds the same records. Later stages read them: `sign`, `verify` and
`deploy` default to the newest record's tag, and deploy compares the registry's digest for
the tag with the recorded one (tag drift).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plainsail.config.model import Config
from plainsail.errors import GitError, PlainsailError
from plainsail.inputs import loads_json
from plainsail.supply import git as gitlib

RECORD_DIR = Path(".plainsail") / "builds"


@dataclass(frozen=True)
class BuildRecord:
    image: str  # repository
    tag: str
    digest: str  # sha256:... manifest digest in the registry
    git_sha: str
    created: str  # RFC 3339 UTC
    builder: str  # host name of the machine that built it
    labels: dict[str, str] = field(default_factory=dict)
    reused: bool = False  # the tag already existed; nothing was built

    @property
    def pinned(self) -> str:
        return f"{self.image}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def record_dir(cfg: Config, override: str | os.PathLike[str] | None = None) -> Path:
    """Where `build` writes records and every other command reads them."""
    if override:
        return Path(override)
    env = os.environ.get("PLAINSAIL_BUILD_RECORDS")
    return Path(env) if env else work_tree_root(cfg.root) / RECORD_DIR


def work_tree_root(folder: Path) -> Path:
    """The top of the git work tree holding `folder`, or `folder` itself outside one."""
    try:
        proc = gitlib.git(["rev-parse", "--show-toplevel"], folder, check=False)
    except (GitError, OSError):
        return folder
    top = proc.stdout.strip()
    return Path(top) if proc.returncode == 0 and top else folder


def write(record: BuildRecord, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record.tag}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _read(path: Path) -> BuildRecord:
    try:
        data = loads_json(path.read_text(encoding="utf-8"))
        return BuildRecord(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise PlainsailError(
            f"build record {path} is unreadable ({exc}); delete it and run plainsail build"
        ) from None


def find(cfg: Config, tag: str, directory: Path | None = None) -> BuildRecord | None:
    """The record of `tag` for this config's image, or None."""
    path = (directory or record_dir(cfg)) / f"{tag}.json"
    if not path.exists():
        return None
    rec = _read(path)
    return rec if rec.image == cfg.image else None


def latest(cfg: Config, directory: Path | None = None) -> BuildRecord | None:
    """The newest record (by creation time) for this config's image, or None."""
    d = directory or record_dir(cfg)
    if not d.is_dir():
        return None
    records = [_read(p) for p in d.glob("*.json")]
    records = [r for r in records if r.image == cfg.image]
    return max(records, key=lambda r: r.created, default=None)


def latest_or_fail(cfg: Config) -> BuildRecord:
    rec = latest(cfg)
    if rec is None:
        raise PlainsailError(
            f"no build record for {cfg.image} in {record_dir(cfg)}; run plainsail build "
            "first, or name the tag explicitly"
        )
    return rec
