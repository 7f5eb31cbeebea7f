"""The secret scan: deploy, fail, roll back and recover with secret values that also occur
in names (the DB password is the service's own name; other secrets are `postgres` and
`app`). Every deploy must still work (redaction never rewrites data), and no secret may
appear in any line printed, any notification, the step summary, `logs` output, a crash
log, or the free-text fields of a record."""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

from tests.support.deploy_env import DeployDir, Webhook
from tests.support.notes_app import psql

FREE_TEXT = {"reason", "detail", "log_tail", "output_tail", "body", "error"}


def free_text(value: Any, free: bool = False) -> list[str]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in free_text(v, free or k in FREE_TEXT)]
    if isinstance(value, list):
        return [t for v in value for t in free_text(v, free)]
    return [value] if free and isinstance(value, str) else []


def test_no_secret_leaks_and_every_deploy_still_works(deploy_dir: DeployDir,
                                                      webhook: Webhook) -> None:
    d = deploy_dir
    # The database password is the service's name: it occurs in container names, paths
    # and records, which must stay intact.
    psql(d.db.name, "-c", f"ALTER ROLE {d.db.role} PASSWORD '{d.service}'")
    url = d.db.url_with(password=d.service)
    env = {"DATABASE_URL": url, "SHORT_PG": "postgres", "SHORT_APP": "app"}
    d.env.update(env)
    d.config(attempts="40", interval="250ms", notify=f"notify:\n  - webhook: {webhook.url}\n")
    cfg = d.path / "plainsail.yml"
    cfg.write_text(cfg.read_text().replace(
        "secrets: [DATABASE_URL]", "secrets: [DATABASE_URL, SHORT_PG, SHORT_APP]"))
    summary = d.path / "summary.md"
    crash_dir = d.path / "tmp"  # crash logs of these runs only, not of other test runs
    crash_dir.mkdir()
    gha = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
           "TMPDIR": str(crash_dir)}

    printed: list[str] = []
    json_docs: list[dict[str, Any]] = []

    def run(*args: str, code: int = 0, as_json: bool = False) -> str:
        r = d.run(*args, *(["--json"] if as_json else []), env=gha)
        assert r.code == code, (args, r.text)  # type: ignore[attr-defined]
        if as_json:
            json_docs.append(json.loads(r.out))  # type: ignore[attr-defined]
            printed.append(r.err)  # type: ignore[attr-defined]
        else:
            printed.append(r.text)  # type: ignore[attr-defined]
        return str(r.text)  # type: ignore[attr-defined]

    run("deploy", d.builds.ref("v1"))
    run("deploy", d.builds.ref("crash"), code=1)  # fails its gate: v1 restored
    run("deploy", d.builds.ref("v2"), as_json=True)
    run("rollback", as_json=True)  # back to v1
    d.kill_mid_switch("slow")
    run("status")
    run("lock", "status")
    run("recover")
    run("history")
    run("logs", "--tail", "200")
    run("deploy", d.builds.ref("v2"))

    records = d.host_records()
    assert [r["outcome"] for r in records] == [
        "succeeded", "failed-health-restored", "succeeded", "succeeded", "interrupted",
        "recovered", "succeeded"]
    assert {r["service"] for r in records} == {d.service}
    assert all(str(r.get("container") or d.service).startswith(d.service) for r in records)
    assert '"version": "2"' in d.get()[1]
    local = [json.loads(line) for line in
             (d.path / ".plainsail" / "history.jsonl").read_text().splitlines()]
    assert {r["service"] for r in local} == {d.service}
    assert json_docs[0]["outcome"] == "succeeded" and json_docs[0]["service"] == d.service

    crash_logs = glob.glob(os.path.join(crash_dir, "plainsail-crash-*"))
    human = printed + webhook.bodies + [summary.read_text()]
    human += [open(p).read() for p in crash_logs]
    texts = free_text(records) + free_text(local) + free_text(json_docs)
    # The redaction rule (docs/configuration.md): long values never appear; a value that is
    # also a public name (the password equal to the service's name) stays readable as that
    # name, never in its secret's place; short values are redacted as whole words.
    for secret in [url, webhook.url, f":{d.service}@"]:
        leaks = [t for t in human + texts if secret in t]
        assert not leaks, (secret, leaks[:1])
    for short in ["postgres", "app"]:
        word = re.compile(rf"(?<![A-Za-z0-9]){short}(?![A-Za-z0-9])")
        leaks = [t for t in human + texts if word.search(t)]
        assert not leaks, (short, leaks[:1])
    status = printed[4]
    assert d.service in status and "***" not in status, status  # the name stays readable
    # weak: the password is the service's name, and "app" is shorter than 8 characters
    # ("postgres" is 8, long enough, and no public name holds it)
    weak = {line.split(" is a weak secret")[0].rsplit(" ", 1)[-1]
            for t in printed for line in t.splitlines() if " is a weak secret" in line}
    assert weak == {"DATABASE_URL", "SHORT_APP"}, weak
    assert len(webhook.bodies) >= 6
