"""Deploys to three hosts, each a network namespace with its own sshd and Docker Engine
reached only over SSH: migrations run once before any host switches; a host failing its
gate restores it and every host already switched; the rest are not touched; rollback needs
the hosts to agree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CliResult, plainsail
from tests.support.multihost import Fleet, TinyApp
from tests.support.nshosts import NSHost, hosts_sh


@dataclass
class FleetDir:
    path: Path
    service: str
    volume: str
    fleet: Fleet
    app: TinyApp

    def write(self, extra: str = "") -> None:
        (self.path / "plainsail.yml").write_text(
            self.fleet.config(self.service, self.app.image, self.volume) + extra)

    def run(self, *args: str) -> CliResult:
        return plainsail(*args, cwd=self.path)

    def version_on(self, host: NSHost) -> str:
        """The version the running container answers with on `host` (asked inside it)."""
        names = host.docker("ps", "--filter", f"label=dev.plainsail.service={self.service}",
                            "--format", "{{.Names}}").stdout.split()
        if not names:
            return "nothing"
        if len(names) > 1:
            return f"{len(names)} containers running"
        got = host.docker("exec", names[0], "/bin/busybox", "wget", "-qO-",
                          "http://127.0.0.1:8080/health")
        assert got.returncode == 0, got.stderr
        return str(json.loads(got.stdout)["version"])

    def versions(self) -> list[str]:
        return [self.version_on(h) for h in self.fleet.hosts]

    def records(self, host: NSHost) -> list[dict[str, object]]:
        res = host.run(["cat", f"{host.home}/.plainsail/{self.service}/history.jsonl"])
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def fail_on(self, host: NSHost, version: str, fail: bool = True) -> None:
        """Make `version` fail its health check on `host` only (a file in its volume), or
        (fail=False) pass it again."""
        tag, digest = self.app.versions["v1"]
        change = ["touch"] if fail else ["rm", "-f"]
        r = host.docker("run", "--rm", "-v", f"{self.volume}:/flag",
                        f"{self.app.image}@{digest}", "/bin/busybox", *change,
                        f"/flag/fail-{version}")
        assert r.returncode == 0, r.stderr


def deploying(d: FleetDir, ref: str) -> subprocess.Popen[str]:
    """`plainsail deploy REF` in a process of its own; its output, both streams, by line."""
    return subprocess.Popen([sys.executable, "-m", "plainsail", "deploy", ref], cwd=d.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**{k: v for k, v in os.environ.items()
                                    if k != "GITHUB_ACTIONS"}, "PYTHONUNBUFFERED": "1"})


def read_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """The lines of `proc` up to the first holding `marker` (the test fails without one)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return seen
    pytest.fail(f"no line with {marker!r}:\n" + "".join(seen))


@pytest.fixture
def fleet_dir(tmp_path: Path, fleet: Fleet, tiny_app: TinyApp) -> Iterator[FleetDir]:
    service = f"tiny-{uuid.uuid4().hex[:8]}"
    volume = f"{service}-flag"
    d = FleetDir(tmp_path, service, volume, fleet, tiny_app)
    d.write()
    yield d
    for host in fleet.hosts:
        ids = host.docker("ps", "-aq", "--filter",
                          f"label=dev.plainsail.service={service}").stdout.split()
        if ids:
            host.docker("rm", "-f", *ids)
        host.docker("volume", "rm", "-f", volume)
        host.run(["rm", "-rf", f"{host.home}/.plainsail/{service}"])
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_fleet_deploy_migrates_once_and_rolls_back_everywhere(fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    assert d.run("deploy", d.app.ref("v1")).code == 0
    r = d.run("deploy", d.app.ref("v2"), "--json")
    assert r.code == 0, r.text
    assert d.versions() == ["2", "2", "2"]
    # In parallel: one host after another, the attempt would take at least the sum of every
    # host's steps (plus its preflight); the hosts' steps overlapped.
    summary = json.loads(r.out)
    steps = sum(s["seconds"] for h in summary["per_host"] for s in h["steps"])
    assert summary["seconds"] < steps, (summary["seconds"], steps)
    recs = [d.records(h)[-1] for h in f.hosts]
    assert len({r["id"] for r in recs}) == 1
    assert {r["outcome"] for r in recs} == {"succeeded"}
    # One migration, on the first host, before any host switched.
    assert {r["migration"]["host"] for r in recs} == {f.a.host}
    assert "migrate" in {s["name"] for s in recs[0]["steps"]}
    assert not any("migrate" in {s["name"] for s in r["steps"]} for r in recs[1:])
    status = json.loads(d.run("status", "--json").out)
    assert [h["running"]["tag"] for h in status["hosts"]] == [d.app.versions["v2"][0]] * 3
    r = d.run("rollback")
    assert r.code == 0, r.text
    assert d.versions() == ["1", "1", "1"]
    history = json.loads(d.run("history", "--json").out)
    assert sorted(history[0]["hosts"]) == sorted(h.host for h in f.hosts)
    assert "3 hosts: 3 succeeded" in d.run("history").out


def test_a_gate_failing_in_batch_two_restores_batch_one_and_leaves_the_rest(
        fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    d.write("rollout:\n  canary: 1\n  batch: 1\n")
    assert d.run("deploy", d.app.ref("v1")).code == 0
    d.fail_on(f.b, "2")
    r = d.run("deploy", d.app.ref("v2"), "--json")
    assert r.code == 1, r.text
    assert d.versions() == ["1", "1", "1"]
    summary = json.loads(r.out)
    assert [(h["host"], h["outcome"], h["batch"]) for h in summary["per_host"]] == [
        (f.a.host, "failed-health-restored", 1), (f.b.host, "failed-health-restored", 2),
        (f.c.host, "aborted", None)]
    a, b, c = (d.records(h)[-1] for h in f.hosts)
    assert a["outcome"] == b["outcome"] == "failed-health-restored"
    assert f"{f.b.host} failed its health gate" in str(a["reason"])
    assert c["outcome"] == "aborted" and "not touched" in str(c["reason"])
    assert "start-new" not in {s["name"] for s in c["steps"]}


def test_resume_after_a_partial_failure_skips_the_hosts_already_done(
        fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    d.write("on_failure: stop\nrollout:\n  canary: 1\n  batch: 1\n")
    assert d.run("deploy", d.app.ref("v1")).code == 0
    d.fail_on(f.b, "2")
    r = d.run("deploy", d.app.ref("v2"), "--json")
    assert r.code == 1, r.text
    assert [h["outcome"] for h in json.loads(r.out)["per_host"]] == [
        "succeeded", "failed-health-left-stopped", "aborted"]
    assert d.version_on(f.a) == "2" and d.version_on(f.c) == "1"
    d.fail_on(f.b, "2", fail=False)
    r = d.run("deploy", d.app.ref("v2"), "--json")
    assert r.code == 0, r.text
    assert [h["outcome"] for h in json.loads(r.out)["per_host"]] == [
        "unchanged", "succeeded", "succeeded"]
    assert d.versions() == ["2", "2", "2"]


def test_host_filter_and_rollback_disagreement(fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    assert d.run("deploy", d.app.ref("v1")).code == 0
    assert d.run("deploy", d.app.ref("v2")).code == 0
    r = d.run("deploy", d.app.ref("v3"), "--host", f.a.host)
    assert r.code == 0, r.text
    assert d.versions() == ["3", "2", "2"]
    status = d.run("status")
    assert "MIXED VERSIONS" in status.err and f"on {f.b.host}, {f.c.host}" in status.err
    r = d.run("rollback")
    assert r.code == 2 and "disagree" in r.err and "--to" in r.err
    r = d.run("rollback", "--to", d.app.versions["v2"][0])
    assert r.code == 0, r.text
    assert d.versions() == ["2", "2", "2"]
    per_host = json.loads(d.run("history", "--json", "--limit", "1").out)[0]
    assert per_host["kind"] == "rollback"


def test_sigterm_during_batch_two_puts_every_switched_host_back(fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    d.write("rollout:\n  canary: 1\n  batch: 2\n")
    assert d.run("deploy", d.app.ref("v1")).code == 0
    d.fail_on(f.b, "2")  # b's gate takes its whole time: the signal lands inside batch 2
    proc = deploying(d, d.app.ref("v2"))
    seen = read_until(proc, f"[{f.b.host}] start-new: ok")
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    out = "".join(seen) + proc.stdout.read()
    assert proc.wait(120) == 130, out
    assert "Traceback" not in out
    assert d.versions() == ["1", "1", "1"]
    recs = [d.records(h)[-1] for h in f.hosts]
    # b may have failed its gate and put itself back before the signal landed.
    assert recs[0]["outcome"] == recs[2]["outcome"] == "interrupted", out
    assert recs[1]["outcome"] in ("interrupted", "failed-health-restored"), out
    assert [r["batch"] for r in recs] == [1, 2, 2]
    assert d.run("lock", "status").out.count(": unlocked") == 3


def test_a_pull_failing_on_one_host_aborts_before_any_switch(fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    assert d.run("deploy", d.app.ref("v1")).code == 0
    port = d.app.image.split("/")[0].rsplit(":", 1)[1]
    forward = f.c.docker_socket.parent / f"fwd-{port}.pid"
    os.kill(int(forward.read_text()), signal.SIGTERM)  # c no longer reaches the registry
    try:
        r = d.run("deploy", d.app.ref("v3"), "--json")
    finally:
        hosts_sh("forward", port)
    assert r.code == 1, r.text
    summary = json.loads(r.out)
    assert summary["outcome"] == "aborted" and "nothing was switched" in summary["reason"]
    assert f.c.host in summary["reason"]
    assert [h["outcome"] for h in summary["per_host"]] == ["aborted"] * 3
    assert d.versions() == ["1", "1", "1"]
    for h in f.hosts:
        assert not {"stop-old", "start-new"} & {s["name"] for s in d.records(h)[-1]["steps"]}


def test_sigkill_during_batch_two_then_recover_puts_every_host_back(fleet_dir: FleetDir) -> None:
    d, f = fleet_dir, fleet_dir.fleet
    d.write("rollout:\n  canary: 1\n  batch: 2\n")
    assert d.run("deploy", d.app.ref("v1")).code == 0
    d.fail_on(f.b, "2")  # b's gate takes its whole time: the kill lands inside batch 2
    proc = deploying(d, d.app.ref("v2"))
    read_until(proc, f"[{f.b.host}] start-new: ok")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    assert d.version_on(f.a) == "2"  # the canary was left on v2 by the killed deployer
    r = d.run("recover")
    assert r.code == 0, r.text
    assert d.versions() == ["1", "1", "1"]
    for h in f.hosts:
        outcomes = [rec["outcome"] for rec in d.records(h)]
        assert outcomes[-2:] == ["interrupted", "recovered"], (h.host, outcomes)
    assert d.run("lock", "status").out.count(": unlocked") == 3


def _sshd_sessions(host: NSHost) -> list[int]:
    """The processes of `host`'s sshd that serve connections: every descendant of its
    listening process (each connection's monitor, its network process, the commands)."""
    parent = int((host.docker_socket.parent / "sshd.pid").read_text().split()[0])
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], list(children.get(parent, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def test_an_ssh_connection_dropped_during_pull_aborts_before_any_switch(
        fleet_dir: FleetDir) -> None:
    """c's pull hangs (its registry forward answers nothing), then every SSH connection to
    c drops: the attempt aborts with nothing switched on any host, every host recorded and
    unlocked over a new connection."""
    d, f = fleet_dir, fleet_dir.fleet
    assert d.run("deploy", d.app.ref("v1")).code == 0
    port = int(d.app.image.split("/")[0].rsplit(":", 1)[1])
    forward = f.c.docker_socket.parent / f"fwd-{port}.pid"
    os.kill(int(forward.read_text()), signal.SIGTERM)
    hole = subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{f.c.name}", sys.executable, "-c",
         "import socket, sys, time\n"
         "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         f"s.bind(('127.0.0.1', {port})); s.listen(16); print('ready', flush=True)\n"
         "held = []\nwhile True: held.append(s.accept())\n"],
        stdout=subprocess.PIPE, text=True)
    deployer = None
    try:
        assert hole.stdout is not None and hole.stdout.readline().strip() == "ready"
        deployer = deploying(d, d.app.ref("v3"))
        seen = read_until(deployer, f"[pull {f.c.host}] pulling")
        time.sleep(1.0)  # c's pull hangs on the forward that answers nothing
        sessions = _sshd_sessions(f.c)
        assert sessions, "no SSH connection to c while it pulls"
        for pid in sessions:
            os.kill(pid, signal.SIGKILL)
        assert deployer.stdout is not None
        out = "".join(seen) + deployer.stdout.read()
        assert deployer.wait(120) == 1, out
    finally:
        if deployer is not None and deployer.poll() is None:
            deployer.kill()
            deployer.wait(10)
        hole.kill()
        hole.wait(10)
        hosts_sh("forward", str(port))
    assert "Traceback" not in out
    assert "ABORTED" in out and f"{f.c.host}: the SSH connection dropped during docker pull" \
        in out, out
    assert d.versions() == ["1", "1", "1"]
    for h in f.hosts:
        rec = d.records(h)[-1]
        assert rec["outcome"] == "aborted", (h.host, rec, out)
        assert "nothing was switched" in str(rec["reason"]), rec
        assert not {"stop-old", "start-new"} & {s["name"] for s in rec["steps"]}
    assert d.run("lock", "status").out.count(": unlocked") == 3
