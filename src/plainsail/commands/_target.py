"""The TAG|DIGEST argument shared by sign, verify and inspect."""

from __future__ import annotations

from plainsail.config.model import Config
from plainsail.errors import UsageError
from plainsail.supply import buildrecords
from plainsail.supply.images import split_ref


def target(cfg: Config, ref: str | None) -> tuple[str | None, str | None]:
    """(tag, digest) from `TAG`, `TAG@DIGEST` or `DIGEST`; default: the newest build's tag."""
    if not ref:
        return buildrecords.latest_or_fail(cfg).tag, None
    try:
        return split_ref(ref)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
