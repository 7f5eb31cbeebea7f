"""`plainsail drill`: the interruption estimate (fast) and the whole drill over SSH."""

from __future__ import annotations

import json
from typing import Any

from plainsail.deploy.drill import interruption
from tests.support.deploy_env import DeployDir


def _rec(started: str, steps: list[tuple[str, float]], outcome: str = "succeeded",
         ) -> dict[str, Any]:
    return {"tag": "t" + started, "outcome": outcome, "started": started,
            "steps": [{"name": n, "seconds": s, "ok": True} for n, s in steps]}


def test_interruption_is_stop_to_gate_of_the_longest_recent_switch() -> None:
    records = [
        _rec("1", [("lock+env", 0.1), ("pull", 9.0), ("stop-old", 1.0), ("start-new", 0.5),
                   ("health:a", 2.0), ("prune", 3.0)]),
        _rec("2", [("stop-old", 4.0), ("start-retained", 0.5), ("health:b", 1.5)]),
        _rec("3", [("stop-old", 60.0), ("start-new", 1.0), ("health:c", 30.0)],
             outcome="failed-health-restored"),  # failed attempts are no measure
        _rec("4", [("lock+env", 0.1), ("start-new", 1.0), ("health:d", 1.0)]),  # first deploy
    ]
    assert interruption(records) == 6.0
    assert interruption(records[3:]) is None and interruption([]) is None


def test_drill_end_to_end(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    v1, v2 = d.builds.versions["v1"].tag, d.builds.versions["v2"].tag
    assert d.run("deploy", d.builds.ref("v1")).code == 0
    r = d.run("drill", "--yes")
    assert r.code == 1 and "nothing to roll back to" in r.err, r.text
    assert d.run("deploy", d.builds.ref("v2")).code == 0
    before = d.host_records()
    applied = d.db.query("SELECT count(*) FROM plainsail_migrations")

    # Without --yes: the interruption is said, and nothing happens.
    r = d.run("drill")
    assert r.code == 2, r.text
    assert (f"from {v2} to {v1} and back: without a proxy in front of the app the service is "
            "interrupted twice, about ") in r.err and "run it again with --yes" in r.err
    assert d.host_records() == before

    r = d.run("drill", "--yes", "--json")
    assert r.code == 0, r.text
    result = json.loads(r.out)
    assert result["outcome"] == "succeeded" and result["previous_works_with_current_schema"]
    assert result["previous"]["tag"] == v1 and result["current"]["tag"] == v2
    assert result["rollback"]["outcome"] == "succeeded"
    assert result["deploy"]["outcome"] == "succeeded" and result["deploy"]["seconds"] > 0
    assert result["interruption_estimate"] > 0
    back, again = d.host_records()[-2:]
    assert back["kind"] == "rollback" and back["tag"] == v1
    assert again["kind"] == "deploy" and again["tag"] == v2 and again["skip_migrations"]
    assert back["drill"] == again["drill"] == result["id"]
    assert "migration" not in again
    assert d.db.query("SELECT count(*) FROM plainsail_migrations") == applied
    assert '"version": "2"' in d.get()[1]  # the current version serves again

    # Text output names both times.
    r = d.run("drill", "--yes")
    assert r.code == 0, r.text
    assert f"rollback to {v1}: succeeded in " in r.out
    assert f"deploy of {v2} again: succeeded in " in r.out
    assert f"{v1} still works with the current schema" in r.out
    # The health gates of both halves report as they go (one line per attempt, no terminal).
    assert r.out.count("[gate ") >= 2 and "waiting for /health: attempt 1/" in r.out, r.out

    # An unhealthy current version: refused, nothing changes.
    running = [n.split()[0] for n in d.containers() if n.endswith(" running")]
    d.host_run("docker", "stop", *running)
    before = d.host_records()
    r = d.run("drill", "--yes")
    assert r.code == 1 and "a drill starts from a healthy current version" in r.err, r.text
    assert d.host_records() == before
