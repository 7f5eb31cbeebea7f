"""SIGTERM and Ctrl-C during a backup command. While the guard is armed (the work on the
host), the first signal raises `Interrupted` where the command is, so it can end that work
(container, unfinished files), release its lock and record how it ended; a signal while it
is not armed (taking or releasing the lock, recording) is noted, raised when it is armed
next, and otherwise waits until the command has finished its bookkeeping. After the first,
signals are ignored: the clean-up is never cut in two. A command that must not be cut
(a `docker stop` the host would carry out after plainsail gave up on it) runs unarmed,
with `check()` between two such commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from plainsail.interrupts import handled_by


class Interrupted(BaseException):
    """SIGTERM or Ctrl-C during a backup command (exit 130, as every interruption)."""


class Guard:
    def __init__(self) -> None:
        self.armed = False
        self.pending: int | None = None
        self.fired = False

    def arm(self) -> None:
        """From here on a signal interrupts (at once, if one came meanwhile)."""
        if self.pending is not None and not self.fired:
            self.fired = True
            raise Interrupted()
        self.armed = True

    def check(self) -> None:
        """Between two steps that must each run whole: raise if a signal came."""
        if self.pending is not None and not self.fired:
            self.fired = True
            raise Interrupted()

    def disarm(self) -> None:
        self.armed = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.armed and not self.fired:
            self.armed, self.fired = False, True
            raise Interrupted()
        self.pending = signum


@contextmanager
def guarded() -> Iterator[Guard]:
    guard = Guard()
    with handled_by(guard.handler):
        yield guard


@contextmanager
def held() -> Iterator[None]:
    """Signals only noted (ignored) meanwhile: for the clean-up after an interruption,
    which goes on afterwards, so that a second Ctrl-C cannot cut it in two."""
    with handled_by(lambda signum, frame: None):
        yield
