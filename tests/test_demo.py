"""The README's first command runs `plainsail demo`: it must tell the whole story end to end
and leave nothing behind."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.cli import plainsail

pytestmark = pytest.mark.integration


def test_demo_end_to_end_and_cleans_up() -> None:
    r = plainsail("demo", timeout=900)
    assert r.code == 0, r.text
    out = r.out
    for chapter in ("Version 1", "migration fails", "health check fails", "good version 2",
                    "Roll back to v1", "plainsail history", "Clean-up"):
        assert chapter in out, chapter
    assert "FAILED: migrations failed; the old version keeps serving" in out
    assert "FAILED, RESTORED the previous version" in out
    assert out.count("SUCCEEDED") == 3  # v1, v2, rollback
    assert re.search(r'"version": "1"\}\n\n=== 3', out)  # v1 still serving after the bad migration
    service = re.search(r"notes-demo-[0-9a-f]{6}", out)
    assert service
    left = subprocess.run(["docker", "ps", "-aq", "--filter",
                           f"label=dev.plainsail.service={service.group(0)}"],
                          capture_output=True, text=True).stdout.split()
    assert left == []
