"""Backups before migrations, without Docker: the config, the policy, the commands and
every branch of the deploy's backup step on the fake host."""

from __future__ import annotations

from pathlib import Path

import pytest

from plainsail.backup import host as backuphost
from plainsail.backup import policy
from plainsail.config import model as configlib
from plainsail.deploy import schemagate
from plainsail.deploy.outcomes import ABORTED, SUCCEEDED
from plainsail.hosts.state import Paths
from tests.test_engine import BACKUP, CLIENT, V1, V2, Bench, assert_no_unfinished_backup


def cfg(extra: str, secrets: str = "[DATABASE_URL]") -> configlib.Config:
    return configlib.parse(f"service: api\nimage: registry.example.com/acme/api\n"
                           f"app:\n  secrets: {secrets}\n{extra}", Path("plainsail.yml"), {})


def test_backup_config_is_strict() -> None:
    c = cfg(BACKUP)
    assert c.backup == configlib.BackupConfig(CLIENT, "migrations", 2, 3600.0)
    assert cfg("").backup is None
    assert cfg("backup:\n  before: never\n").backup is not None
    for bad, where in [
        ("backup:\n  before: always\n  image: " + CLIENT, "backup.before"),
        ("backup:\n  image: postgres:16\n", "pinned by digest"),
        ("backup:\n  keep: 0\n  image: " + CLIENT, "backup.keep"),
        ("backup:\n  keep: 3\n", "image missing"),
        ("backup:\n  image: " + CLIENT + "\n  when: always\n", "unknown key"),
    ]:
        with pytest.raises(configlib.ConfigError, match=where):
            cfg(bad + "\n")
    with pytest.raises(configlib.ConfigError, match="no DATABASE_URL"):
        cfg(BACKUP, secrets="[OTHER]")


def gate(ran: bool, files: list[str] | None = None,
         rules: tuple[str, ...] = (), accepted: tuple[str, ...] = ()) -> schemagate.Gate:
    g = schemagate.Gate(kind="deploy", ran=ran, files=files or [])
    g.findings = [schemagate.Hit("m/1.sql", 1, r, "") for r in rules]
    g.accepted = [schemagate.Hit("m/1.sql", 2, r, "", reason="ok") for r in accepted]
    return g


def test_policy_backs_up_pending_migrations_or_when_unknown() -> None:
    c = cfg(BACKUP)
    assert policy.reason(c, gate(True, []), True) is None  # nothing pending: no cost
    assert policy.reason(c, gate(True, ["m/1.sql"]), True) == "1 pending migration file(s)"
    assert "unknown" in str(policy.reason(c, gate(False), True))
    assert "unknown" in str(policy.reason(c, None, True))
    assert policy.reason(c, gate(True, ["m/1.sql"]), False) is None  # no migration runs
    assert policy.reason(cfg(""), gate(True, ["m/1.sql"]), True) is None
    never = cfg("backup:\n  before: never\n")
    assert policy.reason(never, gate(False), True) is None


def test_destructive_backs_up_only_for_data_losing_rules() -> None:
    c = cfg(BACKUP.replace("migrations", "destructive"))
    assert policy.reason(c, gate(True, ["m/1.sql"]), True) is None
    assert policy.reason(c, gate(True, ["m/1.sql"], rules=("rename-column",)), True) is None
    assert "drop-column" in str(policy.reason(c, gate(True, ["m/1.sql"],
                                                      rules=("drop-column",)), True))
    # An allow comment accepts the risk to the old version, not the loss of data.
    assert "drop-table" in str(policy.reason(c, gate(True, ["m/1.sql"],
                                                     accepted=("drop-table",)), True))
    assert "unknown" in str(policy.reason(c, gate(False), True))


def test_the_backup_command_carries_no_database_url_and_writes_under_host_dir() -> None:
    c = cfg(BACKUP)
    argv = backuphost.take_argv(c, Paths("/home/d/.plainsail/api"), "20260101T000000.000000Z-abcd",
                                "dep", "bridge")
    assert argv[:2] == ["sh", "-c"] and argv[3:6] == ["backup", "/home/d/.plainsail/api/backups",
                                                      "20260101T000000.000000Z-abcd"]
    assert argv[argv.index("--env-file") + 1] == "/home/d/.plainsail/api/env"
    assert "/home/d/.plainsail/api/backups:/backup" in argv and "--rm" in argv
    assert CLIENT in argv
    assert not any("postgres" in a and "://" in a for a in argv)


def test_take_output_is_parsed_strictly() -> None:
    size, sha, counts = backuphost.parse_take_output(
        f"size 12\nsha256 {'a' * 64}\npublic.\"My T\"\t2\npublic.t\t1000\n")
    assert (size, sha, counts) == (12, "a" * 64, {'public."My T"': 2, "public.t": 1000})
    with pytest.raises(ValueError):
        backuphost.parse_take_output("size 12\n")


def unknown_gate(monkeypatch: pytest.MonkeyPatch, g: schemagate.Gate) -> None:
    monkeypatch.setattr(schemagate, "check", lambda *a, **k: g)


def test_deploy_takes_the_backup_before_migrating_and_records_it(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra=BACKUP)
    first = b.deploy(V1)
    assert first["outcome"] == SUCCEEDED
    host = b.fake.history("api")[-1]
    names = [s["name"] for s in host["steps"]]
    assert names.index("backup") < names.index("migrate")
    rec = host["backup"]
    assert rec["ok"] and rec["tables"] == {"public.notes": 3} and len(rec["sha256"]) == 64
    assert rec["file"] in b.fake.files
    assert "pw123" not in str(host) and "pw123" not in "\n".join(b.lines)
    assert first["backup"]["id"] == rec["id"]
    # keep: 2 - the third backup removes the first.
    b.deploy(V2)
    b.deploy(V1)
    dumps = sorted(k for k in b.fake.files if k.endswith(".dump"))
    assert len(dumps) == 2 and rec["file"] not in dumps
    assert b.fake.history("api")[-1]["backup"]["removed"] == [rec["id"]]


def test_no_pending_migration_means_no_backup_step(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    b = Bench(tmp_path, extra=BACKUP)
    unknown_gate(monkeypatch, gate(True, []))
    rec = b.deploy(V1)
    assert rec["outcome"] == SUCCEEDED and "backup" not in rec
    assert not any(a[:2] == ["sh", "-c"] and a[2] == backuphost.TAKE_SCRIPT
                   for a in b.fake.log)


def test_a_failed_backup_aborts_before_the_migrations(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra=BACKUP)
    b.fake.fail("backup", message="pg_dump: error: could not write to output file: "
                "No space left on device")
    rec = b.deploy(V1)
    assert rec["outcome"] == ABORTED
    assert rec["reason"].startswith("backup failed on")
    assert "disk is full" in rec["reason"] and "migrations did not run" in rec["reason"]
    assert not any(a[:2] == ["docker", "run"] for a in b.fake.log)  # no migration, no app
    assert not b.fake.locked("api") and rec["backup"]["ok"] is False
    assert not [k for k in b.fake.files if k.endswith(".dump")]


def test_a_backup_timeout_aborts_too(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra=BACKUP)
    b.fake.fail("backup", kind="timeout")
    rec = b.deploy(V1)
    assert rec["outcome"] == ABORTED and "did not finish within 3600s" in rec["reason"]
    assert not any(a[:2] == ["docker", "run"] for a in b.fake.log)
    # The container that may still run is removed, the script ended, its files removed.
    clean = [a for a in b.fake.log if a[:3] == ["sh", "-c", backuphost.CLEAN_UP]]
    assert len(clean) == 1 and clean[0][-1].startswith("api-backup-"), clean
    assert_no_unfinished_backup(b.fake)


def test_the_clean_up_removes_an_unfinished_backup_only() -> None:
    """CLEAN_UP for real, in a shell: the container removal fails (no such container), the
    script's pid is gone; the unfinished files go, a described backup stays."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bindir, folder = Path(tmp, "bin"), Path(tmp, "backups")
        bindir.mkdir()
        folder.mkdir()
        (bindir / "docker").write_text("#!/bin/sh\necho no such container >&2; exit 1\n")
        (bindir / "docker").chmod(0o755)
        for name in (".b1.partial", ".b1.counts", ".b1.pid", "b1.dump", "b2.dump",
                     "b2.json"):
            (folder / name).write_text("999999999" if name.endswith("pid") else "x")
        argv = backuphost.clean_up_argv(Paths(tmp), "b1", "none")
        subprocess.run(argv, check=True, env={"PATH": f"{bindir}:/usr/bin:/bin"}, timeout=20)
        assert sorted(p.name for p in folder.iterdir()) == ["b2.dump", "b2.json"]


def test_dry_run_shows_the_backup_step(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra=BACKUP)
    from plainsail.deploy.plan import Request
    from plainsail.deploy.run import Deploy

    d = Deploy(b.cfg, Request(ref=f"{V1.tag}@{V1.digest}", dry_run=True), b.lines.append,
               environ=dict(b.env), executors={f.host.name: f.executor() for f in b.fakes},
               resolve=lambda c, r: V1)
    d.run()
    shown = "\n".join(b.lines)
    assert "  backup: " in shown and shown.index("  backup: ") < shown.index("  migrate: ")
    assert "pw123" not in shown


def test_the_backup_step_runs_where_the_plan_puts_it(tmp_path: Path) -> None:
    from tests.test_plan_order import assert_ran_the_plan, attempt

    b = Bench(tmp_path, nhosts=2, extra=BACKUP)
    d = attempt(b, V1)
    assert_ran_the_plan(d, ["pull", "backup", "migrate", "start-new", "gate"])
    assert d.runs[1].plan.step("backup") is None  # only where the migrations run


def test_restore_commands_check_the_checksum_and_carry_no_url() -> None:
    from plainsail.backup import restore

    c = cfg(BACKUP)
    rec = {"id": "20260101T000000.000000Z-abcd", "sha256": "f" * 64}
    argv = restore.restore_argv(c, Paths("/h/.plainsail/api"), rec, "api_copy", "keep", None)
    assert argv[2] == restore.CHECKED_RUN
    assert argv[4:6] == ["/h/.plainsail/api/backups/20260101T000000.000000Z-abcd.dump",
                         "f" * 64]
    assert "/h/.plainsail/api/backups:/backup:ro" in argv
    assert argv[-3:] == ["/backup/20260101T000000.000000Z-abcd.dump", "api_copy", "keep"]
    for bad in ("Api", "1db", "a-b", "x" * 64, "a;drop", ""):
        with pytest.raises(backuphost.BackupError, match="--into"):
            restore.check_name(bad)
    assert restore.parse_counts('public.t\t3\npublic."My T"\t0\nnoise\n') == {
        "public.t": 3, 'public."My T"': 0}


def test_backup_command_usage_errors() -> None:
    from tests.support.cli import plainsail

    for args, says in [(["backup", "restore"], "needs the backup's ID"),
                       (["backup", "download"], "needs the backup's ID"),
                       (["backup", "restore", "x"], "exactly one of --into"),
                       (["backup", "restore", "x", "--in-place"], "--yes"),
                       (["backup", "list", "--into", "x"], "for backup restore")]:
        r = plainsail(*args)
        assert r.code == 2 and says in r.err, r.text


def in_place(b: Bench) -> dict[str, object]:
    from plainsail.backup import inplace

    bid = b.fake.history("api")[-1]["backup"]["id"]
    return inplace.restore_in_place(b.cfg, bid, [],
                                    {f.host.name: f.executor() for f in b.fakes})


def test_restore_in_place_stops_restores_and_starts_again(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra=BACKUP)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    running = b.fake.running()
    result = in_place(b)
    assert result["outcome"] == "restored", result
    assert len(b.fake.restored) == 1 and b.fake.running() == running
    from tests.support.fakehost import step_of

    ran = [step_of(a) for a in b.fake.log]
    assert ran.index("docker stop") < ran.index("restore") < ran.index("docker start")
    assert not b.fake.locked("api") and b.fake.history("api")[-1]["kind"] == "backup-restore"


def test_an_app_that_does_not_come_back_is_service_down(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra=BACKUP)
    b.deploy(V1)
    b.fake.healthy = lambda c: False
    result = in_place(b)
    assert result["outcome"] == "service-down" and "health gate" in str(result["reason"])
    assert not b.fake.locked("api")


def test_in_place_behind_the_proxy_uses_maintenance(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import plainsail.proxy

    b = Bench(tmp_path, extra=BACKUP)
    b.deploy(V1)
    b.cfg = configlib.parse(
        (tmp_path / "plainsail.yml").read_text() + "proxy:\n  host: api.test\n  image: "
        f"caddy:2@sha256:{'d' * 64}\n", tmp_path / "plainsail.yml", {})
    calls: list[bool] = []
    monkeypatch.setattr(plainsail.proxy, "maintenance",
                        lambda ex, cfg, on, message=None: calls.append(on) or True)
    running = b.fake.running()
    result = in_place(b)
    assert result["outcome"] == "restored" and calls == [True, False]
    assert b.fake.running() == running  # nothing stopped behind the proxy
    assert not any(a[:2] == ["docker", "stop"] for a in b.fake.log[-10:])


def create(b: Bench) -> dict[str, object]:
    from plainsail.backup import ops

    return ops.create(b.cfg, [], {f.host.name: f.executor() for f in b.fakes})


def test_backup_create_ends_taken_failed_or_interrupted_recorded_and_unlocked(
        tmp_path: Path) -> None:
    from plainsail.backup.host import BackupError

    b = Bench(tmp_path, extra=BACKUP.replace("migrations", "never"))
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    made = create(b)
    assert made["outcome"] == "taken" and made["id"] and made["tables"] == {"public.notes": 3}
    b.fake.fail("backup", message="pg_dump: error: connection to server failed")
    with pytest.raises(BackupError, match="connection to server"):
        create(b)
    b.fake.fail("backup", kind="signal")
    cut = create(b)
    assert cut["outcome"] == "interrupted" and cut["id"] is None, cut
    # The unfinished backup is gone from the host (container, script, files); the lock is
    # free; each attempt is recorded on the host and locally.
    assert_no_unfinished_backup(b.fake)
    assert len([k for k in b.fake.files if k.endswith(".dump")]) == 1
    clean = [a for a in b.fake.log if a[:3] == ["sh", "-c", backuphost.CLEAN_UP]]
    assert len(clean) == 1
    assert not b.fake.locked("api")
    ends = [(r["kind"], r["outcome"]) for r in b.fake.history("api")][-3:]
    assert ends == [("backup-create", "taken"), ("backup-create", "failed"),
                    ("backup-create", "interrupted")]
    assert [r["outcome"] for r in b.local_records()][-3:] == ["taken", "failed",
                                                               "interrupted"]
    assert "pw123" not in str(b.fake.history("api")) + str(b.local_records())


def test_a_signal_while_the_lock_is_taken_waits_then_interrupts(
        tmp_path: Path) -> None:
    """SIGTERM while the lock is being taken: noted, then the attempt ends interrupted
    before it backs anything up, with the lock released."""
    b = Bench(tmp_path, extra=BACKUP.replace("migrations", "never"))
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.fake.fail("lock", kind="signal")
    cut = create(b)
    assert cut["outcome"] == "interrupted"
    assert not any(a[:3] == ["sh", "-c", backuphost.TAKE_SCRIPT] for a in b.fake.log)
    assert not b.fake.locked("api")


def test_backup_create_interrupted_exits_130_with_one_outcome(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from plainsail.backup import ops
    from plainsail.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "plainsail.yml").write_text(
        "service: api\nimage: registry.example.com/acme/api\napp:\n  secrets: "
        f"[DATABASE_URL]\n{BACKUP}")
    monkeypatch.setattr(ops, "create", lambda cfg, hosts: {
        "outcome": "interrupted", "reason": "interrupted by a signal", "id": None})
    assert main(["backup", "create", "--json"]) == 130
    assert json.loads(capsys.readouterr().out)["outcome"] == "interrupted"


def test_recover_after_a_backup_create_that_died(tmp_path: Path) -> None:
    """A `backup create` SIGKILLed while pg_dump ran leaves its lock (kind backup), its
    unfinished files and perhaps a dump without a description. recover removes them under
    that lock, records the attempt as interrupted, releases the lock; the app, never
    touched, is checked and left running."""
    import json
    import socket

    from plainsail.deploy.recover import recover
    from plainsail.hosts.state import LockInfo
    from tests.test_engine import _dead_pid

    b = Bench(tmp_path, extra=BACKUP.replace("migrations", "never"))
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    good = create(b)
    f = b.fake
    folder = f"{f.home}/.plainsail/api/backups"
    for name in (".20261206T000000.000000Z-dead.partial", ".20261206T000000.000000Z-dead.pid",
                 "20261207T000000.000000Z-dead.dump"):
        f.files[f"{folder}/{name}"] = "unfinished"
    lock = f"{f.home}/.plainsail/api/lock"
    f.dirs.add(lock)
    info = LockInfo("20261206T000000Z-bk0001", "ann@laptop", socket.gethostname(),
                    _dead_pid(), "2026-12-06T00:00:00Z", "", "laptop", kind="backup")
    f.files[f"{lock}/info.json"] = json.dumps(info.__dict__)
    running = f.running()
    s = recover(b.cfg, report=b.lines.append, environ=dict(b.env),
                executors={f.host.name: f.executor()})
    assert s["outcome"] == "recovered", s
    assert_no_unfinished_backup(f)
    assert f"{folder}/{good['id']}.dump" in f.files, "the whole backup stays"
    assert "removed what the interrupted backup left" in "\n".join(b.lines)
    assert not f.locked("api") and f.running() == running
    assert not any(a[:2] == ["docker", "stop"] for a in f.log)
    kinds = [(r["id"], r.get("kind"), r["outcome"]) for r in f.history("api")]
    assert (info.deploy_id, "backup", "interrupted") in kinds


def test_the_leftovers_of_a_dead_attempt_are_removed_whole_backups_kept() -> None:
    """LEFTOVERS for real, in a shell: a still running script of this folder is ended (a
    process that does not name the folder is left alone), the attempt's containers are
    removed, the unfinished files go, a described backup stays."""
    import subprocess
    import tempfile
    import threading

    from plainsail.config import model as configlib

    with tempfile.TemporaryDirectory() as tmp:
        bindir, folder = Path(tmp, "bin"), Path(tmp, "backups")
        bindir.mkdir()
        folder.mkdir()
        calls = Path(tmp, "calls")
        (bindir / "docker").write_text(
            f"#!/bin/sh\necho \"$*\" >> {calls}\n"
            "case \"$1\" in ps) echo c0ffee;; esac\n")
        (bindir / "docker").chmod(0o755)
        script = subprocess.Popen(["sh", "-c", "sleep 30", "backup", str(folder)])
        other = subprocess.Popen(["sleep", "30"])
        reaper = threading.Thread(target=script.wait)  # as its parent on a host would
        reaper.start()
        try:
            (folder / ".b1.pid").write_text(str(script.pid))
            (folder / ".b2.pid").write_text(str(other.pid))
            for name in (".b1.partial", ".b1.counts", "b1.dump", "b0.dump", "b0.json"):
                (folder / name).write_text("x")
            c = configlib.parse(f"service: api\nimage: registry.example.com/acme/api\n"
                                f"app:\n  secrets: [DATABASE_URL]\n{BACKUP}",
                                Path("plainsail.yml"), {})
            argv = ["sh", "-c", backuphost.LEFTOVERS, "backup", str(folder), c.service,
                    "20261206T000000Z-dead01"]
            out = subprocess.run(argv, check=True, capture_output=True, text=True,
                                 env={"PATH": f"{bindir}:/usr/bin:/bin"}, timeout=20).stdout
            reaper.join(timeout=5)
            assert script.returncode is not None, "the folder's script is ended"
            assert other.poll() is None, "another process is left alone"
            assert sorted(p.name for p in folder.iterdir()) == ["b0.dump", "b0.json"]
            assert "containers c0ffee" in out and "file b1.dump" in out
            assert "rm --force c0ffee" in calls.read_text()
            assert "label=dev.plainsail.deploy-id=20261206T000000Z-dead01" in calls.read_text()
        finally:
            for p in (script, other):
                p.kill()
                p.wait()


@pytest.mark.parametrize(("step", "kind", "outcome"), [
    ("restore", "fail", "restore-failed"),  # pg_restore failed: rolled back
    ("docker stop", "signal", "interrupted"),  # SIGTERM before the restore began
])
def test_a_restore_that_does_not_happen_leaves_the_database_and_starts_the_app(
        tmp_path: Path, step: str, kind: str, outcome: str) -> None:
    b = Bench(tmp_path, extra=BACKUP)
    b.deploy(V1)
    running = b.fake.running()
    b.fake.fail(step, kind=kind, message="pg_restore: error: could not execute query")
    result = in_place(b)
    assert result["outcome"] == outcome, result
    assert "left as it was" in str(result["reason"]) and "runs again" in str(result["reason"])
    assert b.fake.restored == [] and b.fake.running() == running
    assert not b.fake.locked("api")
    assert b.fake.history("api")[-1]["outcome"] == outcome


def test_a_signal_during_the_restore_lets_it_finish(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra=BACKUP)
    b.deploy(V1)
    running = b.fake.running()
    b.fake.fail("restore", kind="signal")
    result = in_place(b)
    assert result["outcome"] == "restored" and len(b.fake.restored) == 1, result
    assert "let finish" in str(result["reason"])
    assert b.fake.running() == running and not b.fake.locked("api")


def test_recover_after_an_in_place_restore_that_died(tmp_path: Path) -> None:
    """The restore's deployer SIGKILLed with the app stopped: recover removes the restore's
    container (by the attempt's id), starts the last good version, records both."""
    import json
    import socket

    from plainsail.deploy.recover import recover
    from plainsail.hosts.state import LockInfo
    from tests.test_engine import _dead_pid

    b = Bench(tmp_path, extra=BACKUP)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    f = b.fake
    for c in f.containers.values():
        c.status = "exited"
    lock = f"{f.home}/.plainsail/api/lock"
    f.dirs.add(lock)
    info = LockInfo("20261206T000000Z-rs0001", "ann@laptop", socket.gethostname(),
                    _dead_pid(), "2026-12-06T00:00:00Z", "", "laptop", kind="restore")
    f.files[f"{lock}/info.json"] = json.dumps(info.__dict__)
    s = recover(b.cfg, report=b.lines.append, environ=dict(b.env),
                executors={f.host.name: f.executor()})
    assert s["outcome"] == "recovered", s
    assert b.running_tags() == [V1.tag] and not f.locked("api")
    left = [a for a in f.log if a[:3] == ["sh", "-c", backuphost.LEFTOVERS]]
    assert left and left[0][-1] == info.deploy_id
    kinds = [(r["id"], r.get("kind"), r["outcome"]) for r in f.history("api")]
    assert (info.deploy_id, "restore", "interrupted") in kinds


def test_the_in_place_restore_container_carries_the_attempt() -> None:
    from plainsail.backup import restore

    rec = {"id": "20260101T000000.000000Z-abcd", "sha256": "f" * 64}
    argv = restore.restore_argv(cfg(BACKUP), Paths("/h/.plainsail/api"), rec, "", "in-place",
                                None, attempt="20261206T000000Z-rs0001")
    assert "dev.plainsail.deploy-id=20261206T000000Z-rs0001" in argv


def test_a_backup_lock_is_described_without_a_tag() -> None:
    from plainsail.hosts.state import LockInfo

    info = LockInfo("20261206T000000Z-bk0001", "ann@laptop", "laptop", 1,
                    "2026-12-06T00:00:00Z", "", "laptop", kind="backup")
    assert "(backup, deploy 20261206T000000Z-bk0001, from laptop)" in info.describe()
    assert "(deploy of v2" in LockInfo("x", "a@b", "b", 1, "t", "v2", "o").describe()


def test_a_second_signal_waits_for_the_backups_clean_up(tmp_path: Path) -> None:
    """Ctrl-C twice: the first interrupts the backup, the second arrives while its
    clean-up runs and waits for it; the deploy ends interrupted with nothing left."""
    b = Bench(tmp_path, extra=BACKUP)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.fake.fail("backup", kind="signal")
    b.fake.fail("backup-clean", kind="signal")
    s = b.deploy(V2)
    assert s["outcome"] == "interrupted", s
    assert "backup-clean" not in b.fake.faults, "the clean-up was reached"
    assert_no_unfinished_backup(b.fake)
    assert not b.fake.locked("api") and b.running_tags() == [V1.tag]


def test_a_signal_during_restore_into_or_the_drill_lets_it_finish(tmp_path: Path) -> None:
    """Cut short, either would leave a half-made database on the server: a signal during
    the restore waits for its end, and the result says so."""
    from plainsail.backup import ops

    b = Bench(tmp_path, extra=BACKUP)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    bid = b.fake.history("api")[-1]["backup"]["id"]
    executors = {f.host.name: f.executor() for f in b.fakes}
    b.fake.fail("restore", kind="signal")
    done = ops.restore_into(b.cfg, bid, "api_copy", [], executors)
    assert done["outcome"] == "restored" and "let finish" in done["note"], done
    b.fake.fail("restore", kind="signal")
    drilled = ops.drill(b.cfg, [], executors)
    assert "let finish" in drilled["reason"] and len(b.fake.restored) == 2
    assert b.fake.history("api")[-1]["kind"] == "backup-drill"


def test_a_signal_before_restore_into_began_ends_it_with_nothing_done(
        tmp_path: Path) -> None:
    from plainsail.backup import ops

    b = Bench(tmp_path, extra=BACKUP)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    bid = b.fake.history("api")[-1]["backup"]["id"]
    b.fake.fail("backup-list", kind="signal")
    with pytest.raises(KeyboardInterrupt):
        ops.restore_into(b.cfg, bid, "api_copy", [],
                         {f.host.name: f.executor() for f in b.fakes})
    assert b.fake.restored == []


@pytest.mark.parametrize("with_openssl", [True, False])
def test_the_hosts_checksum_is_sha256_with_or_without_openssl(tmp_path: Path,
                                                               with_openssl: bool) -> None:
    """The backup and restore scripts' checksum: OpenSSL's when the host has it (faster),
    else coreutils' sha256sum; the same hex either way."""
    import hashlib
    import shutil
    import subprocess

    from plainsail.backup.host import SHA256_FN

    data = tmp_path / "d.dump"
    data.write_bytes(b"plainsail" * 100_000)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tools = ["sha256sum"] + (["openssl"] if with_openssl else [])
    for tool in tools:
        found = shutil.which(tool)
        assert found, f"{tool} is missing"
        (bindir / tool).symlink_to(found)
    res = subprocess.run(["/bin/sh", "-c", SHA256_FN + 'got=$(sum256 "$1") || exit 9; '
                          'echo "${got%% *}"', "sh", str(data)],
                         capture_output=True, text=True, env={"PATH": str(bindir)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == hashlib.sha256(data.read_bytes()).hexdigest()
