"""`plainsail rollback`, `history`, `status`, `logs` against the real SSH test host."""

from __future__ import annotations

import json

from tests.support.deploy_env import DeployDir


def deploy(d: DeployDir, name: str, *extra: str):  # type: ignore[no-untyped-def]
    return d.run("deploy", d.builds.ref(name), *extra)


def test_rollback_after_good_deploy_fast_path(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    v1, v2 = d.builds.versions["v1"].tag, d.builds.versions["v2"].tag
    assert deploy(d, "v1").code == 0
    assert deploy(d, "v2").code == 0
    applied = d.db.query("SELECT count(*) FROM plainsail_migrations")
    r = d.run("rollback")
    assert r.code == 0, r.text
    assert f"rollback: {v2} -> {v1}" in r.out
    assert '"version": "1"' in d.get()[1]
    rec = d.host_records()[-1]
    assert rec["kind"] == "rollback" and rec["rollback_from"] == v2 and rec["rollback_to"] == v1
    assert rec["reused_container"] is True and "pull" not in {s["name"] for s in rec["steps"]}
    assert "migration" not in rec and rec["skip_migrations"] is True
    assert d.db.query("SELECT count(*) FROM plainsail_migrations") == applied
    h = d.run("history")
    assert f"{v2} -> {v1} (rollback)" in h.out


def test_rollback_after_failed_deploy(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(attempts="6")
    v1, v2 = d.builds.versions["v1"].tag, d.builds.versions["v2"].tag
    assert deploy(d, "v1").code == 0
    assert deploy(d, "v2").code == 0
    assert deploy(d, "crash").code == 1  # restored to v2
    r = d.run("rollback", "--json")
    assert r.code == 0, r.text
    summary = json.loads(r.out)
    assert summary["rollback_from"] == v2 and summary["rollback_to"] == v1
    assert '"version": "1"' in d.get()[1]


def test_rollback_to_unknown_or_never_good_tag_refused(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(attempts="16")  # v1 starts within 4 s even under load
    assert deploy(d, "v1").code == 0
    crash = d.builds.versions["crash"].tag
    assert deploy(d, "crash").code == 1
    for tag in ("0badc0de", crash):
        r = d.run("rollback", "--to", tag)
        assert r.code != 0 and "never deployed successfully" in r.err, r.text
    nothing = d.run("rollback")
    assert nothing.code == 1 and "nothing to roll back to" in nothing.err


def test_rollback_pull_path_when_container_pruned(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(retain="0")
    v1 = d.builds.versions["v1"].tag
    assert deploy(d, "v1").code == 0
    assert deploy(d, "v2").code == 0
    assert len(d.containers()) == 1  # v1 pruned, its image too
    r = d.run("rollback", "--to", v1)
    assert r.code == 0, r.text
    rec = d.host_records()[-1]
    assert rec["reused_container"] is False and "pull" in {s["name"] for s in rec["steps"]}
    assert '"version": "1"' in d.get()[1]


def test_history_and_status_on_a_host_with_no_records(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    h = d.run("history")
    assert h.code == 0 and "no deploys of" in h.out
    s = d.run("status")
    assert s.code == 0 and "nothing of" in s.out
    j = d.run("status", "--json")
    assert json.loads(j.out)["hosts"][0]["running"] is None


def test_status_history_logs_after_deploys(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    v1, v2 = d.builds.versions["v1"].tag, d.builds.versions["v2"].tag
    assert deploy(d, "v1").code == 0
    assert deploy(d, "v2").code == 0
    s = d.run("status", "--json")
    host = json.loads(s.out)["hosts"][0]
    assert host["running"]["tag"] == v2 and host["health"] == "healthy"
    assert [r["tag"] for r in host["retained"]] == [v1] and host["lock"] is None
    h = json.loads(d.run("history", "--json").out)
    assert [a["tag"] for a in h] == [v2, v1] and all(a["outcome"] == "succeeded" for a in h)
    logs = d.run("logs", "--tail", "5")
    assert logs.code == 0 and f"{d.service}-{v2}" in logs.out
