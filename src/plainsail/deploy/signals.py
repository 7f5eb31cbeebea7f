"""SIGTERM and Ctrl-C during a deploy on hosts: unwind (restore what was switched, record,
unlock) instead of dying, and never cut in two what must run whole.

`Signals` is an attempt's signal state. Its handler (installed by `handled`) decides what
a signal does at the moment it arrives:

- while the outcome is being recorded (`finishing`), it is noted (`late_signal`) and the
  bookkeeping, well under a second, completes;
- while hosts are worked on in threads (`fanning`), it is noted (`stop_signal`): each host
  stops at its next step boundary (`checkpoint`), and the attempt unwinds once the steps in
  flight returned (`raise_if_stopped`), unless the work is a restore (not `stoppable`),
  which runs to its end;
- during a step that must run whole (`whole`, a `docker run` creating the new container),
  it waits for the host's answer (`held_signal`), then unwinds;
- otherwise `Interrupted` is raised at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from plainsail.interrupts import handled_by

__all__ = ["Interrupted", "Signals"]


class Interrupted(BaseException):
    """SIGTERM or Ctrl-C during a deploy: unwind, restore what was switched, unlock."""


class Signals:
    """One attempt's signal state (see the module's doc)."""

    def __init__(self) -> None:
        self.finishing = False  # recording the outcome: signals wait
        self.late_signal: int | None = None
        self.holding = False  # a step that must finish whole is running: a signal waits
        self.held_signal: int | None = None
        self.fanout = False  # hosts are worked on in threads
        self.stop_signal: int | None = None
        self.stoppable = True  # False while restoring: a signal must not cut the way back

    def checkpoint(self) -> None:
        """Between two steps of a host worked on in a thread: stop if a signal came."""
        if self.stop_signal is not None and self.stoppable:
            raise Interrupted()

    @contextmanager
    def fanning(self, many: bool, stoppable: bool) -> Iterator[None]:
        """Hosts are worked on (in threads when `many`); a restore is not `stoppable`."""
        self.fanout, self.stoppable = many, stoppable
        try:
            yield
        finally:
            self.fanout, self.stoppable = False, True

    def raise_if_stopped(self) -> None:
        """After a fan-out: the signal noted meanwhile, raised now."""
        if self.stop_signal is not None:
            self.stop_signal = None
            raise Interrupted()

    @contextmanager
    def whole(self) -> Iterator[None]:
        """A step a signal must not cut in two: SIGTERM or Ctrl-C during it waits for the
        host's answer (the step's own timeout bounds it), then unwinds as usual."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            if self.held_signal is not None:
                self.held_signal = None
                raise Interrupted()

    def handler(self, signum: int, frame: object) -> None:
        if self.finishing:
            self.late_signal = signum
            return
        if self.fanout:
            self.stop_signal = signum
            return
        if self.holding:
            self.held_signal = signum
            return
        raise Interrupted()

    @contextmanager
    def handled(self) -> Iterator[None]:
        """SIGTERM and Ctrl-C go to `handler` while the attempt runs."""
        with handled_by(self.handler):
            yield
