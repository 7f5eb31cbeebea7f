"""A failed deploy says why where the person is looking, for real (sshd, Docker Engine,
PostgreSQL): the last answer's body of a failed health gate, and the last log lines of a
container that crashed, in the terminal and in the record's reason, secrets redacted."""

from __future__ import annotations

import json

from tests.support.deploy_env import DeployDir


def test_a_503_shows_its_body_and_a_crash_its_log_lines(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(attempts="16")  # 4 s: the app starts in well under that, even under load
    first = d.run("deploy", d.builds.ref("v1"))
    assert first.code == 0, first.text
    wrong = d.db.url_with(password="not-the-password-8812")
    r = d.run("deploy", d.builds.ref("v2"), "--skip-migrations",
              env={"DATABASE_URL": wrong})
    assert r.code == 1 and "FAILED, RESTORED" in r.out, r.text
    # The app's answer names the cause: the terminal shows it, and so does the record.
    assert "answered 503, expected 200; the body: {" in r.out, r.out
    assert '"database": "error: ' in r.out
    rec = d.host_records()[-1]
    assert '"database": "error: ' in rec["reason"]

    crash = d.run("deploy", d.builds.ref("crash"))
    assert crash.code == 1, crash.text
    assert "'s log:" in crash.out, crash.out
    shown = [line for line in crash.out.splitlines() if line.startswith("  | ")]
    assert any(line.endswith("refusing to start: this build is broken") for line in shown)
    rec = d.host_records()[-1]
    assert "its log ends with: " in rec["reason"] and "refusing to start" in rec["reason"]
    assert '"version": "1"' in d.get()[1]
    written = r.text + crash.text + json.dumps(d.host_records())
    for secret in ("not-the-password-8812", d.db.password):
        assert secret not in written
