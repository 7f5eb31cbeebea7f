"""The README's first command runs `plainsail demo`: it must tell the whole story end to end
and leave nothing behind."""

from __future__ import annotations

import re
import subprocess

import pytest

from plainsail.proxy.argv import container_name
from tests.support.cli import plainsail

pytestmark = pytest.mark.integration


def test_demo_end_to_end_and_cleans_up() -> None:
    r = plainsail("demo", timeout=900)
    assert r.code == 0, r.text
    out = r.out
    for chapter in ("Version 1", "migration fails", "health check fails", "good version 2",
                    "Roll back to v1", "plainsail history", "Behind the proxy", "Clean-up"):
        assert chapter in out, chapter
    assert "FAILED: migrations failed; the old version keeps serving" in out
    assert "FAILED, RESTORED the previous version" in out
    assert out.count("SUCCEEDED") == 5  # v1, v2, rollback; behind the proxy v1 and v2
    # The headline, behind the proxy: requests under load, and none failed.
    for what in ("upgrade under load", "failed deploy under load"):
        m = re.search(rf"{what}: (\d+) requests, (\d+) failed", out)
        assert m and int(m.group(1)) > 100 and m.group(2) == "0", (what, out[-3000:])
    assert re.findall(r"GET / through the proxy -> (.*)", out)[-1] == \
        "200 hello from version 2"
    assert re.search(r'"version": "1"\}\n\n=== 3', out)  # v1 still serving after the bad migration
    for pattern in (r"notes-demo-[0-9a-f]{6}", r"hello-demo-[0-9a-f]{6}"):
        service = re.search(pattern, out)
        assert service, pattern
        left = subprocess.run(["docker", "ps", "-aq", "--filter",
                               f"label=dev.plainsail.service={service.group(0)}"],
                              capture_output=True, text=True).stdout.split()
        assert left == []
    workspace = re.search(r"workspace: (\S+)", out)
    assert workspace
    proxy = container_name(f"{workspace.group(1)}/host")
    assert subprocess.run(["docker", "container", "inspect", proxy],
                          capture_output=True).returncode != 0, f"{proxy} was left running"
