"""Where SIGTERM and Ctrl-C go while a command changes something: to a handler of the
command's own, so an interruption ends in a recorded outcome instead of a traceback."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

Handler = Callable[[int, FrameType | None], None]


@contextmanager
def handled_by(handler: Handler) -> Iterator[None]:
    """SIGTERM and SIGINT go to `handler` meanwhile (in the main thread; elsewhere Python
    cannot change them, and nothing changes)."""
    try:
        before = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        for s, old in before.items():
            signal.signal(s, old)
