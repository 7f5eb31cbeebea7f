"""Deploys to several hosts at once and in batches, through the fake host: the rollout
order, a failure in a batch (restore or stop), preflight failures naming every host, the
bound on hosts worked on at once and the retry of a transient connect failure."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from plainsail.config import model as configlib
from plainsail.config.model import RolloutConfig
from plainsail.deploy import fanout
from plainsail.deploy.outcomes import (
    ABORTED,
    INTERRUPTED,
    LEFT_STOPPED,
    RESTORED,
    SUCCEEDED,
    UNCHANGED,
    exit_code,
)
from plainsail.errors import ConfigError, RemoteError
from tests.test_engine import V1, V2, Bench


@pytest.mark.parametrize(("rollout", "hosts", "sizes"), [
    (RolloutConfig(), 3, [3]),
    (RolloutConfig(canary=1), 3, [1, 2]),
    (RolloutConfig(canary=1, batch="1"), 3, [1, 1, 1]),
    (RolloutConfig(batch="25%"), 10, [3, 3, 3, 1]),
    (RolloutConfig(canary=2, batch="50%"), 8, [1, 1, 4, 2]),
    (RolloutConfig(canary=5), 2, [1, 1]),
    (RolloutConfig(batch="4"), 0, []),
])
def test_batches(rollout: RolloutConfig, hosts: int, sizes: list[int]) -> None:
    assert rollout.batches(hosts) == sizes


@pytest.mark.parametrize("bad", ["0", "101%", "0%", "-1", "half", "1.5"])
def test_a_bad_batch_is_refused_with_its_key(tmp_path: Path, bad: str) -> None:
    (tmp_path / "plainsail.yml").write_text(
        f"service: api\nimage: r.example.com/api\nrollout:\n  batch: '{bad}'\n")
    with pytest.raises(ConfigError, match="rollout.batch"):
        configlib.load(tmp_path / "plainsail.yml", {})


def fleet(tmp_path: Path, extra: str = "") -> Bench:
    return Bench(tmp_path, nhosts=3, extra=extra)


def step_names(b: Bench, i: int) -> list[str]:
    return [s["name"] for s in b.fakes[i].history("api")[-1]["steps"]]


def test_every_host_switches_in_one_batch_by_default(tmp_path: Path) -> None:
    b = fleet(tmp_path)
    b.deploy(V1)
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED
    assert [(h["outcome"], h["batch"]) for h in s["per_host"]] == [(SUCCEEDED, 1)] * 3
    assert b.running_tags() == [V2.tag] * 3
    # Migrations once, on the first host, before any switch.
    assert "migrate" in step_names(b, 0)
    assert all("migrate" not in step_names(b, i) for i in (1, 2))


def test_a_failure_in_batch_two_restores_batch_one_and_leaves_the_rest(tmp_path: Path) -> None:
    b = fleet(tmp_path, "rollout:\n  canary: 1\n  batch: 1\n")
    b.deploy(V1)
    b.fakes[1].healthy = lambda c: c.labels["dev.plainsail.tag"] != V2.tag
    s = b.deploy(V2)
    assert s["outcome"] == RESTORED
    assert [(h["outcome"], h["batch"]) for h in s["per_host"]] == [
        (RESTORED, 1), (RESTORED, 2), (ABORTED, None)]
    assert "web-2 failed its health gate" in s["per_host"][0]["reason"]
    assert "not touched" in s["per_host"][2]["reason"]
    assert b.running_tags() == [V1.tag] * 3
    assert "start-new" not in step_names(b, 2) and "pull" in step_names(b, 2)
    assert not any(f.locked("api") for f in b.fakes)


def test_on_failure_stop_leaves_switched_hosts_and_says_which_run_what(tmp_path: Path) -> None:
    b = fleet(tmp_path, "on_failure: stop\nrollout:\n  canary: 1\n  batch: 1\n")
    b.deploy(V1)
    b.fakes[1].healthy = lambda c: c.labels["dev.plainsail.tag"] != V2.tag
    s = b.deploy(V2)
    assert s["outcome"] == LEFT_STOPPED
    assert [h["outcome"] for h in s["per_host"]] == [SUCCEEDED, LEFT_STOPPED, ABORTED]
    assert f"web-1 left on {V2.tag}" in s["reason"]
    # Resume: the same deploy again skips the host already serving V2; the host left
    # failing on V2 is not skipped (it does not pass its health check) and fails again.
    s = b.deploy(V2)
    assert [h["outcome"] for h in s["per_host"]] == [UNCHANGED, LEFT_STOPPED, ABORTED]
    # Its cause fixed (the container left on V2 serves now), the rest is deployed.
    b.fakes[1].healthy = lambda c: True
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED
    assert [h["outcome"] for h in s["per_host"]] == [UNCHANGED, UNCHANGED, SUCCEEDED]
    assert V2.tag in b.running_tags() and V1.tag not in b.running_tags()


def test_preflight_failing_on_two_hosts_names_both_and_changes_nothing(tmp_path: Path) -> None:
    b = fleet(tmp_path)
    b.deploy(V1)
    for f in b.fakes[1:]:
        f.fail("survey", kind="fail")
    s = b.deploy(V2)
    assert s["outcome"] == ABORTED and s["preflight"]
    assert "preflight failed on 2 of 3 hosts" in s["reason"]
    assert "web-2" in s["reason"] and "web-3" in s["reason"]
    assert [h["host"] for h in s["per_host"]] == [f.host.name for f in b.fakes]
    assert "another host failed" in s["per_host"][0]["reason"]
    assert b.running_tags() == [V1.tag] * 3
    assert [len(f.history("api")) for f in b.fakes] == [1, 1, 1]


def test_a_pull_failing_on_one_host_aborts_before_any_switch(tmp_path: Path) -> None:
    b = fleet(tmp_path)
    b.deploy(V1)
    b.fakes[2].fail("docker pull")
    s = b.deploy(V2)
    assert s["outcome"] == ABORTED
    assert "nothing was switched" in s["reason"]
    assert b.running_tags() == [V1.tag] * 3
    assert all("start-new" not in step_names(b, i) for i in range(3))


def test_each_is_bounded_and_keeps_the_order() -> None:
    active, peak = 0, 0
    lock = threading.Lock()

    def work(n: int) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        if n == 3:
            raise ValueError("three")

    errors = fanout.each(list(range(6)), work, limit=2)
    assert peak == 2
    assert [type(e).__name__ if e else None for e in errors] == [
        None, None, None, "ValueError", None, None]


def remote(message: str, code: int = 255) -> RemoteError:
    return RemoteError(message, host="web-1", returncode=code)


def test_a_transient_connect_failure_is_tried_again_with_backoff() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def connect() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise remote("web-1: cannot connect over SSH (Connection reset by peer)")
        return "ok"

    assert fanout.with_retry(connect, sleep=slept.append) == "ok"
    assert slept == list(fanout.RETRY_DELAYS)


@pytest.mark.parametrize("exc", [
    remote("web-1: cannot connect over SSH (Permission denied (publickey))"),
    remote("web-1: docker failed: Connection reset", code=1),
])
def test_other_failures_are_not_tried_again(exc: RemoteError) -> None:
    calls: list[int] = []

    def connect() -> None:
        calls.append(1)
        raise exc

    with pytest.raises(RemoteError):
        fanout.with_retry(connect, sleep=lambda s: None)
    assert len(calls) == 1


def test_a_connection_dropped_mid_command_is_not_a_connect_failure() -> None:
    assert not fanout.transient(remote(
        "web-1: cannot connect over SSH (Connection to 10.0.0.1 closed by remote host.)"))
    assert fanout.transient(remote(
        "web-1: cannot connect over SSH (Connection closed by 10.0.0.1 port 22)"))


def test_a_signal_while_a_batch_switches_puts_every_switched_host_back(tmp_path: Path) -> None:
    b = fleet(tmp_path)
    b.deploy(V1)
    b.fakes[1].fail("docker run", kind="signal")  # SIGTERM while hosts switch at once
    s = b.deploy(V2)
    assert s["outcome"] == INTERRUPTED and exit_code(s) == 130
    assert [h["outcome"] for h in s["per_host"]] == [INTERRUPTED] * 3
    assert b.running_tags() == [V1.tag] * 3
    assert not any(f.locked("api") for f in b.fakes)
    assert [f.history("api")[-1]["outcome"] for f in b.fakes] == [INTERRUPTED] * 3


def test_a_signal_during_the_pulls_switches_nothing(tmp_path: Path) -> None:
    b = fleet(tmp_path)
    b.deploy(V1)
    b.fakes[2].fail("docker pull", kind="signal")
    s = b.deploy(V2)
    assert s["outcome"] == INTERRUPTED
    assert b.running_tags() == [V1.tag] * 3
    assert all("stop-old" not in step_names(b, i) for i in range(3))


def test_history_counts_the_hosts_per_outcome() -> None:
    from plainsail.commands.history import hosts_cell

    a = {"hosts": ["a", "b", "c"],
         "outcomes": {"a": RESTORED, "b": RESTORED, "c": ABORTED}}
    assert hosts_cell(a) == f"3 hosts: 2 {RESTORED}, 1 {ABORTED}"
    assert hosts_cell({"hosts": ["a"], "outcomes": {"a": SUCCEEDED}}) == "a"


def test_status_groups_hosts_by_version() -> None:
    from plainsail.deploy.status import versions

    def host(name: str, tag: str | None) -> dict[str, object]:
        return {"host": name, "reachable": True,
                "running": {"tag": tag, "digest": f"sha256:{tag}"} if tag else None}

    got = versions([host("a", "v1"), host("b", "v2"), host("c", "v1"), host("d", None),
                    {"host": "e", "reachable": False, "running": None}])
    assert got == {"v1@sha256:v1": ["a", "c"], "v2@sha256:v2": ["b"], "nothing": ["d"]}


def test_a_preflight_failure_before_connecting_still_names_every_host(tmp_path: Path) -> None:
    b = Bench(tmp_path, nhosts=3, env={})  # the app's secret is not set
    s = b.deploy(V1)
    assert s["outcome"] == ABORTED and s["preflight"]
    assert [h["host"] for h in s["per_host"]] == [f.host.name for f in b.fakes]
    assert all("not reached" in h["reason"] for h in s["per_host"])


def test_one_host_at_a_time_a_signal_stops_before_the_next_host(tmp_path: Path) -> None:
    b = fleet(tmp_path, "rollout:\n  max_parallel: 1\n")
    b.deploy(V1)
    b.fakes[0].fail("docker run", kind="signal")
    s = b.deploy(V2)
    assert s["outcome"] == INTERRUPTED
    assert b.running_tags() == [V1.tag] * 3
    assert all("stop-old" not in step_names(b, i) for i in (1, 2))


def test_on_failure_belongs_under_rollout_and_the_old_place_still_works(tmp_path: Path) -> None:
    def cfg(extra: str) -> Any:
        text = f"service: api\nimage: 127.0.0.1:5000/acme/api\nhosts: [web-1]\n{extra}"
        return configlib.parse(text, tmp_path / "plainsail.yml", {})

    assert cfg("").on_failure == "restore" and cfg("").rollout.on_failure == "restore"
    new = cfg("rollout:\n  on_failure: stop\n")
    assert new.on_failure == new.rollout.on_failure == "stop"
    old = cfg("on_failure: stop\n")
    assert old.on_failure == old.rollout.on_failure == "stop"
    assert cfg("on_failure: stop\nrollout: {on_failure: stop}\n").on_failure == "stop"
    with pytest.raises(ConfigError, match="on_failure: restore here, but rollout.on_failure "
                       "is stop; keep only rollout.on_failure"):
        cfg("on_failure: restore\nrollout: {on_failure: stop}\n")
    with pytest.raises(ConfigError, match="rollout.on_failure"):
        cfg("rollout: {on_failure: later}\n")


def test_rollout_on_failure_stop_leaves_the_switched_hosts(tmp_path: Path) -> None:
    """The new place drives the engine: batch 2 fails, batch 1 stays on the new version."""
    b = Bench(tmp_path, nhosts=3, extra="rollout: {batch: 1, on_failure: stop}\n")
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.fakes[1].healthy = lambda c: V2.tag not in c.name
    s = b.deploy(V2)
    assert s["outcome"] == LEFT_STOPPED, s
    assert [h["outcome"] for h in s["per_host"]] == [SUCCEEDED, LEFT_STOPPED, ABORTED]
