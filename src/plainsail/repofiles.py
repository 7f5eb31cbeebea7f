"""Writing into a repository without following links out of it.

`plainsail init` and `plainsail keygen` write and append files in the user's work tree
(plainsail.yml, the workflow, .gitignore, .dockerignore, the keys). A path there may be a
symbolic link, planted or forgotten: one to a file or folder inside the repository is
followed; one that points outside it, or at nothing, is refused before anything is written,
and files are opened without following a link at their last step (O_NOFOLLOW), so a link
made after the check fails instead of being written through.
"""

from __future__ import annotations

import os
from pathlib import Path

from plainsail.errors import UsageError


class LinkOutside(UsageError):
    """A path on the way to a file plainsail would write links out of the repository."""


def inside(root: Path, rel: Path | str, command: str) -> Path:
    """The real path `root/rel` names; LinkOutside when a link on the way points outside
    `root` (a resolved path) or at nothing. `command` names the command in the message."""
    path = root
    for part in Path(rel).parts:
        path = path / part
        if not path.is_symlink():
            continue
        target = os.readlink(path)
        real = path.resolve()
        dangling = not real.exists()
        if dangling or not real.is_relative_to(root):
            where = "at nothing" if dangling else "outside the repository"
            raise LinkOutside(f"{path.relative_to(root)} is a symbolic link to {target!r}, "
                              f"which points {where}; plainsail {command} writes only inside "
                              "the repository: remove the link (or make it a file) and run "
                              f"{command} again. Nothing was written")
        path = real
    return path


def write(path: Path, text: str, *, append: bool = False) -> None:
    """Write (or append) text without following a link at `path` itself."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
