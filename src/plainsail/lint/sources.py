"""Which SQL files to lint: folders, single files, `-` for standard input, and `--since`."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from plainsail.errors import GitError, UsageError


@dataclass(frozen=True)
class Source:
    name: str  # as shown in reports
    text: str


def expand(paths: list[str]) -> list[Path]:
    """Folders become their `*.sql` files (lexical order); files are taken as given."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out += sorted((f for f in path.glob("*.sql") if f.is_file()), key=lambda f: f.name)
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"{p} does not exist; pass a folder of .sql files or a .sql file")
    return out


def _git(args: list[str], cwd: Path) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=False)
    except FileNotFoundError as exc:
        raise GitError("--since needs git, which is not installed") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["git failed"])[-1]
        raise GitError(f"git {' '.join(args[:2])} failed: {detail}")
    return proc.stdout


def added_since(ref: str, paths: list[str], cwd: Path | None = None) -> list[Path]:
    """`.sql` files under `paths` added since `ref` (committed, staged or untracked): what
    the next deploy applies. Uses `git diff --name-only --diff-filter=A REF -- PATHS`."""
    cwd = cwd or Path.cwd()
    try:
        _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd)
    except GitError as exc:
        raise GitError(
            f"--since {ref}: git cannot find that commit; fetch it first (in CI, check out "
            "with full history, e.g. actions/checkout fetch-depth: 0)") from exc
    top = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
    specs = [str(Path(p).resolve()) for p in paths]
    added = _git(["diff", "--name-only", "-z", "--diff-filter=A", ref, "--", *specs], cwd)
    untracked = _git(["ls-files", "-z", "--others", "--exclude-standard", "--", *specs], cwd)
    names = {top / n for n in added.split("\0") if n}
    names |= {cwd / n for n in untracked.split("\0") if n}
    wanted = {p.resolve() for p in expand(paths)}
    return sorted((n for n in names if n.resolve() in wanted), key=lambda p: p.name)


def read_sources(files: list[Path], stdin: bool = False) -> list[Source]:
    out: list[Source] = []
    if stdin:
        out.append(Source("<stdin>", sys.stdin.read()))
    for f in files:
        try:
            out.append(Source(str(f), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {f}: {exc}") from exc
    return out
