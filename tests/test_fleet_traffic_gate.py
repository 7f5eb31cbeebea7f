"""traffic_gate with a fleet's rollout, for real: three hosts (network namespaces, each with
its own sshd, Docker Engine and Caddy 2.8+ proxy), `rollout: {canary: 1, batch: 2}` and
`traffic_gate: {canary: 10%}`, under load from Debian's `hey` on every host's `/api/`.

A release answering 500 on 30% of `/api/` (its /health passes) is caught on the canary host
and routed back there; the other two hosts never start it, and no request fails anywhere
but the bad release's own answers on the canary host. A good release is judged on the
canary host before batch 2 switches, then on each host of batch 2, and completes with no
failed request; a rollback then goes back at once, not judged. SIGTERM to the deployer
during the canary host's window routes it back and leaves the others untouched. Each test
starts from hosts without a proxy or a network of the test's."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CliResult, plainsail
from tests.support.multihost import Fleet
from tests.support.nshosts import NSHost
from tests.support.proxy_env import Load, ProxyApps, get_through, start_load, wait_for_line

LOAD_SECONDS = 120  # an upper bound: each load is stopped when its deploy ends
WORKERS = 4
RATE = 50  # requests per second per worker at most (each /api/ answer takes 40 ms)
GATE = "traffic_gate:\n  window: 4s\n  canary: 10%\n  min_requests: 10\n"
ROLLOUT = "rollout:\n  canary: 1\n  batch: 2\n"
PREFIX = "tgf-"


@dataclass
class GateFleet:
    path: Path
    service: str
    fleet: Fleet
    apps: ProxyApps
    caddy: str
    http_port: int

    @property
    def site(self) -> str:
        return f"{self.service}.test"

    @property
    def hosts(self) -> list[NSHost]:
        return self.fleet.hosts

    def write(self) -> None:
        a = self.fleet.a
        (self.path / "plainsail.yml").write_text(
            f"service: {self.service}\nimage: {self.apps.repo}\nsigning: {{verify: false}}\n"
            "hosts:\n" + "".join(f"  - {h.host}\n" for h in self.hosts) +
            f"ssh:\n  identity_file: {a.identity_file}\n  known_hosts: {a.known_hosts}\n"
            "app:\n  port: 8000\n  stop_timeout: 2s\n"
            "health:\n  path: /health\n  attempts: 40\n  interval: 250ms\n"
            f"proxy:\n  host: {self.site}\n  image: {self.caddy}\n  tls: off\n"
            f"  http_port: {self.http_port}\n  https_port: {self.http_port + 1}\n"
            f"  network: {self.service}-net\n  drain: 3s\n" + GATE + ROLLOUT)

    def run(self, *args: str) -> CliResult:
        return plainsail(*args, cwd=self.path, env={"GITHUB_ACTIONS": ""})

    def serving(self, host: NSHost) -> str:
        """Which build `host`'s proxy answers /health with."""
        status, body = get_through(host.hostname, self.http_port, self.site)
        return f"{status} {body.strip()}"

    def load(self) -> list[Load]:
        return [start_load(self.http_port, self.site, LOAD_SECONDS, WORKERS, "/api/x",
                           address=h.hostname, rate=RATE) for h in self.hosts]

    def created_since(self, host: NSHost, since: int) -> list[str]:
        """The names of the service's containers created on `host` since `since` (each
        ends with its version's tag)."""
        r = host.docker("events", "--since", str(since), "--until", str(int(time.time()) + 1),
                        "--filter", "type=container", "--filter", "event=create",
                        "--filter", f"label=dev.plainsail.service={self.service}",
                        "--format", "{{.Actor.Attributes.name}}")
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    def only_the_canary_ran(self, build: str, since: int) -> None:
        """A container of `build` was created since `since` on the first host only, and
        is gone again (removed after its route back)."""
        tag = self.apps.refs[build].split("@")[0]
        a, *others = self.hosts
        assert any(name.endswith(tag) for name in self.created_since(a, since))
        for host in others:
            assert self.created_since(host, since) == [], host.name
        names = a.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert names and not any(name.endswith(tag) for name in names), names

    def records(self, host: NSHost) -> list[dict[str, Any]]:
        r = host.run(["cat", f"{host.home}/.plainsail/{self.service}/history.jsonl"])
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def pristine(host: NSHost) -> None:
    """No proxy and no network but Docker's own on `host`: leftovers of an earlier run of
    these tests are removed; anything else fails the test (it would share the proxy)."""
    nets = [n for n in host.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
            if n not in ("bridge", "host", "none")]
    for net in [n for n in nets if n.startswith(PREFIX)]:
        ids = host.docker("ps", "-aq", "--filter", f"network={net}").stdout.split()
        if ids:
            host.docker("rm", "-f", *ids)
        host.docker("network", "rm", net)
    proxies = host.docker("ps", "-a", "--filter", "label=dev.plainsail.role=proxy",
                          "--format", "{{.Names}} {{.Networks}}").stdout.strip()
    others = [n for n in nets if not n.startswith(PREFIX)]
    if proxies or others:
        pytest.fail(f"{host.name} is not pristine (proxy: {proxies or 'none'}; networks: "
                    f"{others}); these tests need hosts without a proxy")
    host.run(["rm", "-rf", f"{host.home}/.plainsail/_proxy"])


def remove(d: GateFleet) -> None:
    for host in d.hosts:
        ids = host.docker("ps", "-aq", "--filter",
                          f"label=dev.plainsail.service={d.service}").stdout.split()
        ids += host.docker("ps", "-aq", "--filter", f"network={d.service}-net").stdout.split()
        if ids:
            host.docker("rm", "-f", *ids)
        host.docker("network", "rm", f"{d.service}-net")
        host.run(["rm", "-rf", f"{host.home}/.plainsail/{d.service}",
                  f"{host.home}/.plainsail/_proxy"])


@pytest.fixture
def gate_fleet(tmp_path: Path, fleet: Fleet, proxy_apps: ProxyApps,
               current_caddy_image: str) -> Iterator[GateFleet]:
    for host in fleet.hosts:
        pristine(host)
    service = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    d = GateFleet(tmp_path, service, fleet, proxy_apps, current_caddy_image,
                  random.randrange(21000, 29000, 2))
    d.write()
    try:
        yield d
    finally:
        remove(d)
        shutil.rmtree(tmp_path, ignore_errors=True)


def first_release_under_load(d: GateFleet) -> list[Load]:
    """v1 on every host (a first deploy: not judged), then load on every host's /api/ for
    a baseline window and more; the loads, still running."""
    r = d.run("deploy", d.apps.refs["v1"])
    assert r.code == 0, r.text
    assert [d.serving(h) for h in d.hosts] == ["200 v1"] * 3
    loads = d.load()
    time.sleep(6)  # the old version's baseline: one window (4 s) and more
    return loads


def per_host(summary: dict[str, Any]) -> list[tuple[str, int | None, str | None]]:
    return [(h["outcome"], h["batch"], (h["traffic_gate"] or {}).get("verdict"))
            for h in summary["per_host"]]


def test_a_bad_release_is_caught_on_the_canary_host_and_never_runs_on_the_others(
        gate_fleet: GateFleet) -> None:
    d = gate_fleet
    a, b, c = d.hosts
    loads = first_release_under_load(d)
    since = int(time.time()) - 1
    r = d.run("deploy", d.apps.refs["flaky"], "--json")
    counts = [ld.stop() for ld in loads]
    assert r.code == 1, r.text
    summary = json.loads(r.out)
    assert summary["outcome"] == "failed-traffic-restored", (summary["reason"], r.err)
    assert per_host(summary) == [("failed-traffic-restored", 1, "failed"),
                                 ("aborted", None, None), ("aborted", None, None)], r.err
    assert summary["reason"].startswith(f"{a.host} (batch 1 of 2): traffic gate failed: "
                                        "error rate "), summary["reason"]
    assert summary["reason"].endswith(f"not touched: {b.host}, {c.host}"), summary["reason"]
    tg = summary["per_host"][0]["traffic_gate"]
    assert tg["canary"] == 10.0 and 4 <= tg["new_share"] <= 18, tg
    assert tg["new"]["error_rate"] > 15 and tg["old"]["errors"] == 0, tg
    # every proxy serves v1 again; hosts 2 and 3 never created a container of the release
    assert [d.serving(h) for h in d.hosts] == ["200 v1"] * 3
    d.only_the_canary_ran("flaky", since)
    for host in (b, c):
        rec = d.records(host)[-1]
        assert rec["outcome"] == "aborted" and rec["reason"].startswith("not touched"), rec
    # no request failed but the bad release's own answers during its canary share
    (codes_a, errors_a), *others = counts
    assert set(codes_a) <= {"200", "500"} and not errors_a, (codes_a, errors_a)
    assert 0 < codes_a.get("500", 0) <= 1.5 * tg["new"]["errors"] + 10, (codes_a, tg)
    for codes, errors in others:
        assert set(codes) == {"200"} and not errors, (codes, errors)
        assert codes["200"] >= 300, codes
    assert codes_a["200"] >= 300, codes_a
    print(f"bad release: answers per host {[c for c, _ in counts]}; canary host's window "
          f"{tg['new']}, share {tg['new_share']}%; seconds {summary['seconds']}")


def test_a_good_release_is_judged_on_the_canary_host_before_the_next_batch(
        gate_fleet: GateFleet) -> None:
    d = gate_fleet
    a, b, c = d.hosts
    loads = first_release_under_load(d)
    r = d.run("deploy", d.apps.refs["v2"], "--json")
    counts = [ld.stop() for ld in loads]
    assert r.code == 0, r.text
    summary = json.loads(r.out)
    assert per_host(summary) == [("succeeded", 1, "passed"), ("succeeded", 2, "passed"),
                                 ("succeeded", 2, "passed")], r.err
    lines = r.err.splitlines()

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    judged = at(f"[rollout] batch 1 judged on real traffic ({a.host} passed): batch 2 next")
    assert at(f"[{a.host}] traffic gate passed") < judged
    assert judged < at(f"[{b.host}] canary: ok") and judged < at(f"[{c.host}] canary: ok")
    for h in summary["per_host"]:
        tg = h["traffic_gate"]
        assert tg["new"]["requests"] >= 10 and tg["new"]["errors"] == 0, tg
    assert [d.serving(h) for h in d.hosts] == ["200 v2"] * 3
    for codes, errors in counts:
        assert set(codes) == {"200"} and not errors, (codes, errors)
        assert codes["200"] >= 300, codes
    print(f"good release: answers per host {[c for c, _ in counts]}; windows "
          f"{[h['traffic_gate']['new'] for h in summary['per_host']]}; "
          f"seconds {summary['seconds']}")
    # status: each host's live error rate and p95 through its proxy over the last minute
    status = json.loads(d.run("status", "--json").out)
    for host in status["hosts"]:
        shown = host["proxy"]["last_minute"]
        assert shown["requests"] > 20 and shown["error_rate"] == 0 and shown["p95"] > 0.03, \
            (host["host"], shown)
    # a rollback is not judged: v1 gets every host's whole route at once, batch by batch
    loads = d.load()
    r = d.run("rollback", "--json")
    counts = [ld.stop() for ld in loads]
    assert r.code == 0, r.text
    summary = json.loads(r.out)
    assert [(h["outcome"], h["traffic_gate"]["verdict"]) for h in summary["per_host"]] == [
        ("succeeded", "not-judged")] * 3, r.err
    assert "canary: ok" not in r.err and "watching real traffic" not in r.err, r.err
    assert [d.serving(h) for h in d.hosts] == ["200 v1"] * 3
    for codes, errors in counts:
        assert set(codes) == {"200"} and not errors, (codes, errors)
    print(f"rollback: answers per host {[c for c, _ in counts]}; seconds {summary['seconds']}")


def test_sigterm_in_the_canary_hosts_window_routes_it_back_and_leaves_the_others(
        gate_fleet: GateFleet) -> None:
    d = gate_fleet
    a, b, c = d.hosts
    loads = first_release_under_load(d)
    since = int(time.time()) - 1
    proc = subprocess.Popen([sys.executable, "-m", "plainsail", "deploy", d.apps.refs["v2"],
                             "--json"], cwd=d.path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    wait_for_line(proc, f"[{a.host}] watching real traffic", seen)
    time.sleep(1)  # the canary share goes to v2 now
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    counts = [ld.stop() for ld in loads]
    text = "".join(seen) + err
    assert proc.returncode == 130 and "Traceback" not in text + out, text + out
    summary = json.loads(out)
    assert summary["outcome"] == "interrupted", summary
    assert [h["reason"] for h in summary["per_host"][1:]] == [
        "not touched: interrupted by a signal"] * 2, summary["per_host"]
    assert [d.serving(h) for h in d.hosts] == ["200 v1"] * 3
    d.only_the_canary_ran("v2", since)
    for codes, errors in counts:
        assert set(codes) == {"200"} and not errors, (codes, errors)
    lock = d.run("lock", "status")
    assert lock.code == 0 and lock.out.count("unlocked") == 3, lock.text
