"""The schema gate for real: a git repository whose commits were built, signed and pushed,
deployed over the real sshd with real migrations on PostgreSQL. A migration that drops a
column version 1 still reads is refused before anything changes, deploys with
--allow-breaking-migrations (recorded, named in the notification), and a rollback past it
is refused in turn."""

from __future__ import annotations

import json

from tests.support.deploy_env import DeployDir, Webhook


def test_a_dropped_column_is_refused_then_passes_with_the_flag(deploy_dir: DeployDir,
                                                               webhook: Webhook) -> None:
    d = deploy_dir
    d.config(notify=f"notify:\n  - webhook: {webhook.url}\n")
    # The deploy runs outside the repository; the folder names it (as in CI, where the
    # deploy job checks out the repository).
    env = {"PLAINSAIL_MIGRATIONS": str(d.builds.repo / "migrations")}
    v1 = d.builds.versions["v1"].tag
    drop = d.builds.ref("drop-column")
    first = d.run("deploy", d.builds.ref("v1"), env=env)
    assert first.code == 0, first.text
    assert "schema gate skipped: nothing runs yet" in first.err
    applied = d.db.query("SELECT count(*) FROM plainsail_migrations")

    r = d.run("deploy", drop, env=env)
    assert r.code == 1, r.text
    errors = [line for line in r.err.splitlines() if line.startswith("error")]
    assert len(errors) == 1, r.err
    assert "migrations/0003_drop_tags.sql:2 drop-column" in errors[0]
    assert "--allow-breaking-migrations" in errors[0] and v1 in errors[0]
    # Nothing changed: no migration ran, the column is there, version 1 keeps serving.
    assert d.db.query("SELECT count(*) FROM plainsail_migrations") == applied
    assert d.db.query("SELECT count(*) FROM information_schema.columns WHERE "
                      "table_name = 'notes' AND column_name = 'tags'") == "1"
    assert '"version": "1"' in d.get()[1]
    assert len(d.host_records()) == 1  # a preflight refusal is recorded locally only
    local = [json.loads(line) for line in
             (d.path / ".plainsail" / "history.jsonl").read_text().splitlines()]
    gate = local[-1]["schema_gate"]
    assert local[-1]["outcome"] == "aborted" and gate["verdict"] == "refused"
    assert gate["files"] == ["migrations/0003_drop_tags.sql"]
    assert gate["old"][0]["tag"] == v1 and len(gate["old"][0]["revision"]) == 40

    ok = d.run("deploy", drop, "--allow-breaking-migrations", env=env)
    assert ok.code == 0, ok.text
    assert "going ahead because of --allow-breaking-migrations" in ok.err
    rec = d.host_records()[-1]
    assert rec["outcome"] == "succeeded" and rec["allow_breaking_migrations"] is True
    assert rec["schema_gate"]["verdict"] == "allowed"
    assert rec["schema_gate"]["findings"][0]["rule"] == "drop-column"
    assert "--allow-breaking-migrations" in webhook.bodies[-1]
    assert d.db.query("SELECT count(*) FROM information_schema.columns WHERE "
                      "table_name = 'notes' AND column_name = 'tags'") == "0"

    back = d.run("rollback", env=env)
    assert back.code == 1, back.text
    assert f"was applied after {v1} and breaks it" in back.err
    assert "migrations/0003_drop_tags.sql:2 drop-column" in back.err
    assert '"version": "6-drop-column"' in d.get()[1]
    plan = d.run("rollback", "--dry-run", "--allow-breaking-migrations", env=env)
    assert plan.code == 0, plan.text
    assert "going ahead because of --allow-breaking-migrations" in plan.err
