"""The PostgreSQL client image for backups: Debian's client binaries on the local base
image (scripts/setup.sh builds it), pushed to the test registry once per session because
backup.image must be pinned by digest."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.proxy_env import pushed_pinned
from tests.support.services import Registry

PGCLIENT_IMAGE = os.environ.get("PLAINSAIL_PGCLIENT_IMAGE", "plainsail-pgclient:bookworm")


@pytest.fixture(scope="session")
def pgclient_image(registry: Registry) -> Iterator[str]:
    """REPOSITORY:TAG@DIGEST of the client image in the test registry."""
    yield from pushed_pinned(registry, PGCLIENT_IMAGE, "pgclient", "15")
