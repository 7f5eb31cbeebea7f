"""What sign, verify, inspect and build share: the TAG|DIGEST argument, and the warning
about a registry reached over plain HTTP."""

from __future__ import annotations

from plainsail.config.model import Config
from plainsail.errors import UsageError
from plainsail.output import warn
from plainsail.supply import buildrecords
from plainsail.supply.images import split_ref
from plainsail.supply.registry import insecure_warning


def warn_insecure(cfg: Config) -> None:
    """Tell what `registry.insecure: true` risks (nothing when it is not set)."""
    said = insecure_warning(cfg)
    if said:
        warn(said)


def target(cfg: Config, ref: str | None) -> tuple[str | None, str | None]:
    """(tag, digest) from `TAG`, `TAG@DIGEST` or `DIGEST`; default: the newest build's tag."""
    if not ref:
        return buildrecords.latest_or_fail(cfg).tag, None
    try:
        return split_ref(ref)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
