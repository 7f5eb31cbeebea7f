"""What the build needs to know from git: the commit, whether the tree is clean, its origin."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from plainsail.errors import GitError

# Paths plainsail itself writes next to plainsail.yml; they never make a tree dirty.
OWN_PATHS = (".plainsail/",)


@dataclass(frozen=True)
class Commit:
    root: Path
    sha: str
    dirty_paths: tuple[str, ...]
    describe: str | None
    origin: str | None

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_paths)


def git(args: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise GitError("git is not installed; install it (apt-get install git)") from None
    if check and proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise GitError(f"git {' '.join(args)} failed: {detail[0]}")
    return proc


def toplevel(path: Path) -> Path:
    proc = git(["rev-parse", "--show-toplevel"], path, check=False)
    if proc.returncode != 0:
        raise GitError(
            f"{path} is not inside a git repository; plainsail tags images with the commit "
            "they were built from, so run it in a git work tree (git init && git commit)"
        )
    return Path(proc.stdout.strip())


def head(path: Path) -> Commit:
    root = toplevel(path)
    proc = git(["rev-parse", "--verify", "-q", "HEAD^{commit}"], root, check=False)
    if proc.returncode != 0:
        raise GitError(f"the repository at {root} has no commits yet; commit your code first")
    sha = proc.stdout.strip()
    status = git(["status", "--porcelain", "--untracked-files=normal"], root).stdout
    dirty = tuple(
        line[3:]
        for line in status.splitlines()
        if line.strip() and not any(f"/{p}" in f"/{line[3:]}" for p in OWN_PATHS)
    )
    desc = git(["describe", "--tags", "--always"], root, check=False)
    describe = desc.stdout.strip() if desc.returncode == 0 else None
    if describe == sha[: len(describe or "")]:
        describe = None  # no tag: --always fell back to an abbreviated SHA
    remote = git(["remote", "get-url", "origin"], root, check=False)
    origin = strip_credentials(remote.stdout.strip()) if remote.returncode == 0 else None
    return Commit(root, sha, dirty, describe, origin or None)


_SCP_RE = re.compile(r"(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)")


def strip_credentials(url: str) -> str:
    """A remote URL without user names, passwords or tokens, as a browsable https URL where
    the form allows (git@host:org/repo.git -> https://host/org/repo)."""
    if not url:
        return url
    if "://" in url:
        parts = urlsplit(url)
        hostname = parts.hostname or ""
        if parts.scheme in ("ssh", "git+ssh", "git"):
            scheme, netloc = "https", hostname  # the ssh port means nothing for https
        else:
            scheme = parts.scheme
            netloc = f"{hostname}:{parts.port}" if parts.port else hostname
        path = parts.path.removesuffix(".git") if scheme in ("http", "https") else parts.path
        return urlunsplit((scheme, netloc, path, "", ""))
    m = _SCP_RE.fullmatch(url)
    if m and not url.startswith("/"):
        return f"https://{m.group('host')}/{m.group('path').removesuffix('.git')}"
    return url  # a local path


def user(path: Path) -> str:
    """Who is deploying: the git user name, else the OS user."""
    import getpass

    proc = git(["config", "user.name"], path, check=False)
    name = proc.stdout.strip() if proc.returncode == 0 else ""
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def added_since(ref: str, root: Path, paths: list[str]) -> list[str]:
    proc = git(["diff", "--name-only", "--diff-filter=A", ref, "--", *paths], root)
    return [line for line in proc.stdout.splitlines() if line]
