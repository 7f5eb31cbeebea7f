"""`plainsail deploy` for real: a real sshd on loopback logging in as an unprivileged user in
the docker group, a real registry, real signed images of the example app, real PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

from tests.support.deploy_env import DeployDir, NotesBuilds, Webhook
from tests.support.notes_app import psql


def deploy(d: DeployDir, name: str, *extra: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return d.run("deploy", d.builds.ref(name), *extra, env=env)


def schema(d: DeployDir) -> str:
    """Every table and column of the test database: what 'unchanged' is checked against."""
    return d.db.query(
        "SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ',' "
        "ORDER BY table_name, column_name) FROM information_schema.columns "
        "WHERE table_schema = 'public'"
    )


def test_first_deploy_then_second_replaces_and_prunes(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(retain="1")
    r = deploy(d, "v1")
    assert r.code == 0, r.text
    assert "SUCCEEDED" in r.out
    status, body = d.get()
    assert status == 200 and '"version": "1"' in body
    # Ran as the unprivileged user; state in its home; env file readable by it only.
    mode = d.host_run("stat", "-c", "%a %U", f"{d.ssh.home}/.plainsail/{d.service}/env").stdout
    assert mode.split() == ["600", d.ssh.user]
    recs = d.host_records()
    assert recs[-1]["outcome"] == "succeeded" and recs[-1]["tag"] == d.builds.versions["v1"].tag
    assert recs[-1]["migration"]["exit_code"] == 0
    assert {s["name"] for s in recs[-1]["steps"]} >= {"pull", "lock+env", "start-new"}

    r2 = deploy(d, "v2")
    assert r2.code == 0, r2.text
    assert '"version": "2"' in d.get()[1]
    rec = d.host_records()[-1]
    assert rec["previous_tag"] == d.builds.versions["v1"].tag
    # v1 is kept stopped as the rollback target (retain: 1)
    v1, v2 = d.builds.versions["v1"].tag, d.builds.versions["v2"].tag
    assert d.containers() == sorted([f"{d.service}-{v1} exited", f"{d.service}-{v2} running"])

    # A third deploy (v1 again, forced) leaves one retained container: retention prunes.
    r3 = d.run("deploy", d.builds.ref("v1"), "--force")
    assert r3.code == 0, r3.text
    names = d.containers()
    assert len(names) == 2 and f"{d.service}-{v1} running" in names

    # The same tag again does nothing without --force.
    again = deploy(d, "v1")
    assert again.code == 0 and "already runs" in again.out
    assert len(d.host_records()) == 3


def test_failed_migration_aborts_and_old_keeps_serving(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    assert deploy(d, "v1").code == 0
    psql(d.db.name, "-c", "INSERT INTO notes (text) VALUES ('kept')")
    before_schema, before_rows = schema(d), d.db.query("SELECT count(*) FROM notes")
    r = deploy(d, "bad-migration")
    assert r.code == 1, r.text
    assert "migrations failed" in r.out and "0003_tags_index.sql" in r.text
    assert d.get()[0] == 200 and '"version": "1"' in d.get()[1]
    assert schema(d) == before_schema
    assert d.db.query("SELECT count(*) FROM notes") == before_rows
    assert d.db.query("SELECT count(*) FROM plainsail_migrations WHERE name LIKE '0003%'") == "0"
    rec = d.host_records()[-1]
    assert rec["outcome"] == "failed-migration" and rec["migration"]["exit_code"] != 0
    assert "0003" in rec["migration"]["output_tail"]
    assert [c.split()[1] for c in d.containers()] == ["running"]  # never touched


def test_wrong_database_url_fails_health_and_is_restored(deploy_dir: DeployDir,
                                                          webhook: Webhook) -> None:
    d = deploy_dir
    d.config(attempts="8", notify=f"notify:\n  - webhook: {webhook.url}\n")
    assert deploy(d, "v1").code == 0
    wrong = d.db.url_with(password="not-the-password-4711")
    summary_md = d.path / "step-summary.md"
    r = deploy(d, "v2", "--skip-migrations", env={
        "DATABASE_URL": wrong, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary_md),
        "GITHUB_ACTOR": "octo-deployer"})
    assert r.code == 1
    assert "FAILED, RESTORED" in r.out
    assert "::group::" in r.out and "::endgroup::" in r.out and "::error::" in r.out
    assert "FAILED-HEALTH-RESTORED" in summary_md.read_text()
    assert d.host_records()[-1]["who"] == "octo-deployer"
    status, body = d.get()
    assert status == 200 and '"version": "1"' in body
    rec = d.host_records()[-1]
    assert rec["outcome"] == "failed-health-restored"
    assert rec["health"]["healthy"] is False and rec["health"]["last"]
    assert rec["restore_health"]["healthy"] is True
    assert "migration" not in rec
    # No secret value anywhere: output, records, notifications.
    everything = r.text + json.dumps(d.host_records()) + "".join(webhook.bodies)
    everything += (d.path / ".plainsail" / "history.jsonl").read_text() + summary_md.read_text()
    for secret in ("not-the-password-4711", d.db.password, webhook.url):
        assert secret not in everything
    assert len(webhook.bodies) == 2 and "FAILED-HEALTH-RESTORED" in webhook.bodies[-1]


def test_container_that_crashes_fails_early(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(attempts="60", interval="500ms")
    assert deploy(d, "v1").code == 0
    start = time.monotonic()
    r = deploy(d, "crash")
    assert r.code == 1 and "FAILED, RESTORED" in r.out
    assert time.monotonic() - start < 25  # did not wait for 60 attempts x 0.5 s
    rec = d.host_records()[-1]
    assert "restarted" in rec["reason"] or "exited" in rec["reason"]
    assert "refusing to start" in rec["log_tail"]
    assert '"version": "1"' in d.get()[1]


def test_first_deploy_failing_says_nothing_to_restore(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(attempts="4")
    r = deploy(d, "crash")
    assert r.code == 1
    assert "COULD NOT BE RESTORED" in r.out and "no previous version" in r.out
    assert d.host_records()[-1]["outcome"] == "restore-failed"


def test_a_port_another_program_listens_on_is_refused_before_any_change(
        deploy_dir: DeployDir) -> None:
    """The app (host network) would listen on app.port, where another program already
    listens: one line in preflight, nothing created on the host; once it is free the same
    deploy goes through."""
    d = deploy_dir
    squatter = socket.socket()
    squatter.bind(("0.0.0.0", d.port))  # noqa: S104
    squatter.listen(1)
    try:
        r = deploy(d, "v1", "--json")
        rec = json.loads(r.out)
        assert r.code == 1 and rec["outcome"] == "aborted" and rec["preflight"], r.text
        assert f"app.port {d.port}: port {d.port} is taken: a program listens on it" \
            in rec["reason"], rec["reason"]
        assert "Traceback" not in r.text
        left = d.host_run("docker", "ps", "-aq", "--filter",
                          f"label=dev.plainsail.service={d.service}").stdout
        assert left.strip() == ""
    finally:
        squatter.close()
    r = deploy(d, "v1")
    assert r.code == 0, r.text


def test_slow_start_passes_within_attempts(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    hook = f"http://127.0.0.1:{closed.getsockname()[1]}/hooks/T0KEN-x1"
    d.config(attempts="40", interval="250ms", notify=f"notify:\n  - webhook: {hook}\n")
    r = deploy(d, "slow")
    closed.close()
    assert r.code == 0, r.text
    assert d.host_records()[-1]["health"]["attempts"] > 3
    # An unreachable webhook is reported, never fails the deploy, and is never printed.
    assert "notify[0]: the webhook could not be reached" in r.err and "T0KEN" not in r.text


def test_migration_timeout_aborts(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    assert deploy(d, "v1").code == 0
    d.config(extra="")
    text = (d.path / "plainsail.yml").read_text().replace(
        "migrate:\n  command: [plainsail, migrate]\n  timeout: 60s",
        "migrate:\n  command: [sleep, '30']\n  timeout: 2s")
    (d.path / "plainsail.yml").write_text(text)
    start = time.monotonic()
    r = deploy(d, "v2")
    assert r.code == 1 and "timed out after 2s" in r.out
    assert time.monotonic() - start < 20
    assert '"version": "1"' in d.get()[1]
    leftovers = d.host_run("docker", "ps", "-aq", "--filter", "label=dev.plainsail.role=migrate",
                           "--filter", f"label=dev.plainsail.service={d.service}").stdout
    assert leftovers.strip() == ""


def test_unknown_host_filter_refused(deploy_dir: DeployDir) -> None:
    r = deploy(deploy_dir, "v1", "--host", "web-9")
    assert r.code == 2 and "--host web-9: not in hosts" in r.err


def test_on_failure_stop_leaves_failed_state(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(on_failure="stop", attempts="16")  # v1 starts within 4 s even under load
    assert deploy(d, "v1").code == 0
    r = deploy(d, "v2", "--skip-migrations",
               env={"DATABASE_URL": d.db.url_with(password="wrong-pw-99")})
    assert r.code == 1 and "left for a human" in r.out
    assert d.host_records()[-1]["outcome"] == "failed-health-left-stopped"
    v1 = d.builds.versions["v1"].tag
    assert f"{d.service}-{v1} exited" in d.containers()


def test_unsigned_and_tampered_refused_before_any_host_changes(
    deploy_dir: DeployDir, notes_builds: NotesBuilds
) -> None:
    d = deploy_dir
    assert deploy(d, "v1").code == 0
    before = (d.containers(), d.host_records())
    # Another key: the image is signed, but not by the key this config trusts.
    other = d.path / "other"
    other.mkdir()
    r = d.run("keygen", "--output-key-prefix", str(other / "k"),
              env={"COSIGN_PASSWORD": "x"})
    assert r.code == 0, r.text
    text = (d.path / "plainsail.yml").read_text()
    (d.path / "plainsail.yml").write_text(
        text.replace(str(notes_builds.public_key), str(other / "k.pub")))
    r = deploy(d, "v2")
    assert r.code == 1, r.text
    assert "another key" in r.err.lower() or "not signed by" in r.err.lower(), r.err
    # A digest the signature does not name (a tampered/unknown image under the same tag).
    (d.path / "plainsail.yml").write_text(text)
    v2 = notes_builds.versions["v2"]
    wrong = f"{v2.tag}@{notes_builds.versions['v1'].digest}"
    r = d.run("deploy", wrong)
    assert r.code == 1, r.text
    assert (d.containers(), d.host_records()) == before
    local = (d.path / ".plainsail" / "history.jsonl").read_text().splitlines()
    assert json.loads(local[-1])["outcome"] == "aborted" and json.loads(local[-1])["preflight"]


def test_concurrent_deploy_refused_and_killed_deployers_lock_reported(
    deploy_dir: DeployDir,
) -> None:
    d = deploy_dir
    assert deploy(d, "v1").code == 0
    lock = f"{d.ssh.home}/.plainsail/{d.service}/lock"
    info = {"deploy_id": "20260101T000000Z-abcdef", "holder": "alice@ci-runner-7",
            "machine": "ci-runner-7", "pid": 4242, "started": "2026-01-01T00:00:00Z",
            "tag": "deadbeef", "origin": "https://ci.example/run/1", "kind": "deploy"}
    d.ssh.run(["sh", "-c", 'mkdir "$1" && cat > "$1/info.json"', "sh", lock],
              input=json.dumps(info))
    r = deploy(d, "v2")
    assert r.code == 1 and "alice@ci-runner-7" in r.text and "another deploy holds" in r.text
    assert '"version": "1"' in d.get()[1]
    s = d.run("lock", "status")
    assert "LOCKED by alice@ci-runner-7" in s.out
    # A lock left by a deployer on this machine whose process is gone is called out.
    dead = subprocess.Popen(["true"])
    dead.wait()
    info.update(machine=socket.gethostname(), pid=dead.pid, holder="bob@here")
    d.ssh.run(["sh", "-c", 'cat > "$1/info.json"', "sh", lock], input=json.dumps(info))
    r = deploy(d, "v2")
    assert r.code == 1 and "no longer running" in r.text and "lock release" in r.text
    rel = d.run("lock", "release")
    assert rel.code == 0 and "released the lock held by bob@here" in rel.out
    assert deploy(d, "v2").code == 0


def test_unreachable_host_is_one_clear_line(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    text = (d.path / "plainsail.yml").read_text()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    (d.path / "plainsail.yml").write_text(
        text.replace(d.ssh.host, f"ssh://{d.ssh.user}@127.0.0.1:{port}"))
    r = deploy(d, "v1")
    closed.close()
    assert r.code == 1 and "cannot connect over SSH" in r.err
    assert len([line for line in r.err.splitlines() if line.startswith("error:")]) == 1
    (d.path / "plainsail.yml").write_text(text.replace(d.ssh.host, "ssh://psdeploy@nowhere.invalid"))
    r = deploy(d, "v1")
    assert r.code == 1 and "cannot connect over SSH" in r.err


def test_dry_run_changes_nothing(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    assert deploy(d, "v1").code == 0
    before = (d.containers(), d.host_records(), schema(d))
    r = deploy(d, "v2", "--dry-run")
    assert r.code == 0, r.text
    v2 = d.builds.versions["v2"]
    assert f"docker pull --quiet {d.builds.image}@{v2.digest}" in r.out
    assert "plainsail migrate" in r.out and "docker stop" in r.out and "--init" in r.out
    assert d.db.password not in r.text
    assert (d.containers(), d.host_records(), schema(d)) == before


def test_missing_secret_refused(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    from tests.support.cli import plainsail

    r = plainsail("deploy", d.builds.ref("v1"), cwd=d.path, env=env)
    # DATABASE_URL is inherited from d.env only through d.run; plainsail() here has none.
    assert r.code == 1 and "DATABASE_URL" in r.err and "not set" in r.err
    assert d.containers() == []


def test_local_host_deploy(local_deploy_dir: DeployDir) -> None:
    d = local_deploy_dir
    r = deploy(d, "v1")
    assert r.code == 0, r.text
    assert d.get()[0] == 200


def test_sigkilled_deployer_is_named_interrupted_and_recovered(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(attempts="40", interval="250ms")
    assert deploy(d, "v1").code == 0
    pid = d.kill_mid_switch("slow")
    for command in (["lock", "status"], ["status"], ["deploy", d.builds.ref("v2")]):
        r = d.run(*command)
        assert "INTERRUPTED" in r.text and str(pid) in r.text and "recover" in r.text, r.text
    r = d.run("recover")
    assert r.code == 0 and "RECOVERED" in r.out, r.text
    assert '"version": "1"' in d.get()[1]
    outcomes = [rec["outcome"] for rec in d.host_records()]
    assert outcomes[-2:] == ["interrupted", "recovered"], outcomes
    assert d.run("lock", "status").out.strip().endswith("unlocked")
    assert deploy(d, "v2").code == 0


def test_sigterm_mid_deploy_restores_unlocks_and_records(deploy_dir: DeployDir) -> None:
    import signal
    import sys

    d = deploy_dir
    d.config(attempts="40", interval="250ms")
    assert deploy(d, "v1").code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "plainsail", "deploy", d.builds.ref("slow")], cwd=d.path,
        env={**os.environ, **d.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "start-new: ok" in line:  # the slow version is booting: the gate is polling
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    text = "".join(seen) + out + err
    assert proc.returncode == 130, text
    assert "INTERRUPTED" in text and "Traceback" not in text
    rec = d.host_records()[-1]
    assert rec["outcome"] == "interrupted"
    lock = d.host_run("test", "-e", f"{d.ssh.home}/.plainsail/{d.service}/lock")
    assert lock.returncode != 0  # released
    assert '"version": "1"' in d.get()[1]  # the previous version was started again
