"""Every branch of the swarm deploy, through a fake Swarm manager (tests/support/fakeswarm.py):
outcomes, restores to the recorded release, secrets as Docker secrets, records and the lock,
without Docker or SSH. tests/test_swarm_deploy.py runs the same code on a real 3-node Swarm."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plainsail.config import model as configlib
from plainsail.deploy.outcomes import (
    ABORTED,
    FAILED_MIGRATION,
    INTERRUPTED,
    RESTORE_FAILED,
    RESTORED,
    SUCCEEDED,
    UNCHANGED,
    exit_code,
)
from plainsail.deploy.plan import Request, Target
from plainsail.errors import PlainsailError
from plainsail.swarm import service as svc
from plainsail.swarm.deploy import SwarmDeploy
from tests.support.fakeswarm import FakeSwarm

IMAGE = "registry.example.com/acme/api"
V1 = Target(IMAGE, "a1a1a1a1", "sha256:" + "a1" * 32, True)
V2 = Target(IMAGE, "b2b2b2b2", "sha256:" + "b2" * 32, True)
TARGETS = {t.tag: t for t in (V1, V2)}
PASSWORD = "pw-9f8e7d6c5b4a"
SWARM = ("target: swarm\nswarm:\n  manager: ssh://deploy@manager-1\n  replicas: 3\n"
         "  update: {order: stop-first}\n")


def migration(argv: list[str]) -> bool:
    """Is this the migration container's `docker run`?"""
    return argv[:2] == ["docker", "run"] and "migrate" in argv


class Bench:
    def __init__(self, tmp: Path, extra: str = "", swarm: str = SWARM,
                 publish: bool = True) -> None:
        self.fake = FakeSwarm()
        text = (f"service: api\nimage: {IMAGE}\n{swarm}"
                "app:\n  port: 8080\n" + ("  publish: 18080\n" if publish else "")
                + "  secrets: [DATABASE_URL]\n"
                "  env: {MODE: prod}\n"
                "health:\n  attempts: 2\n  interval: 10ms\n  timeout: 1s\n"
                "migrate:\n  command: [migrate, up]\n" + extra)
        (tmp / "plainsail.yml").write_text(text)
        self.cfg = configlib.load(tmp / "plainsail.yml", {}, swarm_ok=True)
        self.env = {"DATABASE_URL": f"postgresql://app:{PASSWORD}@db/app"}
        self.lines: list[str] = []
        self.tmp = tmp

    def attempt(self, target: Target, **req: Any) -> SwarmDeploy:
        request = Request(ref=f"{target.tag}@{target.digest}", **req)
        return SwarmDeploy(self.cfg, request, self.lines.append, environ=dict(self.env),
                           executor=self.fake.executor(),
                           resolve=lambda cfg, r: TARGETS[str(r.ref).split("@")[0]],
                           sleep=lambda s: None)

    def deploy(self, target: Target, **req: Any) -> dict[str, Any]:
        try:
            return self.attempt(target, **req).run()
        except PlainsailError as exc:
            assert exc.record is not None
            return exc.record

    def records(self) -> list[dict[str, Any]]:
        return self.fake.history("api")

    def argvs(self) -> str:
        return "\n".join(json.dumps(a) for a in self.fake.log)


def test_first_deploy_creates_the_service_by_digest_with_secrets_as_docker_secrets(
        tmp_path: Path) -> None:
    b = Bench(tmp_path)
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED and exit_code(s) == 0, s["reason"]
    f = b.fake
    assert f.image == f"{IMAGE}@{V1.digest}"
    c = f.container_spec()
    assert c["Env"] == ["MODE=prod"]  # the secret is not in the service's env
    assert c["Args"] == ["/bin/app", "serve"]  # the image's command, after the shim
    [secret] = c["Secrets"]
    assert secret["File"]["Name"] == "plainsail-env.DATABASE_URL"
    assert f.secrets[secret["SecretName"]] == b.env["DATABASE_URL"]  # exact bytes, stdin
    assert PASSWORD not in b.argvs()  # never in an argv
    assert PASSWORD not in json.dumps(b.records()) and PASSWORD not in "\n".join(b.lines)
    create = next(a for a in f.log if a[1:3] == ["service", "create"])
    for flag in ("--no-resolve-image", "--detach"):
        assert flag in create
    assert create[create.index("--update-failure-action") + 1] == "pause"
    assert create[create.index("--endpoint-mode") + 1] == "dnsrr"
    assert "mode=host,target=8080,published=18080" in create
    assert f.configs[svc.entry_config_name()] == svc.ENTRY_SCRIPT
    assert "plainsail" in f.swarm_networks
    [rec] = b.records()
    assert rec["outcome"] == SUCCEEDED and rec["target"] == "swarm"
    assert len(rec["tasks"]) == 3 and {t["node"] for t in rec["tasks"]} == {
        "pss1", "pss2", "pss3"}
    assert all(h["healthy"] for h in rec["health"])
    assert not f.locked("api")
    assert not any(k.endswith("/api/env") for k in f.files)  # the env file is gone
    # The migration ran once, before the service existed, on the overlay network.
    runs = [i for i, a in enumerate(f.log) if migration(a)]
    made = next(i for i, a in enumerate(f.log) if a[1:3] == ["service", "create"])
    assert len(runs) == 1 and runs[0] < made
    assert f.log[runs[0]][f.log[runs[0]].index("--network") + 1] == "plainsail"


def test_update_replaces_and_removes_the_old_secret_versions(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.deploy(V1)
    first = set(b.fake.secrets)
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert b.fake.image.endswith(V2.digest)
    assert s["previous_tag"] == V1.tag
    assert set(b.fake.secrets).isdisjoint(first) and len(b.fake.secrets) == 1
    assert b.fake.container_spec()["Env"] == ["MODE=prod"]
    assert [r["outcome"] for r in b.records()] == [SUCCEEDED, SUCCEEDED]


def test_same_release_again_is_unchanged_unless_forced(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.deploy(V1)
    updates = b.fake.updates
    s = b.deploy(V1)
    assert s["outcome"] == UNCHANGED and b.fake.updates == updates
    s = b.deploy(V1, force=True)
    assert s["outcome"] == SUCCEEDED and b.fake.updates == updates + 1
    update = [a for a in b.fake.log if a[1:3] == ["service", "update"]][-1]
    assert "--force" in update


def test_failing_gate_puts_the_recorded_release_back(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.deploy(V1)
    kept = set(b.fake.secrets)
    b.fake.healthy_image = lambda image: V2.digest not in image
    b.fake.image_client = ""  # no HTTP client in v2: Swarm cannot check it, the gate does
    s = b.deploy(V2)
    assert s["outcome"] == RESTORED and exit_code(s) == 1
    assert "health gate failed" in s["reason"] and "runs a1a1a1a1 again" in s["reason"]
    assert b.fake.image.endswith(V1.digest)
    assert set(b.fake.secrets) == kept  # the failed attempt's secret versions are gone
    c = b.fake.container_spec()
    assert [x["SecretName"] for x in c["Secrets"]] == sorted(kept)
    rec = b.records()[-1]
    assert rec["outcome"] == RESTORED and not all(h["healthy"] for h in rec["health"])
    assert all(h["healthy"] for h in rec["restore_health"])
    assert not any(a[1:3] == ["service", "rollback"] for a in b.fake.log)


def test_swarm_pausing_the_update_is_a_failure_and_restored(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.deploy(V1)
    b.fake.update_state = "paused"
    s = b.deploy(V2)
    assert s["outcome"] == RESTORED, s["reason"]
    assert "update is paused" in s["reason"]
    assert b.fake.image.endswith(V1.digest)


def test_a_node_down_with_no_room_for_every_task_fails_at_once_and_says_which(
        tmp_path: Path) -> None:
    """Each node holds one task (the host-mode port): with a node down, Swarm cannot place
    the third task anywhere, neither of the new release nor of the old one. plainsail does
    not wait for its deadlines: restore-failed, naming the node."""
    b = Bench(tmp_path)
    b.deploy(V1)
    b.fake.down = {"node3"}
    slept: list[float] = []
    attempt = b.attempt(V2)
    attempt._sleep = slept.append
    s = attempt.run()
    assert s["outcome"] == RESTORE_FAILED and exit_code(s) == 1, s["reason"]
    assert "pss3 (10.232.3.2) is down" in s["reason"]
    assert "hold at most 2 of the 3 replicas" in s["reason"]
    assert "no suitable node" in s["reason"]
    assert slept == []  # neither the update nor the restore waited for a deadline
    assert b.fake.image.endswith(V1.digest)  # the old spec is back, two tasks of it run
    rec = next(r for r in b.records() if r["id"] == s["id"])
    assert rec["outcome"] == RESTORE_FAILED
    assert {"id": "node3", "hostname": "pss3", "address": "10.232.3.2", "state": "down",
            "availability": "active", "role": "worker"} in rec["nodes"]


def test_a_node_down_with_room_left_succeeds_on_the_other_nodes(tmp_path: Path) -> None:
    """Two replicas on three nodes: Swarm places both on the nodes left; the deploy
    succeeds only with both tasks of the new release running and healthy."""
    b = Bench(tmp_path, swarm=SWARM.replace("replicas: 3", "replicas: 2"))
    b.deploy(V1)
    b.fake.down = {"node2"}
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert sorted(t["node"] for t in s["tasks"]) == ["pss1", "pss3"]
    assert len(s["health"]) == 2 and all(h["healthy"] for h in s["health"])


def test_first_deploy_failing_removes_the_new_service(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.fake.healthy_image = lambda image: False
    s = b.deploy(V1)
    assert s["outcome"] == RESTORED and "nothing ran before" in s["reason"]
    assert b.fake.spec is None and b.fake.secrets == {}


def test_failed_migration_leaves_the_service_untouched(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.deploy(V1)
    updates, secrets = b.fake.updates, dict(b.fake.secrets)
    b.fake.migrate_exit = 3
    b.fake.migrate_output = "ERROR: relation missing"
    s = b.deploy(V2)
    assert s["outcome"] == FAILED_MIGRATION and exit_code(s) == 1
    assert "relation missing" in s["reason"]
    assert b.fake.updates == updates and b.fake.secrets == secrets
    assert b.fake.image.endswith(V1.digest) and not b.fake.locked("api")


def test_a_removed_networks_stale_copy_is_waited_out_and_the_migration_runs_once(
        tmp_path: Path) -> None:
    """The manager still shows a network removed a moment ago: `inspect` answers, joining
    it fails with "network ID not found" and nothing starts. The deploy waits the copy out,
    creates the network and runs the command again; the migration runs once."""
    b = Bench(tmp_path)
    b.fake.stale_looks = 2
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert b.fake.joins_refused == 1 and "plainsail" in b.fake.swarm_networks
    creates = [a for a in b.fake.log if a[1:3] == ["network", "create"]]
    migrations = [a for a in b.fake.log if migration(a)]
    assert len(creates) == 1 and len(migrations) == 2
    assert s["migration"]["exit_code"] == 0
    assert any("does not know the overlay network plainsail yet" in line
               for line in b.lines), b.lines


def test_a_network_that_stays_unknown_fails_the_migration_after_three_tries(
        tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.fake.stale_looks = 10**6  # inspect always answers, the network never exists
    s = b.deploy(V1)
    assert s["outcome"] == FAILED_MIGRATION and "network" in s["reason"]
    assert b.fake.joins_refused == 3 and b.fake.spec is None
    assert not b.fake.locked("api")


def test_a_migration_that_ran_and_printed_such_a_line_is_not_run_again(
        tmp_path: Path) -> None:
    """Only `docker run`'s own failure (exit 125, nothing started) is retried: a migration
    that ran, failed and happened to print an engine's words fails as it is."""
    b = Bench(tmp_path)
    b.fake.migrate_exit = 3
    b.fake.migrate_output = "Error response from daemon: network reports not found"
    s = b.deploy(V1)
    assert s["outcome"] == FAILED_MIGRATION and "network reports not found" in s["reason"]
    assert len([a for a in b.fake.log if migration(a)]) == 1


def test_a_service_create_refused_for_an_unknown_network_is_run_again(
        tmp_path: Path) -> None:
    b = Bench(tmp_path, extra="")
    b.cfg = replace(b.cfg, migrate=None)
    b.fake.stale_looks = 2
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert b.fake.joins_refused == 1 and b.fake.updates == 1


def test_registry_unreachable_from_the_manager_aborts_before_any_change(
        tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.deploy(V1)
    updates = b.fake.updates
    b.fake.fail("docker pull", message="dial tcp 127.0.0.1:5000: connection refused")
    s = b.deploy(V2)
    assert s["outcome"] == ABORTED and "the service was not changed" in s["reason"]
    assert b.fake.updates == updates and b.fake.image.endswith(V1.digest)


def test_a_held_lock_aborts(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.fake.dirs.add("/home/deploy/.plainsail/api/lock")
    b.fake.files["/home/deploy/.plainsail/api/lock/info.json"] = json.dumps({
        "deploy_id": "x", "holder": "ann@ci", "machine": "ci", "pid": 1,
        "started": "2026-01-01", "tag": "t", "origin": "ci"})
    s = b.deploy(V1)
    assert s["outcome"] == ABORTED and "another deploy holds the lock" in s["reason"]
    assert b.fake.spec is None


def test_sigterm_during_the_update_restores(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.deploy(V1)
    b.fake.fail("swarm-tasks", kind="signal")  # the first watch of the update
    s = b.deploy(V2)
    assert s["outcome"] == INTERRUPTED and exit_code(s) == 130
    assert b.fake.image.endswith(V1.digest) and not b.fake.locked("api")
    assert b.records()[-1]["outcome"] == INTERRUPTED


def test_dry_run_shows_the_commands_and_changes_nothing(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    s = b.deploy(V1, dry_run=True)
    assert s["outcome"] == "dry-run" and b.fake.spec is None and not b.fake.secrets
    text = "\n".join(b.lines)
    assert "docker service create" in text and "--no-resolve-image" in text
    assert PASSWORD not in text


@pytest.mark.parametrize(("extra", "swarm", "needle"), [
    ("", SWARM.replace("stop-first", "start-first"), "start-first needs a node"),
    ("", SWARM.replace("replicas: 3", "replicas: 2").replace("stop-first", "start-first"),
     None),
])
def test_start_first_needs_a_free_node_for_host_mode_ports(
        tmp_path: Path, extra: str, swarm: str, needle: str | None) -> None:
    b = Bench(tmp_path, extra, swarm)
    s = b.deploy(V1)
    if needle:
        assert s["outcome"] == ABORTED and s["preflight"] and needle in s["reason"]
        assert b.fake.spec is None and b.fake.log[-1][1] != "service"
    else:
        assert s["outcome"] == SUCCEEDED, s["reason"]


def test_update_argv_moves_every_part_of_the_spec() -> None:
    cfg = configlib.parse(f"service: api\nimage: {IMAGE}\n{SWARM}app: {{publish: 80}}\n",
                          Path("/x/plainsail.yml"), {}, )
    old = svc.Spec(f"{IMAGE}@{V1.digest}", {"plainsail.tag": "a", "gone": "1"},
                   ["A=1", "B=2"], ["x"], {"DB": "api_DB_111111"})
    new = svc.Spec(f"{IMAGE}@{V2.digest}", {"plainsail.tag": "b"}, ["A=3"], ["y", "z z"],
                   {"DB": "api_DB_222222"})
    argv = svc.update_argv(cfg, old, new)
    pairs = list(zip(argv, argv[1:], strict=False))
    assert ("--image", new.image) in pairs and ("--label-rm", "gone") in pairs
    assert ("--env-rm", "B") in pairs and ("--env-add", "A=3") in pairs
    assert ("--secret-rm", "api_DB_111111") in pairs
    assert ("--secret-add", "source=api_DB_222222,target=plainsail-env.DB") in pairs
    assert ("--args", "y 'z z'") in pairs and argv[-1] == "api"
    assert "--publish-add" not in argv and "--publish-rm" not in argv  # no ports either side
    argv = svc.update_argv(cfg, replace(old, ports=[(8080, 80)]), replace(new, ports=[(8080, 81)]))
    pairs = list(zip(argv, argv[1:], strict=False))
    assert ("--publish-rm", "published=80,target=8080,mode=host") in pairs
    assert ("--publish-add", "mode=host,target=8080,published=81") in pairs


def test_secret_names_fit_dockers_limit() -> None:
    assert svc.secret_name("api", "DATABASE_URL", "20260101T000000Z-abcdef") == \
        "api_DATABASE_URL_abcdef"
    long = svc.secret_name("s" * 60, "V" * 60, "x-abcdef")
    assert len(long) <= 64 and long.endswith("_abcdef")


def _rollback(b: Bench, to: str | None = None) -> dict[str, Any]:
    from plainsail.swarm.morning import rollback

    return rollback(b.cfg, to=to, report=b.lines.append, environ=dict(b.env),
                    executor=b.fake.executor(),
                    resolve=lambda cfg, r: TARGETS[str(r.ref).split("@")[0]],
                    sleep=lambda s: None)


def test_rollback_deploys_the_previous_recorded_release_without_migrations(
        tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.deploy(V1)
    b.deploy(V2)
    runs = sum(1 for a in b.fake.log if migration(a))
    s = _rollback(b)
    assert s["outcome"] == SUCCEEDED and s["kind"] == "rollback", s["reason"]
    assert s["rollback_from"] == V2.tag and s["rollback_to"] == V1.tag
    assert b.fake.image.endswith(V1.digest)
    assert sum(1 for a in b.fake.log if migration(a)) == runs
    assert b.records()[-1]["kind"] == "rollback"
    # The next rollback goes back past the rolled-back release, to the one before it.
    with pytest.raises(PlainsailError, match="already running"):
        _rollback(b, to=V1.tag)
    assert _rollback(b, to=V2.tag)["outcome"] == SUCCEEDED
    assert b.fake.image.endswith(V2.digest)


def test_rollback_refuses_what_the_records_do_not_name(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    with pytest.raises(PlainsailError, match="nothing to roll back to"):
        _rollback(b)
    b.deploy(V1)
    with pytest.raises(PlainsailError, match="never deployed successfully"):
        _rollback(b, to=V2.tag)
    assert b.fake.image.endswith(V1.digest)


def test_status_lists_each_task_with_its_node_digest_and_health(tmp_path: Path) -> None:
    from plainsail.swarm.morning import render_status, status

    b = Bench(tmp_path)
    assert status(b.cfg, b.fake.executor())["running"] is None
    b.deploy(V1)
    b.fake.healthy_image = lambda image: False
    s = status(b.cfg, b.fake.executor())
    assert s["reachable"] and s["running"]["tag"] == V1.tag and s["replicas"] == 3
    assert len(s["tasks"]) == 3
    assert all(t["digest"] == V1.digest and t["state"] == "running" for t in s["tasks"])
    assert all("answered 500" in t["health"] for t in s["tasks"])
    text = "\n".join(render_status(b.cfg, s))
    assert "3/3 task(s) running" in text and "10.232.2.2" in text
    b.fake.fail("probe", kind="drop")
    down = status(b.cfg, b.fake.executor())
    line = render_status(b.cfg, down)[0]
    assert not down["reachable"] and line.startswith("ssh://deploy@manager-1: UNREACHABLE: ")
    assert line.count("manager-1") == 1, line  # the host named once


def test_a_refused_signature_stops_before_the_manager_is_asked(tmp_path: Path) -> None:
    from plainsail.errors import SignatureError

    b = Bench(tmp_path)

    def refuse(cfg: object, req: object) -> Target:
        raise SignatureError("tag drift: registry.example.com/acme/api:b2b2b2b2 now points "
                             "to another digest")

    d = SwarmDeploy(b.cfg, Request(ref=V2.tag), b.lines.append, environ=dict(b.env),
                    executor=b.fake.executor(), resolve=refuse)
    with pytest.raises(SignatureError) as caught:
        d.run()
    assert caught.value.record is not None
    assert caught.value.record["outcome"] == ABORTED and caught.value.record["preflight"]
    assert b.fake.log == []  # not one command on the manager


def _dead_lock(b: Bench, deploy_id: str = "20260101T000000Z-dead01") -> None:
    import socket

    b.fake.dirs.add("/home/deploy/.plainsail/api/lock")
    b.fake.files["/home/deploy/.plainsail/api/lock/info.json"] = json.dumps({
        "deploy_id": deploy_id, "holder": "ann@here", "machine": socket.gethostname(),
        "pid": 2 ** 22 + 7, "started": "2026-01-01T00:00:00Z", "tag": V2.tag,
        "origin": "here", "kind": "deploy"})


def _recover(b: Bench, force: bool = False) -> dict[str, Any]:
    from plainsail.swarm.morning import recover

    return recover(b.cfg, force=force, report=b.lines.append, environ=dict(b.env),
                   executor=b.fake.executor(), sleep=lambda s: None)


def test_recover_records_the_dead_attempt_and_puts_the_last_good_release_back(
        tmp_path: Path) -> None:
    from plainsail.deploy.outcomes import RECOVERED

    b = Bench(tmp_path)
    b.deploy(V1)
    b.fake.update_state = "paused"  # the killed deployer's update of V2 was left paused
    b.fake.executor().run(svc.update_argv(b.cfg, svc.parse_spec({"Spec": b.fake.spec}),
                                          svc.Spec(f"{IMAGE}@{V2.digest}")))
    _dead_lock(b)
    s = _recover(b)
    assert s["outcome"] == RECOVERED and exit_code(s) == 0, s["reason"]
    assert s["recovered_from"] == "20260101T000000Z-dead01"
    assert b.fake.image.endswith(V1.digest) and not b.fake.locked("api")
    assert [(r["outcome"], r.get("kind")) for r in b.records()] == [
        (SUCCEEDED, "deploy"), (INTERRUPTED, "deploy"), (RECOVERED, "recover")]


def test_recover_needs_a_dead_holder_or_force_and_a_good_release(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    with pytest.raises(PlainsailError, match="nothing to recover"):
        _recover(b)
    _dead_lock(b)
    with pytest.raises(PlainsailError, match="no successful deploy"):
        _recover(b)
    assert b.fake.locked("api")  # refused: nothing touched


def test_a_redeploy_of_the_same_digest_waits_for_the_new_spec_not_the_old_tasks(
        tmp_path: Path) -> None:
    """Before Swarm starts an update, the last UpdateStatus still says completed and the old
    tasks run the same image: only tasks of this deploy's spec count."""
    b = Bench(tmp_path)
    b.deploy(V1)
    old_tasks = {t["ID"] for t in b.fake.tasks}
    b.fake.lazy = True
    s = b.deploy(V1, force=True)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert {t["task"] for t in s["tasks"]}.isdisjoint(old_tasks)
    assert {t["task"] for t in s["tasks"]} <= {t["ID"] for t in b.fake.tasks
                                                 if t["DesiredState"] == "running"}


def test_host_selection_is_refused_for_a_swarm(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    s = b.deploy(V1, hosts=["pss2"])
    assert s["outcome"] == ABORTED and s["preflight"] and "--host" in s["reason"]
    assert b.fake.log == []


def _drill(b: Bench, monkeypatch: pytest.MonkeyPatch, yes: bool = True) -> dict[str, Any]:
    """`plainsail drill` of the swarm config, every connection to the fake manager."""
    from plainsail.deploy.drill import drill
    from plainsail.swarm import deploy as swarmdeploy
    from plainsail.swarm import morning

    monkeypatch.setattr(morning, "manager", lambda cfg: b.fake.executor())
    monkeypatch.setattr(swarmdeploy, "executor_for", lambda *a, **k: b.fake.executor())
    return drill(b.cfg, yes=yes, report=b.lines.append, environ=dict(b.env),
                 resolve=lambda cfg, r: TARGETS[str(r.ref).split("@")[0]],
                 sleep=lambda s: None)


def _two_releases(tmp_path: Path) -> Bench:
    b = Bench(tmp_path)
    for target in (V1, V2):
        assert b.deploy(target)["outcome"] == SUCCEEDED
    return b


def test_drill_rolls_back_to_the_previous_release_and_deploys_the_current_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = Bench(tmp_path)
    b.deploy(V1)
    with pytest.raises(PlainsailError, match="nothing to roll back to"):
        _drill(b, monkeypatch)
    b.deploy(V2)
    before = len(b.records())
    with pytest.raises(PlainsailError, match="from b2b2b2b2 to a1a1a1a1 and back through "
                       "ssh://deploy@manager-1: without a proxy in front of the tasks") as err:
        _drill(b, monkeypatch, yes=False)
    assert "run it again with --yes" in str(err.value) and len(b.records()) == before
    runs = sum(1 for a in b.fake.log if migration(a))
    result = _drill(b, monkeypatch)
    assert result["outcome"] == SUCCEEDED, result["reason"]
    assert result["previous_works_with_current_schema"] and result["returned_to_current"]
    assert (result["previous"]["tag"], result["current"]["tag"]) == (V1.tag, V2.tag)
    assert result["interruption_estimate"] is not None
    back, again = b.records()[-2:]
    assert (back["kind"], back["tag"], back["outcome"]) == ("rollback", V1.tag, SUCCEEDED)
    assert (again["kind"], again["tag"], again["outcome"]) == ("deploy", V2.tag, SUCCEEDED)
    assert again["skip_migrations"] and back["drill"] == again["drill"] == result["id"]
    assert sum(1 for a in b.fake.log if migration(a)) == runs
    assert b.fake.image.endswith(V2.digest)


def test_drill_whose_rollback_fails_its_gate_reports_a_broken_way_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _two_releases(tmp_path)
    b.fake.healthy_image = lambda image: V1.digest not in image  # V1 no longer works
    result = _drill(b, monkeypatch)
    assert result["outcome"] == "failed" and not result["previous_works_with_current_schema"]
    assert result["rollback"]["outcome"] == RESTORED and result["deploy"] is None
    assert result["returned_to_current"] and "fix the way back" in result["reason"]
    assert b.fake.image.endswith(V2.digest)


def test_drill_refuses_an_unhealthy_service_a_held_lock_and_host_selection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plainsail.deploy.drill import DrillRefused, drill

    b = _two_releases(tmp_path)
    updates = b.fake.updates
    b.fake.healthy_image = lambda image: False
    with pytest.raises(DrillRefused, match=r"0 of 3 task\(s\) of b2b2b2b2 run healthy \(task "
                       r"task\d+ on 10.232.1.2: running, health .*answered 500"):
        _drill(b, monkeypatch)
    b.fake.healthy_image = lambda image: True
    _dead_lock(b)
    with pytest.raises(DrillRefused, match="the deploy lock is held"):
        _drill(b, monkeypatch)
    with pytest.raises(PlainsailError, match="--host: a swarm drill"):
        drill(b.cfg, hosts=["ssh://deploy@manager-1"], yes=True)
    assert b.fake.updates == updates


def test_drill_notice_behind_the_swarm_proxy_needs_no_yes() -> None:
    from plainsail.deploy.drill import DrillPlan, interruption_notice

    plan = DrillPlan("b2", "sha256:b2", "a1", ["ssh://deploy@manager-1"], 20.0)
    assert interruption_notice(plan, proxied=True, swarm=True).endswith(
        "from b2 to a1 and back behind the proxy on every node: no request is dropped")
    assert "requests that reach a node while its task is replaced fail" in \
        interruption_notice(plan, swarm=True)
