"""traffic_gate with a fleet's rollout, on fake hosts behind a fake proxy: the canary hosts
(`rollout.canary`) are judged on real traffic before the next batch switches; a bad verdict
there routes them back and stops the rollout with the other hosts untouched; a bad verdict
in a later batch puts the hosts already switched back too."""

from __future__ import annotations

import argparse
import re
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plainsail.commands import history as history_cmd
from plainsail.deploy.outcomes import (
    ABORTED,
    INTERRUPTED,
    LEFT_STOPPED,
    RESTORED,
    SUCCEEDED,
    TRAFFIC_RESTORED,
    exit_code,
)
from plainsail.deploy.report import render_summary
from tests.test_engine import V1, V2, ProxyBench

ROLLOUT = "rollout:\n  canary: 1\n  batch: 2\n"
GATE = "traffic_gate:\n  window: 40ms\n  canary: 10%\n  min_requests: 10\n"
BAD = (2000.0, 0.3, 0.01)  # answers: 2,000/s, 30% of them 5xx, 10 ms each


def fleet(tmp: Path, extra: str = "") -> ProxyBench:
    b = ProxyBench(tmp, nhosts=3, extra=GATE + ROLLOUT + extra)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.lines.clear()
    for f in b.fakes:
        f.log.clear()
    return b


def ran(b: ProxyBench, i: int, tag: str) -> bool:
    """Whether a container of `tag` was ever started on host i."""
    return any(a[:2] == ["docker", "run"] and any(tag in x for x in a)
               for a in b.fakes[i].log)


def at(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)


def gate(host: dict[str, Any]) -> str | None:
    tg = host["traffic_gate"]
    return None if tg is None else str(tg["verdict"])


def test_a_bad_release_is_caught_on_the_canary_host_and_the_others_never_run_it(
        tmp_path: Path) -> None:
    b = fleet(tmp_path)
    b.proxy.answers[f"api-{V2.tag}"] = BAD
    s = b.deploy(V2)
    assert s["outcome"] == TRAFFIC_RESTORED and exit_code(s) == 1, s
    assert [(h["outcome"], h["batch"], gate(h)) for h in s["per_host"]] == [
        (TRAFFIC_RESTORED, 1, "failed"), (ABORTED, None, None), (ABORTED, None, None)]
    # the reason says which host was judged what, in which batch, and which were not reached
    assert s["reason"].startswith("ssh://deploy@web-1 (batch 1 of 2): traffic gate failed: "
                                  "error rate "), s["reason"]
    assert s["reason"].endswith("not touched: ssh://deploy@web-2, ssh://deploy@web-3")
    for h in s["per_host"][1:]:
        assert h["reason"] == "not touched: ssh://deploy@web-1 failed its traffic gate"
        assert "start-new" not in [st["name"] for st in h["steps"]]
    assert not ran(b, 1, V2.tag) and not ran(b, 2, V2.tag)
    assert [b.routed_tag(i) for i in range(3)] == [V1.tag] * 3
    assert b.running_tags() == [V1.tag] * 3
    assert b.proxy.outages == []
    # the closing summary on a terminal says the same, host by host
    shown = render_summary(s).splitlines()
    assert re.fullmatch(r"  ssh://deploy@web-1: failed-traffic-restored \(was a1a1a1a1; "
                        r"batch 1; traffic gate failed: \d+ requests, [23]\d(\.\d+)?% 5xx, "
                        r"p95 10ms\)",
                        shown[-4]), shown
    assert shown[-3:-1] == [f"  ssh://deploy@web-{i}: aborted (was a1a1a1a1; not touched)"
                            for i in (2, 3)], shown
    # every host's own record says the same
    assert [f.history("api")[-1]["outcome"] for f in b.fakes] == [
        TRAFFIC_RESTORED, ABORTED, ABORTED]


def test_the_next_batch_switches_only_after_the_canary_hosts_verdict(
        tmp_path: Path) -> None:
    b = fleet(tmp_path)
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s
    assert [(h["outcome"], h["batch"], gate(h)) for h in s["per_host"]] == [
        (SUCCEEDED, 1, "passed"), (SUCCEEDED, 2, "passed"), (SUCCEEDED, 2, "passed")]
    lines = b.lines
    verdict = at(lines, "[ssh://deploy@web-1] traffic gate passed")
    judged = at(lines, "[rollout] batch 1 judged on real traffic (ssh://deploy@web-1 "
                       "passed): batch 2 next")
    assert verdict < judged < at(lines, "[ssh://deploy@web-2] start-new") \
        and judged < at(lines, "[ssh://deploy@web-3] start-new")
    assert [b.routed_tag(i) for i in range(3)] == [V2.tag] * 3
    assert b.proxy.outages == []


def test_a_bad_verdict_in_a_later_batch_puts_the_canary_host_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = fleet(tmp_path)
    b.proxy.host_answers["ssh://deploy@web-3"] = {f"api-{V2.tag}": BAD}
    s = b.deploy(V2)
    assert s["outcome"] == TRAFFIC_RESTORED, s
    assert [(h["outcome"], h["batch"], gate(h)) for h in s["per_host"]] == [
        (RESTORED, 1, "passed"), (RESTORED, 2, "passed"), (TRAFFIC_RESTORED, 2, "failed")]
    assert s["reason"].startswith("ssh://deploy@web-3 (batch 2 of 2): traffic gate failed")
    assert "web-3 failed its traffic gate" in s["per_host"][0]["reason"]
    assert [b.routed_tag(i) for i in range(3)] == [V1.tag] * 3
    assert b.running_tags() == [V1.tag] * 3
    # history names the failed verdict, not the canary host's pass
    assert re.search(r"failed on 1 of 3 hosts: (2[5-9]|3[0-5])(\.\d+)?% 5xx, p95 10ms",
                     history(tmp_path, capsys)), history(tmp_path, capsys)


def history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    args = argparse.Namespace(config=tmp_path / "plainsail.yml", host=[], source="local",
                              limit=10, json=False)
    assert history_cmd.run(args) == 0
    return capsys.readouterr().out


def test_with_on_failure_stop_a_bad_canary_is_still_routed_back(tmp_path: Path) -> None:
    b = fleet(tmp_path, "on_failure: stop\n")
    b.proxy.answers[f"api-{V2.tag}"] = BAD
    s = b.deploy(V2)
    assert s["outcome"] == TRAFFIC_RESTORED, s
    assert [h["outcome"] for h in s["per_host"]] == [TRAFFIC_RESTORED, ABORTED, ABORTED]
    assert LEFT_STOPPED not in s["reason"]
    assert b.running_tags() == [V1.tag] * 3
    # failing in batch 2: that host goes back, the hosts switched before stay (stop)
    b.proxy.answers.clear()
    b.proxy.host_answers["ssh://deploy@web-3"] = {f"api-{V2.tag}": BAD}
    s = b.deploy(V2)
    assert s["outcome"] == TRAFFIC_RESTORED, s
    assert [h["outcome"] for h in s["per_host"]] == [SUCCEEDED, SUCCEEDED, TRAFFIC_RESTORED]
    assert "ssh://deploy@web-1, ssh://deploy@web-2 left on b2b2b2b2" in s["reason"]
    assert [b.routed_tag(i) for i in range(3)] == [V2.tag, V2.tag, V1.tag]


def test_hosts_of_a_later_batch_need_no_baseline_wait_of_their_own(tmp_path: Path) -> None:
    """The proxy's log turned on by this deploy: the canary host watches the old version
    for one window first; by the next batch every host's log covers a window already."""
    b = ProxyBench(tmp_path, nhosts=3, extra=GATE.replace("40ms", "300ms") + ROLLOUT)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.proxy.fresh_log = True
    b.lines.clear()
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED, s
    waited = [line for line in b.lines if "traffic log is new" in line]
    assert len(waited) == 1 and waited[0].startswith("[ssh://deploy@web-1]"), waited
    assert all(h["traffic_gate"]["old"]["requests"] > 0 for h in s["per_host"]), s


def test_a_signal_during_the_canary_hosts_window_leaves_the_others_untouched(
        tmp_path: Path) -> None:
    b = fleet(tmp_path)
    b.cfg = replace(b.cfg, traffic_gate=replace(b.cfg.traffic_gate, window=5.0))
    old = signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGTERM))
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        s = b.deploy(V2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert s["outcome"] == INTERRUPTED and s["seconds"] < 4, s
    assert [h["outcome"] for h in s["per_host"]] == [INTERRUPTED] * 3
    assert [h["reason"] for h in s["per_host"][1:]] == ["not touched: interrupted by a "
                                                        "signal"] * 2
    assert not ran(b, 1, V2.tag) and not ran(b, 2, V2.tag)
    assert [b.routed_tag(i) for i in range(3)] == [V1.tag] * 3
    assert b.running_tags() == [V1.tag] * 3
