"""Every branch of the deploy engine, through the fake host: outcomes, restores, records,
locks and redaction, without Docker or SSH (the integration tests run the same code for
real)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from plainsail import secret as secretlib
from plainsail.config import model as configlib
from plainsail.config.model import NotifyTarget
from plainsail.deploy.outcomes import (
    ABORTED,
    FAILED_MIGRATION,
    INTERRUPTED,
    RESTORE_FAILED,
    RESTORED,
    SUCCEEDED,
    exit_code,
)
from plainsail.deploy.outcomes import (
    OUTCOMES as ALL_OUTCOMES,
)
from plainsail.deploy.plan import Request, Target
from plainsail.deploy.run import Deploy
from plainsail.errors import DeployError, PlainsailError
from plainsail.secret import Secret
from tests.support.fakehost import FakeExecutor, FakeHost

IMAGE = "registry.example.com/acme/api"
V1 = Target(IMAGE, "a1a1a1a1", "sha256:" + "a1" * 32, True)
V2 = Target(IMAGE, "b2b2b2b2", "sha256:" + "b2" * 32, True)
V3 = Target(IMAGE, "c3c3c3c3", "sha256:" + "c3" * 32, True)
TARGETS = {t.tag: t for t in (V1, V2, V3)}
OUTCOMES = set(ALL_OUTCOMES)
CLIENT = "registry.example.com/pg/client:15@sha256:" + "c" * 64
BACKUP = f"backup:\n  before: migrations\n  keep: 2\n  image: {CLIENT}\n"


class Bench:
    """A config on fake hosts, and deploys run against them."""

    def __init__(self, tmp: Path, service: str = "api", extra: str = "", nhosts: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.fakes = [FakeHost(f"ssh://deploy@web-{i + 1}") for i in range(nhosts)]
        hosts = ", ".join(f"'{f.host.name}'" for f in self.fakes)
        text = (f"service: {service}\nimage: {IMAGE}\nhosts: [{hosts}]\n"
                "app:\n  port: 8080\n  secrets: [DATABASE_URL]\n"
                "health:\n  attempts: 2\n  interval: 10ms\n  timeout: 1s\n"
                "migrate:\n  command: [migrate, up]\n" + extra)
        (tmp / "plainsail.yml").write_text(text)
        self.cfg = configlib.load(tmp / "plainsail.yml", {})
        self.env = env if env is not None else {"DATABASE_URL": "postgresql://app:pw123@db/app"}
        self.lines: list[str] = []
        self.tmp = tmp

    def deploy(self, target: Target, *, kind: str = "deploy", force: bool = False,
               skip_migrations: bool = False) -> dict[str, Any]:
        req = Request(ref=f"{target.tag}@{target.digest}", force=force, kind=kind,
                      skip_migrations=skip_migrations or kind == "rollback")
        d = Deploy(self.cfg, req, self.lines.append, environ=dict(self.env),
                   executors={f.host.name: f.executor() for f in self.fakes},
                   resolve=lambda cfg, r: TARGETS[str(r.ref).split("@")[0]])
        try:
            return d.run()
        except PlainsailError as exc:
            assert exc.record is not None, "a preflight failure carries its record"
            return exc.record

    def local_records(self) -> list[dict[str, Any]]:
        path = self.tmp / ".plainsail" / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    @property
    def fake(self) -> FakeHost:
        return self.fakes[0]

    def running_tags(self) -> list[str]:
        return sorted(c.labels.get("dev.plainsail.tag", "") for f in self.fakes
                      for c in f.containers.values() if c.status == "running")


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return Bench(tmp_path)


def test_first_and_second_deploy(bench: Bench) -> None:
    assert bench.deploy(V1)["outcome"] == SUCCEEDED
    s = bench.deploy(V2)
    assert s["outcome"] == SUCCEEDED and exit_code(s) == 0
    assert bench.running_tags() == [V2.tag]
    assert not bench.fake.locked("api")
    assert [r["outcome"] for r in bench.fake.history("api")] == [SUCCEEDED, SUCCEEDED]


def test_stop_old_failing_ends_in_a_named_outcome_not_blank(bench: Bench) -> None:
    bench.deploy(V1)
    bench.fake.fail("docker stop")
    s = bench.deploy(V2)
    assert s["outcome"] == RESTORED, s
    assert exit_code(s) == 1
    assert "stop-old failed" in s["reason"]
    assert bench.running_tags() == [V1.tag]
    assert bench.fake.history("api")[-1]["outcome"] == RESTORED
    assert all(h["outcome"] for h in s["per_host"])
    assert not bench.fake.locked("api")


def test_unexpected_error_after_the_switch_restores_records_and_unlocks(bench: Bench) -> None:
    bench.deploy(V1)
    # The gate looks up the new container's address: a bug there comes after the switch.
    bench.fake.fail("docker inspect", kind="crash")
    s = bench.deploy(V2)
    assert s["outcome"] == RESTORED, s
    assert "unexpected RuntimeError" in s["reason"] and "bug" in s["reason"]
    assert bench.running_tags() == [V1.tag]
    assert bench.fake.history("api")[-1]["outcome"] == RESTORED
    assert bench.local_records()[-1]["outcome"] == RESTORED
    assert not bench.fake.locked("api")


def test_a_path_http_cannot_send_fails_the_gate_instead_of_crashing(bench: Bench) -> None:
    bench.deploy(V1)
    health = dataclasses.replace(bench.cfg.health, path="/health/\u00e9")
    bench.cfg = dataclasses.replace(bench.cfg, health=health)
    s = bench.deploy(V2)
    assert s["outcome"] == RESTORE_FAILED  # the old version fails the same gate
    assert "ascii" in json.dumps(s["per_host"]).lower() or "ascii" in s["reason"].lower()
    assert not bench.fake.locked("api")


def test_a_secret_equal_to_names_and_paths_is_redacted_in_text_only(tmp_path: Path) -> None:
    # The DB password equals the service name, the SSH user, and a word in docker output.
    b = Bench(tmp_path, service="app1",
              env={"DATABASE_URL": "postgresql://deploy:app1@db/app1"})
    b.fake.home = "/home/deploy"
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s
    assert b.running_tags() == [V2.tag]
    rec = b.fake.history("app1")[-1]
    assert rec["service"] == "app1" and rec["container"] == f"app1-{V2.tag}"
    assert "/home/deploy/.plainsail/app1/env" in b.fake.files
    assert s["service"] == "app1"
    assert "app1" not in s["reason"] or "***" in s["reason"]
    assert "postgresql://deploy:app1@db/app1" not in "\n".join(b.lines)


def test_free_text_of_records_is_redacted(bench: Bench) -> None:
    bench.deploy(V1)
    bench.fake.healthy = lambda c: "pw123" not in c.env  # the new version leaks it in logs
    for c in bench.fake.containers.values():
        c.logs = ["connecting to postgresql://app:pw123@db/app failed"]
    bench.fake.migrate_exit = 1
    bench.fake.migrate_output = "FATAL: password pw123 rejected"
    s = bench.deploy(V2)
    assert s["outcome"] == FAILED_MIGRATION
    text = json.dumps(s) + json.dumps(bench.fake.history("api")) + "\n".join(bench.lines)
    assert "pw123" not in text and "***" in json.dumps(s["migration"])


def test_empty_secret_is_refused_before_anything_changes(tmp_path: Path) -> None:
    b = Bench(tmp_path, env={"DATABASE_URL": ""})
    s = b.deploy(V1)
    assert s["outcome"] == ABORTED and s["preflight"]
    assert "DATABASE_URL" in s["reason"] and "empty" in s["reason"]
    assert not b.fake.files and not b.fake.containers


def test_missing_network_is_refused_in_preflight(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra="")
    b.cfg = dataclasses.replace(b.cfg, app=dataclasses.replace(b.cfg.app, network="hots"))
    s = b.deploy(V1)
    assert s["outcome"] == ABORTED and s["preflight"]
    assert "app.network 'hots' does not exist" in s["reason"]
    assert not b.fake.containers


def published(b: Bench, port: int = 18080) -> Bench:
    b.cfg = dataclasses.replace(b.cfg, app=dataclasses.replace(b.cfg.app, publish=port))
    return b


@pytest.mark.parametrize("holder, words", [
    ("listen", "port 18080 is taken: a program listens on it"),
    ("f00d" * 16, "port 18080 is published by another container (f00df00df00d; docker ps "
                  "--filter publish=18080"),
])
def test_a_published_port_held_by_another_is_refused_before_anything_stops(
        tmp_path: Path, holder: str, words: str) -> None:
    """Stop-start would stop the old container and then fail to start the new one on a port
    something else holds (and a first deploy would leave nothing serving): refused in
    preflight, nothing created, the old container never touched."""
    b = published(Bench(tmp_path))
    b.fake.taken_ports[18080] = holder
    s = b.deploy(V1)
    assert s["outcome"] == ABORTED and s["preflight"], s["reason"]
    assert words in s["reason"] and "app.publish 18080" in s["reason"], s["reason"]
    assert "choose another app.publish" in s["reason"]
    assert not b.fake.containers
    del b.fake.taken_ports[18080]
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    if holder != "listen":  # a program cannot listen where the service's container does
        b.fake.taken_ports[18080] = holder
        before = {n: c.status for n, c in b.fake.containers.items()}
        s = b.deploy(V2)
        assert s["outcome"] == ABORTED and words in s["reason"], s["reason"]
        assert {n: c.status for n, c in b.fake.containers.items()} == before
        assert b.running_tags() == [V1.tag]
        del b.fake.taken_ports[18080]
    b.fake.taken_ports[18081] = holder  # another port: nothing to say
    assert b.deploy(V2)["outcome"] == SUCCEEDED  # the port the service's own container
    assert b.running_tags() == [V2.tag]  # holds is its to take over


def test_the_hosts_network_port_held_by_a_program_is_refused(tmp_path: Path) -> None:
    """With the host's network the app listens on app.port itself: a program there (and no
    container of the service running) is refused; the service's own running container is
    taken to be the listener."""
    b = Bench(tmp_path)
    b.cfg = dataclasses.replace(b.cfg, app=dataclasses.replace(b.cfg.app, network="host"))
    b.fake.taken_ports[8080] = "listen"
    s = b.deploy(V1)
    assert s["outcome"] == ABORTED and s["preflight"], s["reason"]
    assert "app.port 8080: port 8080 is taken: a program listens on it" in s["reason"]
    assert "could not listen on it" in s["reason"] and not b.fake.containers
    del b.fake.taken_ports[8080]
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    assert b.deploy(V2)["outcome"] == SUCCEEDED


def test_restore_after_a_rotated_secret_uses_todays_environment(bench: Bench) -> None:
    bench.deploy(V1)
    # The DB password was rotated: only the new one works, for any version of the app.
    bench.env = {"DATABASE_URL": "postgresql://app:rotated9@db/app"}
    bench.fake.healthy = lambda c: "rotated9" in c.env and c.labels[
        "dev.plainsail.tag"] != V2.tag
    s = bench.deploy(V2)
    assert s["outcome"] == RESTORED, s
    assert "today's environment" in s["reason"]
    running = [c for c in bench.fake.containers.values() if c.status == "running"]
    assert len(running) == 1 and running[0].labels["dev.plainsail.tag"] == V1.tag
    assert "rotated9" in running[0].env


def test_restore_after_a_wrong_new_secret_falls_back_to_the_previous_environment(
        bench: Bench) -> None:
    bench.deploy(V1)
    bench.env = {"DATABASE_URL": "postgresql://app:typo@db/app"}
    bench.fake.healthy = lambda c: "pw123" in c.env
    s = bench.deploy(V2)
    assert s["outcome"] == RESTORED, s
    assert "with its previous environment" in s["reason"]
    assert "with today's environment failed its health gate" in s["reason"]
    running = [c for c in bench.fake.containers.values() if c.status == "running"]
    assert [c.labels["dev.plainsail.tag"] for c in running] == [V1.tag]
    assert "pw123" in running[0].env


def test_restore_failure_quotes_the_log(bench: Bench) -> None:
    bench.deploy(V1)
    bench.fake.healthy = lambda c: False
    orig = bench.fake.executor  # logs for every container the restore may start

    def with_logs(secrets: Any = ()) -> Any:
        for c in bench.fake.containers.values():
            c.logs = ["starting", "relation \"notes\" has no column \"archived\""]
        return orig(secrets)

    bench.fake.executor = with_logs  # type: ignore[method-assign]
    s = bench.deploy(V2)
    assert s["outcome"] == RESTORE_FAILED
    assert 'has no column \\"archived\\"' in json.dumps(s["reason"])
    assert "schema?" not in s["reason"]


def test_force_redeploys_do_not_fill_the_rollback_slots(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra="retain: 2\n")
    b.deploy(V1)
    b.deploy(V2)
    for _ in range(3):
        assert b.deploy(V2, force=True)["outcome"] == SUCCEEDED
    stopped = [c for c in b.fake.containers.values() if c.status != "running"]
    assert [c.labels["dev.plainsail.tag"] for c in stopped] == [V1.tag]


def test_a_failed_host_record_is_loud_and_kept_locally(bench: Bench) -> None:
    bench.deploy(V1)
    bench.fake.fail("history")
    s = bench.deploy(V2)
    assert s["outcome"] == SUCCEEDED and s["unrecorded_hosts"] == [bench.fake.host.name]
    assert any(line.startswith("error: ") and "could not be stored on the host" in line
               for line in bench.lines)
    assert bench.local_records()[-1]["unrecorded_hosts"] == [bench.fake.host.name]


def test_a_broken_webhook_never_crashes_a_deploy(bench: Bench) -> None:
    bench.cfg = dataclasses.replace(
        bench.cfg, notify=[NotifyTarget(Secret("http://127.0.0.1:abc/hook-token-123"))])
    s = bench.deploy(V1)
    assert s["outcome"] == SUCCEEDED


def test_restore_of_a_fleet_when_the_second_host_fails(tmp_path: Path) -> None:
    b = Bench(tmp_path, nhosts=2)
    b.deploy(V1)
    b.fakes[1].healthy = lambda c: c.labels["dev.plainsail.tag"] != V2.tag
    s = b.deploy(V2)
    assert s["outcome"] == RESTORED
    assert b.running_tags() == [V1.tag, V1.tag]
    assert [h["outcome"] for h in s["per_host"]] == [RESTORED, RESTORED]


def test_a_signal_during_docker_run_waits_for_it_then_unwinds(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while `docker run` creates the new container: the command finishes on the
    host (as a real one does after the deployer let go of it), then the deploy unwinds and
    removes what it made; no unrouted container of the new version is left running."""
    done: list[list[str]] = []
    real_do = FakeExecutor._do

    def recording(self: FakeExecutor, argv: list[str], stdin: str | None) -> Any:
        done.append(argv)
        return real_do(self, argv, stdin)

    monkeypatch.setattr(FakeExecutor, "_do", recording)
    assert bench.deploy(V1)["outcome"] == SUCCEEDED
    bench.fake.fail("docker run", kind="signal")
    s = bench.deploy(V2)
    assert s["outcome"] == INTERRUPTED and exit_code(s) == 130
    runs = [i for i, a in enumerate(done) if a[:2] == ["docker", "run"] and "--detach" in a]
    new = done[runs[-1]][done[runs[-1]].index("--name") + 1]
    assert V2.tag in new  # the signalled command did run on the host...
    later = [a for a in done[runs[-1] + 1:] if new in a and a[1] in ("stop", "rm")]
    assert later, "...and the unwind dealt with the container it made"
    assert bench.running_tags() == [V1.tag]
    assert not bench.fake.locked("api")


# ---------------------------------------------------------------- the fault matrix

STEPS = ["survey", "lock+env", "docker pull", "backup", "migrate",
         "docker stop", "docker run", "docker inspect", "docker start", "docker rm",
         "history", "unlock"]
FAULTS = ["fail", "timeout", "drop", "crash", "signal"]
DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


def fault_cell(tmp: Path, step: str, fault: str) -> str:
    """Deploy v2 over v1 with one fault injected; check the promises; return the outcome."""
    b = Bench(tmp, extra=BACKUP if step == "backup" else "")
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    # A failed gate makes the restore path (docker start, docker rm) reachable.
    if step in ("docker start", "docker rm"):
        b.fake.healthy = lambda c: c.labels["dev.plainsail.tag"] != V2.tag
    b.fake.fail(step, kind=fault)
    try:
        s = b.deploy(V2)
    except RuntimeError:  # a bug before anything changed: the CLI's exit 3 and crash log
        assert fault == "crash" and step == "survey"
        assert b.running_tags() == [V1.tag] and not b.fake.locked("api")
        return "bug before any change (exit 3)"
    outcome = str(s["outcome"])
    assert outcome in OUTCOMES, s
    code = exit_code(s)
    assert code == (0 if outcome in ("succeeded", "unchanged", "recovered") else
                    130 if outcome == INTERRUPTED else 1)
    assert b.local_records()[-1]["outcome"] == outcome
    if not s.get("preflight") and step != "history":
        assert b.fake.history("api")[-1]["id"] == s["id"]
    if step != "unlock":
        assert not b.fake.locked("api"), "the lock must be released"
    if outcome != RESTORE_FAILED:
        expected = V2.tag if outcome == SUCCEEDED else V1.tag
        assert b.running_tags() == [expected], (outcome, b.running_tags())
    if step == "backup":
        assert_no_unfinished_backup(b.fake)
        assert not any(a[:2] == ["docker", "run"] and V2.tag in " ".join(a)
                       for a in b.fake.log), "no migration, no new container"
    label = f"{outcome} (exit {code})"
    if s.get("preflight"):
        label += ", in preflight"
    if step == "unlock" and b.fake.locked("api"):
        label += ", lock left: named with its holder"
    if step == "history" and s.get("unrecorded_hosts"):
        label += ", host record missing: said loudly, kept locally"
    return label


def assert_no_unfinished_backup(fake: FakeHost) -> None:
    """Every dump on the host has its description (a good backup); nothing else is left."""
    files = [k for k in fake.files if "/backups/" in k]
    assert not [k for k in files if k.rsplit("/", 1)[1].startswith(".")], files
    dumps = {k.removesuffix(".dump") for k in files if k.endswith(".dump")}
    assert dumps == {k.removesuffix(".json") for k in files if k.endswith(".json")}, files


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", STEPS)
def test_fault_matrix(tmp_path: Path, step: str, fault: str) -> None:
    """Each step x each fault: a defined outcome, its exit code, a record, the lock
    released, and the last good version serving unless the outcome says it is not."""
    fault_cell(tmp_path, step, fault)


def render_matrix(tmp: Path) -> str:
    rows = ["| step | " + " | ".join(FAULTS) + " |", "|---" * (len(FAULTS) + 1) + "|"]
    for step in STEPS:
        cells = []
        for fault in FAULTS:
            d = tmp / f"{step}-{fault}".replace(" ", "_")
            d.mkdir()
            cells.append(fault_cell(d, step, fault))
        rows.append(f"| `{step}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def test_reliability_doc_shows_the_matrix(tmp_path: Path) -> None:
    """docs/reliability.md carries the matrix these tests produce (regenerate it with
    PLAINSAIL_UPDATE_DOCS=1)."""
    import os

    table = render_matrix(tmp_path)
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    fresh = text[:start] + "\n" + table + "\n" + text[end:]
    if os.environ.get("PLAINSAIL_UPDATE_DOCS") == "1" and text != fresh:
        DOC.write_text(fresh)
        text = fresh
    assert text == fresh, "docs/reliability.md is out of date: PLAINSAIL_UPDATE_DOCS=1 pytest"


def test_secret_registry_sees_every_secret() -> None:
    secretlib.forget_all()
    Secret("zz-unique-value")
    assert secretlib.scrub("a zz-unique-value b") == "a *** b"


# ---------------------------------------------------------------- recover


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _killed_mid_switch(b: Bench) -> str:
    """The state a SIGKILLed deployer leaves: v1 stopped, v2 started, the lock, no record."""
    import socket

    from plainsail.hosts.state import LockInfo

    f = b.fake
    for c in f.containers.values():
        c.status = "exited"
    ex = f.executor()
    ex.run(["docker", "run", "--detach", "--name", f"api-{V2.tag}", "--label",
            "dev.plainsail.service=api", "--label", "dev.plainsail.role=app", "--label",
            f"dev.plainsail.tag={V2.tag}", "--label", f"dev.plainsail.digest={V2.digest}",
            "--label", "dev.plainsail.deploy-id=20260101T000000Z-dead01", V2.pinned])
    info = LockInfo("20260101T000000Z-dead01", "ann@laptop", socket.gethostname(),
                    _dead_pid(), "2026-01-01T00:00:00Z", V2.tag, "laptop")
    lock = f"{f.home}/.plainsail/api/lock"
    f.dirs.add(lock)
    f.files[f"{lock}/info.json"] = json.dumps(info.__dict__)
    return info.deploy_id


def test_recover_puts_the_last_good_version_back_and_records_both(bench: Bench) -> None:
    from plainsail.deploy.recover import recover

    bench.deploy(V1)
    dead = _killed_mid_switch(bench)
    # The next deploy is refused and names the interrupted attempt.
    s = bench.deploy(V3)
    assert s["outcome"] == ABORTED and dead in s["reason"]
    bench.fake.healthy = lambda c: c.labels["dev.plainsail.tag"] == V1.tag
    s = recover(bench.cfg, report=bench.lines.append, environ=dict(bench.env),
                executors={bench.fake.host.name: bench.fake.executor()})
    assert s["outcome"] == "recovered" and exit_code(s) == 0, s
    assert s["recovered_from"] == dead
    assert bench.running_tags() == [V1.tag]
    assert not bench.fake.locked("api")
    outcomes = [(r["id"], r["outcome"]) for r in bench.fake.history("api")]
    assert (dead, INTERRUPTED) in outcomes and outcomes[-1][1] == "recovered"
    # Nothing left to recover.
    with pytest.raises(PlainsailError, match="nothing to recover"):
        recover(bench.cfg, environ=dict(bench.env),
                executors={bench.fake.host.name: bench.fake.executor()})


def test_recover_refuses_a_lock_whose_holder_may_be_alive(bench: Bench) -> None:
    import os
    import socket

    from plainsail.deploy.recover import recover
    from plainsail.hosts.state import LockInfo

    bench.deploy(V1)
    lock = f"{bench.fake.home}/.plainsail/api/lock"
    bench.fake.dirs.add(lock)
    info = LockInfo("20260101T000000Z-live01", "bob@ci", socket.gethostname(), os.getpid(),
                    "2026-01-01T00:00:00Z", V2.tag, "ci")
    bench.fake.files[f"{lock}/info.json"] = json.dumps(info.__dict__)
    with pytest.raises(PlainsailError, match="may still be running"):
        recover(bench.cfg, environ=dict(bench.env),
                executors={bench.fake.host.name: bench.fake.executor()})
    assert bench.fake.locked("api")


# ---------------------------------------------------------------- accepted configs deploy

def _deploy_on_fakes(cfg: configlib.Config, tmp: Path) -> list[dict[str, Any]]:
    """Deploy V1 then V2 with `cfg` on one fake host per configured host."""
    from plainsail.hosts.addresses import parse_host

    fakes = {h: FakeHost(h) for h in cfg.hosts}
    for f in fakes.values():
        f.host = parse_host(f.host.name)
    cfg = dataclasses.replace(cfg, path=tmp / "plainsail.yml")
    env = {name: f"value-of-{name}" for name in cfg.app.secrets}
    out = []
    for target in (V1, V2):
        req = Request(ref=f"{target.tag}@{target.digest}")
        d = Deploy(dataclasses.replace(cfg, image=IMAGE), req, lambda line: None, environ=env,
                   executors={h: f.executor() for h, f in fakes.items()},
                   resolve=lambda c, r, t=target: t)
        try:
            out.append(d.run())
        except PlainsailError as exc:
            assert exc.record is not None and exc.record["preflight"], exc
            out.append(exc.record)
    return out


def test_every_accepted_config_deploys_or_stops_in_preflight(tmp_path: Path) -> None:
    """Configs that `config check` accepts (mutations of a full config) either deploy or
    fail in preflight, never after a container was stopped: the fake hosts are healthy, so
    any other outcome is a value that passed the check and then broke the deploy."""
    import copy

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.test_config_fuzz import BASE, ENV, _dump, _set, examples, mutation

    seen = {"accepted": 0}

    @settings(max_examples=examples(300), deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(st.lists(mutation, max_size=3))
    def run(mutations: list[tuple[Any, Any, bool]]) -> None:
        data = copy.deepcopy(BASE)
        data.pop("notify", None)  # no network from a unit test
        for path, value, delete in mutations:
            _set(data, path, value, delete)
        try:
            cfg = configlib.parse(_dump(data, False), tmp_path / "plainsail.yml", ENV)
        except configlib.ConfigError:
            return
        cfg = dataclasses.replace(cfg, notify=[])
        seen["accepted"] += 1
        for s in _deploy_on_fakes(cfg, tmp_path):
            assert s["outcome"] in (SUCCEEDED, "unchanged") or s.get("preflight"), s

    run()
    assert seen["accepted"] > examples(300) // 6


# ---------------------------------------------------------------- the plan


def _attempt(b: Bench, target: Target, **kw: Any) -> Deploy:
    req = Request(ref=f"{target.tag}@{target.digest}", **kw)
    d = Deploy(b.cfg, req, b.lines.append, environ=dict(b.env),
               executors={f.host.name: f.executor() for f in b.fakes},
               resolve=lambda cfg, r: target)
    d.run()
    return d


def test_the_deploy_runs_exactly_its_plan_and_the_dry_run_shows_it(tmp_path: Path) -> None:
    b = Bench(tmp_path, extra="retain: 0\n")
    b.deploy(V1)
    b.deploy(V2)
    dry = _attempt(b, V3, dry_run=True)
    shown = [line for line in b.lines if line.startswith("  ")]
    b.fake.log.clear()
    d = _attempt(b, V3)
    planned = [s.argv for s in d.runs[0].plan.steps if s.argv is not None]
    ran = [a for a in b.fake.log[1:]  # after the survey
           if a[:2] != ["docker", "inspect"]]  # the gate's address lookup
    assert ran == [a for a in planned if a not in (b.fake.log[0],)]
    names = [s.name for s in d.runs[0].plan.steps]
    assert names == ["lock+env", "pull", "migrate", "stop-old", "start-new", "gate", "prune",
                     "prune-images", "record", "unlock"]
    # The dry run rendered the same steps, in the same order, changing nothing.
    assert [line.split(":")[0].strip() for line in shown] == names
    assert [s.name for s in dry.runs[0].plan.steps] == names


# ---------------------------------------------------------------- behind the proxy

PROXY = ("proxy:\n  host: api.example.com\n  tls: internal\n"
         "  image: plainsail-caddy:local@sha256:" + "c0" * 32 + "\n")


class ProxyBench(Bench):
    def __init__(self, tmp: Path, nhosts: int = 1, extra: str = "") -> None:
        from tests.support.fakehost import FakeProxy

        super().__init__(tmp, extra=PROXY + extra, nhosts=nhosts)
        self.proxy = FakeProxy()
        for f in self.fakes:
            f.networks.add("plainsail")
            self.proxy.watch(f, "api")

    def deploy(self, target: Target, *, kind: str = "deploy", force: bool = False,
               skip_migrations: bool = False) -> dict[str, Any]:
        req = Request(ref=f"{target.tag}@{target.digest}", force=force, kind=kind,
                      skip_migrations=skip_migrations or kind == "rollback")
        d = Deploy(self.cfg, req, self.lines.append, environ=dict(self.env),
                   executors={f.host.name: f.executor() for f in self.fakes},
                   resolve=lambda cfg, r: TARGETS[str(r.ref).split("@")[0]],
                   proxy=self.proxy)
        try:
            return d.run()
        except PlainsailError as exc:
            assert exc.record is not None
            return exc.record

    def routed_tag(self, i: int = 0) -> str | None:
        c = self.proxy.routed(self.fakes[i], "api")
        return c.labels["dev.plainsail.tag"] if c else None


def test_proxy_upgrade_switches_the_route_with_no_outage(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s
    assert b.routed_tag() == V2.tag and b.running_tags() == [V2.tag]
    assert b.proxy.outages == []
    rec = b.fake.history("api")[-1]
    steps = [st["name"] for st in rec["steps"]]
    assert steps.index("route") < steps.index("drain") < steps.index("stop-old")
    assert rec["in_flight_at_switch"] == 2
    argv = next(a for a in b.fake.log if a[:3] == ["docker", "run", "--detach"])
    assert argv[argv.index("--network") + 1] == "plainsail" and "--publish" not in argv


def test_proxy_boot_warning_is_shown_and_changes_nothing(tmp_path: Path) -> None:
    """A proxy started by an earlier plainsail (without tcp_migrate_req): the deploy says
    so, once per host, and goes on."""
    b = ProxyBench(tmp_path)
    b.proxy.boot_warning = "the proxy plainsail-proxy runs without net.ipv4.tcp_migrate_req=1"
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s
    shown = [line for line in b.lines if "tcp_migrate_req" in line]
    assert len(shown) == 1 and "warning: the proxy plainsail-proxy" in shown[0], b.lines


def test_proxy_failed_gate_keeps_the_old_version_serving(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    b.fake.healthy = lambda c: c.labels["dev.plainsail.tag"] != V2.tag
    b.fake.log.clear()
    b.proxy.calls.clear()
    s = b.deploy(V2)
    assert s["outcome"] == "failed-health-old-kept" and exit_code(s) == 1, s
    assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag]
    assert not any(a[:2] == ["docker", "stop"] and f"api-{V1.tag}" in a for a in b.fake.log)
    assert f"api-{V2.tag}" not in b.fake.containers  # removed
    assert b.proxy.outages == [] and "route_to" not in b.proxy.calls


def test_proxy_check_through_failure_routes_back(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    b.proxy.faults["check_through"] = "fail"
    s = b.deploy(V2)
    assert s["outcome"] == RESTORED, s
    assert "route points at" in s["reason"] and "never stopped" in s["reason"]
    assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag]
    assert b.proxy.outages == []


def test_proxy_route_overlap_in_preflight_changes_nothing(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    b.fake.log.clear()
    b.proxy.calls.clear()
    b.proxy.faults["preflight"] = "fail"  # as plainsail.proxy.preflight refuses an overlap
    s = b.deploy(V2)
    assert s["outcome"] == ABORTED and s["preflight"], s
    assert b.proxy.calls == ["preflight"] and b.routed_tag() == V1.tag
    assert not any(a[:2] in (["docker", "run"], ["docker", "stop"]) for a in b.fake.log)


def test_proxy_check_through_names_the_new_container(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    real_route = b.proxy.route_to
    # The route change "succeeds" but the proxy keeps answering from the old container.
    b.proxy.route_to = lambda ex, cfg, container: real_route(ex, cfg, f"api-{V1.tag}")
    s = b.deploy(V2)
    assert s["outcome"] == RESTORED, s
    assert "check-through" in s["reason"] or any(
        st["name"] == "check-through" and not st["ok"] for h in s["per_host"]
        for st in h["steps"])


def test_proxy_second_host_failing_routes_the_first_back(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path, nhosts=2)
    b.deploy(V1)
    b.fakes[1].healthy = lambda c: c.labels["dev.plainsail.tag"] != V2.tag
    s = b.deploy(V2)
    assert [h["outcome"] for h in s["per_host"]] == [RESTORED, "failed-health-old-kept"]
    assert b.routed_tag(0) == V1.tag and b.routed_tag(1) == V1.tag
    assert b.running_tags() == [V1.tag, V1.tag]


@pytest.mark.parametrize(("where", "kind"), [
    (where, kind) for where in ("ensure_booted", "route_to", "check_through", "drain")
    for kind in ("fail", "crash") if (where, kind) != ("route_to", "fail")
] + [("route_to", "down")])
def test_proxy_faults_end_defined_with_the_old_version_routed(tmp_path: Path, where: str,
                                                              kind: str) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    b.proxy.faults[where] = kind
    s = b.deploy(V2)
    assert s["outcome"] in OUTCOMES and s["outcome"] != SUCCEEDED, s
    if kind == "down":
        # The proxy cannot be changed at all: neither container is removed, so the route
        # points at a running one whatever it is.
        assert s["outcome"] == RESTORE_FAILED and "left running" in s["reason"], s
        assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag, V2.tag], s
    else:
        assert b.routed_tag() == V1.tag and b.running_tags() == [V1.tag], s
    assert not b.fake.locked("api") and b.fake.history("api")[-1]["outcome"] == s["outcome"]
    assert b.proxy.outages == []


def test_proxy_failing_once_at_the_switch_is_booted_again_and_the_switch_goes_on(
        tmp_path: Path) -> None:
    """The proxy stopped or lost its admin socket after the proxy-boot step: the route
    change boots it again (idempotent) and tries once more."""
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    b.proxy.calls.clear()
    b.proxy.faults["route_to"] = "fail"
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s
    assert b.proxy.calls[:5] == ["preflight", "ensure_booted", "route_to", "ensure_booted",
                                 "route_to"]
    assert b.routed_tag() == V2.tag and b.running_tags() == [V2.tag]
    assert b.proxy.outages == []
    assert any("booting it again" in line for line in b.lines)


def test_proxy_with_other_settings_is_refused_in_preflight(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    b.proxy.faults["preflight"] = "fail"
    b.fake.log.clear()
    s = b.deploy(V2)
    assert s["outcome"] == "aborted" and s["preflight"], s
    assert not any(a[:2] in (["docker", "run"], ["docker", "pull"]) for a in b.fake.log)
    assert b.routed_tag() == V1.tag and not b.fake.locked("api")


def test_proxy_first_deploy_failing_says_down(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    b.fake.healthy = lambda c: False
    s = b.deploy(V1)
    assert s["outcome"] == RESTORE_FAILED and "DOWN" in s["reason"]


def test_proxy_force_redeploy_of_the_running_tag_never_renames_the_routed_one(
        tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    s = b.deploy(V1, force=True)
    assert s["outcome"] == SUCCEEDED and b.proxy.outages == []
    assert not any(a[:2] == ["docker", "rename"] for a in b.fake.log)
    assert b.routed_tag() == V1.tag


def test_proxy_first_deploy_on_a_pristine_host_boots_the_proxy_before_the_migration(
        tmp_path: Path) -> None:
    """A fresh host has no proxy and no proxy network: the boot (which creates it) comes
    before the migration container that joins it."""
    b = ProxyBench(tmp_path)
    b.fake.networks.discard("plainsail")
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s
    steps = [st["name"] for st in b.fake.history("api")[-1]["steps"]]
    assert steps.index("proxy-boot") < steps.index("migrate"), steps
    assert b.routed_tag() == V1.tag


def test_a_failed_migration_says_dockers_error_line_not_its_usage_hint(bench: Bench) -> None:
    bench.cfg = dataclasses.replace(bench.cfg, app=dataclasses.replace(
        bench.cfg.app, network="bridge"))
    bench.fake.networks.discard("bridge")  # gone between the survey and the migration
    s = bench.deploy(V1)
    assert s["outcome"] == FAILED_MIGRATION, s
    assert "network bridge not found" in s["reason"], s["reason"]
    assert "--help" not in s["reason"]


# ---------------------------------------------------------------- unchanged means the same settings


def test_a_rotated_secret_redeploys_the_same_image_and_names_what_changed(bench: Bench) -> None:
    assert bench.deploy(V1)["outcome"] == SUCCEEDED
    assert bench.deploy(V1)["outcome"] == "unchanged"  # nothing differs: nothing to do
    bench.env = {"DATABASE_URL": "postgresql://app:rotated9@db/app"}
    s = bench.deploy(V1)
    assert s["outcome"] == SUCCEEDED and exit_code(s) == 0, s
    assert "settings changed: DATABASE_URL (secret)" in s["reason"], s["reason"]
    assert s["per_host"][0]["settings_changed"] == "DATABASE_URL (secret)"
    running = [c for c in bench.fake.containers.values() if c.status == "running"]
    assert len(running) == 1 and "rotated9" in running[0].env
    assert running[0].labels["dev.plainsail.tag"] == V1.tag
    assert any("settings changed since a1a1a1a1 started: DATABASE_URL (secret); a1a1a1a1 is "
               "redeployed in a new container" in line for line in bench.lines), bench.lines
    text = json.dumps(s) + json.dumps(bench.fake.history("api")) + "\n".join(bench.lines)
    labels = json.dumps([c.labels for c in bench.fake.containers.values()])
    assert "rotated9" not in text + labels and "pw123" not in text + labels
    assert bench.deploy(V1)["outcome"] == "unchanged"


def test_a_changed_option_or_variable_is_named_and_a_new_version_says_so_too(
        bench: Bench) -> None:
    bench.deploy(V1)
    app = dataclasses.replace(bench.cfg.app, command=["serve", "--workers", "4"],
                              env={"LOG_LEVEL": "debug"})
    bench.cfg = dataclasses.replace(bench.cfg, app=app)
    s = bench.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s
    assert s["per_host"][0]["settings_changed"] == "LOG_LEVEL, app.command"
    s = bench.deploy(V2)  # a new image with the same settings: nothing to name
    assert s["outcome"] == SUCCEEDED and s["per_host"][0]["settings_changed"] is None


def test_a_container_without_the_settings_label_is_redeployed_when_its_env_differs(
        bench: Bench) -> None:
    bench.deploy(V1)
    for c in bench.fake.containers.values():
        c.labels.pop("dev.plainsail.settings")  # made by an earlier plainsail
    bench.env = {"DATABASE_URL": "postgresql://app:rotated9@db/app"}
    s = bench.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s
    assert "predates" in s["per_host"][0]["settings_changed"]


def test_an_ssh_drop_during_the_gate_is_no_missing_container(bench: Bench) -> None:
    """The container check between attempts fails because the connection dropped (exit
    255): the gate goes on (over a new connection) instead of calling the container
    missing; when it never comes back the reason says the connection dropped."""
    bench.deploy(V1)
    seen: list[str] = []

    def healthy(c: Any) -> bool:
        if c.labels["dev.plainsail.tag"] != V2.tag:
            return True
        seen.append(c.name)
        if len(seen) == 1:  # the first attempt fails, and the check after it drops
            bench.fake.fail("docker container", "drop")
            return False
        return True

    bench.fake.healthy = healthy
    s = bench.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s
    assert len(seen) == 2

    bench.fake.healthy = lambda c: c.labels["dev.plainsail.tag"] != V3.tag
    bench.fake.fail("docker container", "drop", times=2)
    s = bench.deploy(V3)
    assert s["outcome"] == RESTORED, s
    assert "the SSH connection to the host dropped" in s["reason"]
    assert "missing" not in s["reason"]


def test_rollback_with_a_damaged_history_names_no_target_by_itself(bench: Bench) -> None:
    from plainsail.deploy.rollback import choose_release

    bench.deploy(V1)
    bench.deploy(V2)
    path = f"{bench.fake.home}/.plainsail/api/history.jsonl"
    bench.fake.files[path] += '{"id": "torn", "outcome": "succ'  # a write cut short
    bench.deploy(V1, force=True)
    executors = {f.host.name: f.executor() for f in bench.fakes}
    with pytest.raises(DeployError) as err:
        choose_release(bench.cfg, [], None, executors, warn=print)
    assert "1 line(s) of the deploy history cannot be read (line 3)" in str(err.value)
    assert "name it with --to TAG" in str(err.value) and V2.tag in str(err.value)
    assert choose_release(bench.cfg, [], V2.tag, executors, warn=print).tag == V2.tag


def test_rollback_runs_the_target_with_the_settings_it_ran_with(bench: Bench) -> None:
    from plainsail.deploy.rollback import choose_release, release_settings

    def configure(command: list[str], feature: str) -> None:
        app = dataclasses.replace(bench.cfg.app, command=command, env={"FEATURE": feature})
        bench.cfg = dataclasses.replace(bench.cfg, app=app)

    configure(["serve"], "old")
    bench.deploy(V1)
    configure(["serve", "--broken-flag"], "new")  # the bad release is a config change
    assert bench.deploy(V2)["outcome"] == SUCCEEDED
    bench.env = {"DATABASE_URL": "postgresql://app:rotated9@db/app"}  # rotated since
    executors = {f.host.name: f.executor() for f in bench.fakes}
    choice = choose_release(bench.cfg, [], None, executors, warn=print)
    then, said = release_settings(bench.cfg, choice)
    assert choice.tag == V1.tag and then.app.command == ["serve"]
    assert said.startswith(f"{V1.tag} runs with the app settings it ran with (deploy ")
    assert "differ from today's in: app.command, FEATURE; secrets keep today's values" in said
    req = Request(ref=f"{V1.tag}@{V1.digest}", force=True, kind="rollback",
                  skip_migrations=True, settings_from=said)
    s = Deploy(then, req, bench.lines.append, environ=dict(bench.env), executors=executors,
               resolve=lambda cfg, r: V1).run()
    assert s["outcome"] == SUCCEEDED and s["settings_from"] == said, s
    running = [c for c in bench.fake.containers.values() if c.status == "running"]
    assert [c.labels["dev.plainsail.tag"] for c in running] == [V1.tag]
    assert "FEATURE=old" in running[0].env and "rotated9" in running[0].env
    rec = bench.fake.history("api")[-1]
    assert rec["settings"]["command"] == ["serve"] and rec["settings"]["env"] == {
        "FEATURE": "old"}
    assert rec["settings"]["secrets"] == ["DATABASE_URL"]
    assert "rotated9" not in json.dumps(bench.fake.history("api")) + said


def test_rollback_to_a_release_recorded_without_settings_says_it_uses_todays(
        bench: Bench) -> None:
    from plainsail.deploy.rollback import Choice, release_settings

    then, said = release_settings(bench.cfg, Choice(V1.tag, V1.digest, V2.tag, {"id": "x"}))
    assert then is bench.cfg and "runs with today's settings" in said


# ---------------------------------------------------------------- evidence where the person looks


def test_a_failed_gate_shows_the_last_body_and_log_lines_redacted(bench: Bench) -> None:
    bench.deploy(V1)
    bench.fake.healthy = lambda c: c.labels["dev.plainsail.tag"] != V2.tag
    bench.fake.app_logs = lambda c: [
        "booting", "FATAL: connect to postgresql://app:pw123@db/app failed", "giving up"]
    s = bench.deploy(V2)
    assert s["outcome"] == RESTORED, s
    assert "answered 500, expected 200; the body: db error" in s["reason"], s["reason"]
    assert "its log ends with: giving up" in s["reason"]
    shown = "\n".join(bench.lines)
    assert f"the last 3 line(s) of api-{V2.tag}'s log:" in shown, shown
    assert "  | FATAL: connect to *** failed" in shown and "  | giving up" in shown
    rec = bench.fake.history("api")[-1]
    assert "giving up" in rec["reason"] and "FATAL: connect to *** failed" in rec["log_tail"]
    assert "pw123" not in shown + json.dumps(s) + json.dumps(bench.fake.history("api"))


def test_a_crashed_container_shows_its_log_behind_the_proxy_too(tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)

    def crashes(c: Any) -> bool:
        if c.labels["dev.plainsail.tag"] != V2.tag:
            return True
        c.status = "exited"
        return False

    b.fake.healthy = crashes
    b.fake.app_logs = lambda c: ["Traceback (most recent call last):",
                                 "RuntimeError: refusing to start without FEATURE_X"]
    s = b.deploy(V2)
    assert s["outcome"] == "failed-health-old-kept", s
    assert "the container is exited" in s["reason"]
    assert "its log ends with: RuntimeError: refusing to start without FEATURE_X" in s["reason"]
    assert "  | RuntimeError: refusing to start without FEATURE_X" in "\n".join(b.lines)


def test_behind_the_proxy_the_deploy_runs_its_plan_in_order_and_boots_before_migrating(
        tmp_path: Path) -> None:
    b = ProxyBench(tmp_path)
    b.deploy(V1)
    d = Deploy(b.cfg, Request(ref=f"{V2.tag}@{V2.digest}"), b.lines.append,
               environ=dict(b.env), executors={f.host.name: f.executor() for f in b.fakes},
               resolve=lambda cfg, r: V2, proxy=b.proxy)
    assert d.run()["outcome"] == SUCCEEDED
    planned = [s.name for s in d.runs[0].plan.steps]
    assert planned.index("proxy-boot") < planned.index("migrate") < planned.index("start-new")
    ran = [st["name"] for st in b.fake.history("api")[-1]["steps"]
           if not st["name"].startswith("health:")]
    assert ran == [n for n in planned if n in ran and n not in ("record", "unlock")], ran


@pytest.mark.parametrize("volume", ["/home/deploy/.plainsail/_proxy:/run/x",
                                    "/home/deploy/.plainsail/api/../api:/data:ro",
                                    "/home/deploy:/home"])
def test_a_volume_of_plainsails_own_state_is_refused_before_anything_changes(
        tmp_path: Path, volume: str) -> None:
    b = Bench(tmp_path, extra="host_dir: ~/.plainsail\n")
    b.cfg = dataclasses.replace(b.cfg, app=dataclasses.replace(b.cfg.app, volumes=[volume]))
    s = b.deploy(V1)
    assert s["outcome"] == ABORTED and s["preflight"], s
    assert "mounts plainsail's own state (/home/deploy/.plainsail on this host" in s["reason"]
    assert b.fake.running() == [] and not b.fake.locked("api")


def test_a_volume_of_an_absolute_host_dir_is_refused_by_config_check() -> None:
    with pytest.raises(configlib.ConfigError) as err:
        configlib.parse("service: api\nimage: r.example.com/api\nhost_dir: /srv/ps\n"
                        "app:\n  port: 8080\n  volumes: ['/srv/ps/_proxy:/x', 'data:/d', "
                        "'/srv/psx:/y']\n", Path("/x/plainsail.yml"), {})
    assert err.value.problems == [
        "line 6: app.volumes: '/srv/ps/_proxy:/x' mounts plainsail's own state (host_dir "
        "/srv/ps, or a folder holding it) into the app; mount another folder"]
