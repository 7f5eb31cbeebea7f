"""Crash logs: the details of an unexpected error (a bug), kept for a bug report."""

from __future__ import annotations

import os
import sys
import tempfile
import traceback

from plainsail import __version__
from plainsail.secret import scrub


def write_crash_log(exc: BaseException) -> str:
    """Write the traceback of `exc` (every known secret redacted) to a new file; its path."""
    text = "".join(traceback.format_exception(exc))
    fd, path = tempfile.mkstemp(prefix="plainsail-crash-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(f"plainsail {__version__}\nargv: {scrub(repr(sys.argv))}\n\n{scrub(text)}")
    return path
