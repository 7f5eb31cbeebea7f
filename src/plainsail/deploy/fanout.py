"""Work on several hosts at once, bounded, and the retry of a transient SSH connect failure.

`each` runs one function per item on at most `limit` threads and returns, in the items'
order, what each raised (None when it returned). Signals reach only the main thread: a
deploy's signal handler records the signal while hosts are being worked on, each worker
stops at its next step boundary (`Switcher.step` asks), and the deploy unwinds once every
step in flight has returned (each is bounded by its own timeout).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from plainsail.errors import RemoteError

T = TypeVar("T")
R = TypeVar("R")

# OpenSSH's words for a connection that failed while being set up (reset, timed out, closed
# by a server that is starting too many at once) rather than refused for a reason that will
# not change (a key, a host key, a user): worth another try. A connection that drops once a
# command runs ("Connection to HOST closed by remote host") is not one of them.
TRANSIENT = re.compile(
    r"Connection reset by peer|Connection timed out|timed out during banner exchange|"
    r"Connection closed by \S+ port|kex_exchange_identification|"
    r"ssh_exchange_identification|Operation timed out",
    re.IGNORECASE)
RETRY_DELAYS = (0.5, 1.5)  # seconds before the second and the third try


def each(items: Sequence[T], fn: Callable[[T], object], limit: int,
         keep_going: bool = False) -> list[BaseException | None]:
    """Run fn(item) for every item, at most `limit` at a time; what each raised, in order.

    With one item or `limit` 1 the items run one after another in the calling thread (so
    a single host behaves exactly as before): there a signal (a BaseException such as the
    deploy's Interrupted) stops the loop and propagates at once, unless `keep_going` (a
    restore: every item still runs, and what it raised is returned)."""
    if len(items) <= 1 or limit <= 1:
        out: list[BaseException | None] = []
        for item in items:
            try:
                fn(item)
            except Exception as exc:  # noqa: BLE001 - handed to the caller, who decides
                out.append(exc)
                continue
            except BaseException as exc:
                if not keep_going:
                    raise
                out.append(exc)
                continue
            out.append(None)
        return out
    with ThreadPoolExecutor(max_workers=min(limit, len(items)),
                            thread_name_prefix="plainsail-host") as pool:
        futures = [pool.submit(_call, fn, item) for item in items]
        return [f.result() for f in futures]


def _call(fn: Callable[[T], object], item: T) -> BaseException | None:
    try:
        fn(item)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller, who decides
        return exc
    return None


def transient(exc: BaseException) -> bool:
    """An SSH connection that dropped or timed out while being set up (exit 255)."""
    return (isinstance(exc, RemoteError) and exc.returncode == 255
            and bool(TRANSIENT.search(f"{exc} {exc.output_tail}")))


def with_retry(fn: Callable[[], R], delays: Sequence[float] = RETRY_DELAYS,
               sleep: Callable[[float], None] = time.sleep,
               note: Callable[[BaseException, float], None] | None = None) -> R:
    """fn(), tried again after each delay while it fails with a transient connect error."""
    for delay in delays:
        try:
            return fn()
        except RemoteError as exc:
            if not transient(exc):
                raise
            if note is not None:
                note(exc, delay)
            sleep(delay)
    return fn()
