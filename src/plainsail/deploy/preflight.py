"""An attempt that stops in its preflight (nothing changed anywhere), on hosts or on a
Swarm: its record goes to the local history only, the connections are closed, and the
error is raised with the record attached (`.record`, what `deploy --json` prints)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from plainsail.config.model import Config
from plainsail.deploy.history import append_local
from plainsail.deploy.outcomes import ABORTED, INTERRUPTED
from plainsail.errors import DeployInterrupted, PlainsailError, one_line

__all__ = ["stopped_in_preflight"]


def stopped_in_preflight(cfg: Config, exc: BaseException,
                         summary: Callable[[str, str], dict[str, Any]],
                         close: Callable[[], None], unchanged: str) -> NoReturn:
    """`exc` stopped the preflight: a PlainsailError ends the attempt `aborted`, anything
    else (the attempt's own signal exception) `interrupted`, raised as DeployInterrupted
    ("interrupted before `unchanged`"). `summary(outcome, reason)` makes the record."""
    interrupted = not isinstance(exc, PlainsailError)
    record = summary(INTERRUPTED if interrupted else ABORTED, one_line(exc))
    append_local(cfg, record)
    close()
    if isinstance(exc, PlainsailError):
        exc.record = record
        raise exc
    err = DeployInterrupted(f"interrupted before {unchanged}")
    err.record = record
    raise err from None
