"""Which SQL files to lint: folders (read with the same layout detection as the runner),
single files, `-` for standard input, and `--since`."""

from __future__ import annotations

import sys
from pathlib import Path

from plainsail.errors import GitError, UsageError
from plainsail.migrations import layouts
from plainsail.record import Record


class Source(Record):
    """`name` as shown in reports; `text` (for a dbmate file: the up section, at its own
    line numbers); `first_line`, where the no-transaction marker counts; `marked`, the
    layout's own no-transaction marker; `report` False: only what the file establishes
    matters (an earlier file)."""

    _fields = ("name", "text", "first_line", "marked", "report", "path")

    def __init__(self, name: str, text: str, first_line: int = 1, marked: bool = False,
                 report: bool = True, path: Path | None = None) -> None:
        self.name, self.text, self.first_line, self.marked = name, text, first_line, marked
        self.report, self.path = report, path


def _down(path: Path) -> bool:
    return path.name == "down.sql" or path.name.endswith(".down.sql")


def collect(paths: list[str], layout: str | None = None) -> list[Source]:
    """Folders become their migrations, in run order, as the runner reads them (down
    files and dbmate down sections are never linted); files are taken as given."""
    out: list[Source] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for f in layouts.discover(path, layout):
                out.append(Source(str(f.path), f.text, f.first_line, f.marked, path=f.path))
        elif path.is_file():
            if _down(path):
                continue
            f = layouts.read_one(path)
            out.append(Source(str(path), f.text, f.first_line, f.marked, path=path))
        else:
            raise UsageError(f"{p} does not exist; pass a folder of .sql files or a .sql file")
    return out


def expand(paths: list[str], layout: str | None = None) -> list[Path]:
    """The files `collect` reads, in order."""
    return [s.path for s in collect(paths, layout) if s.path is not None]


def _git(args: list[str], cwd: Path) -> str:
    import subprocess

    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=False)
    except FileNotFoundError as exc:
        raise GitError("--since needs git, which is not installed") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["git failed"])[-1]
        raise GitError(f"git {' '.join(args[:2])} failed: {detail}")
    return proc.stdout


def added_since(ref: str, paths: list[str], cwd: Path | None = None,
                layout: str | None = None) -> list[Path]:
    """Migration files under `paths` added since `ref` (committed, staged or untracked):
    what the next deploy applies. Uses `git diff --name-only --diff-filter=A REF -- PATHS`."""
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
    names = {(top / n).resolve() for n in added.split("\0") if n}
    names |= {(cwd / n).resolve() for n in untracked.split("\0") if n}
    return [p for p in expand(paths, layout) if p.resolve() in names]


def read_stdin() -> Source:
    return Source("<stdin>", sys.stdin.read())
