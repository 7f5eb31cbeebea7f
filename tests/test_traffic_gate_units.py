"""The release gate on real traffic: its config, the proxy's version, and the judging of
the proxy's log (pure logic, no I/O)."""

from __future__ import annotations

import json

import pytest

from plainsail.config.model import LatencyLimit, TrafficGateConfig
from plainsail.deploy import trafficgate as tg
from plainsail.proxy import version
from tests.test_config import parse, problems

CADDY = "caddy:2.11@sha256:" + "a" * 64
PROXIED = ("service: api\nimage: 127.0.0.1:5000/acme/api\n"
           f"proxy: {{host: api.example.com, tls: off, image: '{CADDY}'}}\n")


# ---------------------------------------------------------------- config


def test_traffic_gate_defaults_and_forms() -> None:
    cfg = parse(PROXIED + "traffic_gate: {}\n")
    assert cfg.traffic_gate == TrafficGateConfig()
    assert cfg.traffic_gate.latency_floor == 0.05 and cfg.traffic_gate.canary is None
    cfg = parse(PROXIED + "traffic_gate: {window: 5s, canary: 10%, max_error_rate: 2.5%, "
                "max_latency_p95: 800ms, latency_floor: 20ms, min_requests: 7}\n")
    gate = cfg.traffic_gate
    assert gate is not None
    assert (gate.window, gate.canary, gate.max_error_rate) == (5.0, 10.0, 2.5)
    assert gate.max_latency_p95 == LatencyLimit(ratio=None, seconds=0.8)
    assert (gate.latency_floor, gate.min_requests) == (0.02, 7)
    assert parse(PROXIED + "traffic_gate: {max_latency_p95: 3x}\n").traffic_gate == \
        TrafficGateConfig(max_latency_p95=LatencyLimit(ratio=3.0))


def test_traffic_gate_needs_the_proxy() -> None:
    found = problems("service: api\nimage: 127.0.0.1:5000/acme/api\ntraffic_gate: {}\n")
    assert len(found) == 1
    assert "traffic_gate: needs the proxy" in found[0]


@pytest.mark.parametrize("setting, expected", [
    ("canary: 0%", "traffic_gate.canary: expected a percentage from more than 0%"),
    ("canary: 100%", "traffic_gate.canary: 100% is the whole route"),
    ("canary: 120%", "traffic_gate.canary: expected a percentage"),
    ("canary: lots", "traffic_gate.canary: expected a percentage"),
    ("canary: nan%", "traffic_gate.canary: expected a percentage"),
    ("max_error_rate: -1%", "traffic_gate.max_error_rate: expected a percentage"),
    ("max_latency_p95: 1x", "more than 1x"),
    ("max_latency_p95: fast", "expected a ratio such as 2x or a duration"),
    ("max_latency_p95: 0s", "must be longer than 0"),
    ("window: 0s", "traffic_gate.window: must be longer than 0"),
    ("window: 2h", "traffic_gate.window: 2h is too long"),
    ("min_requests: 0", "traffic_gate.min_requests"),
    ("windwo: 5s", "did you mean window?"),
])
def test_bad_traffic_gate_settings_are_one_line_each(setting: str, expected: str) -> None:
    found = problems(PROXIED + f"traffic_gate: {{{setting}}}\n")
    assert len(found) == 1, found
    assert expected in found[0]


# ---------------------------------------------------------------- the proxy's version


@pytest.mark.parametrize("text, expected", [
    ("v2.11.7 h1:yj0Y4fYZGPkSvibBJ1sTWE33xC0fxztVyXEW5iIdUT4=\n", (2, 11, 7)),
    ("2.6.2\n", (2, 6, 2)),
    ("v2.8\n", (2, 8, 0)),
    ("(devel)\n", None),
    ("", None),
])
def test_caddy_version_is_parsed(text: str, expected: tuple[int, int, int] | None) -> None:
    assert version.parse(text) == expected


def test_canary_needs_caddy_2_8() -> None:
    assert version.canary_problem((2, 8, 0), "web1", "img") is None
    assert version.canary_problem((2, 11, 7), "web1", "img") is None
    old = version.canary_problem((2, 6, 2), "web1", "plainsail-caddy:bookworm")
    assert old is not None and "\n" not in old
    assert "runs 2.6.2" in old and "2.8 or newer" in old and "web1" in old
    assert "an unknown release" in (version.canary_problem(None, "web1", "img") or "")


# ---------------------------------------------------------------- reading the log


def line(ts: float, upstream: str, status: int | None, duration: float = 0.01) -> str:
    entry: dict[str, object] = {"level": "debug", "ts": ts, "msg": tg.ROUNDTRIP,
                                "logger": "http.handlers.reverse_proxy",
                                "upstream": upstream, "duration": duration}
    if status is None:
        entry["error"] = "dial tcp: connection refused"
    else:
        entry["status"] = status
    return json.dumps(entry)


def test_log_lines_are_read_and_others_skipped() -> None:
    text = "\n".join([
        '{"level":"debug","ts":1.0,"msg":"selected upstream","dial":"a:80"}',
        line(2.0, "a:80", 200, 0.004),
        line(3.0, "b:80", None, 0.001),  # never answered: the proxy said 502
        "not json", '{"msg": "upstream roundtrip", "ts": "x", "upstream": "a:80"}',
        '{"msg":"upstream roundtrip","ts":4.0,"upstream":"a:80","status":200,"duration":"1.5ms"}',
        '{"msg":"upstream roundtrip","ts":5.0,"upstream":"a:80","status":true}',
        '{"msg":"upstream roundtrip","ts":5.0,"upst',  # cut short
    ])
    assert tg.parse(text) == [tg.Sample(2.0, "a:80", 200, 0.004),
                              tg.Sample(3.0, "b:80", 502, 0.001),
                              tg.Sample(4.0, "a:80", 200, 0.0015)]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert tg.percentile(values, 50) == 50.0
    assert tg.percentile(values, 95) == 95.0
    assert tg.percentile([3.0], 95) == 3.0
    assert tg.percentile([], 95) is None


def test_figures_count_one_version_in_a_time_range() -> None:
    samples = [tg.Sample(float(t), "new:80", 500 if t % 10 == 0 else 200, t / 1000)
               for t in range(100)]
    samples.append(tg.Sample(50.0, "old:80", 500, 1.0))
    fig = tg.figures(samples, {"new:80"}, 0.0, 50.0)
    assert (fig.requests, fig.errors) == (50, 5)
    assert fig.error_rate == 10.0
    assert fig.p95 == pytest.approx(0.047)
    assert fig.to_json()["error_rate"] == 10.0
    assert tg.figures(samples, {"gone:80"}, 0.0, 50.0) == tg.Figures(seconds=50.0)


# ---------------------------------------------------------------- the verdict


def figs(requests: int, errors: int, p95: float, p50: float = 0.01) -> tg.Figures:
    return tg.Figures(requests, errors, p50, p95, 5.0)


GATE = TrafficGateConfig(window=5.0, min_requests=50)


def test_a_bad_release_fails_on_its_error_rate() -> None:
    v = tg.judge(GATE, figs(1000, 0, 0.01), figs(1000, 300, 0.01))
    assert v.failed and "error rate 30.0% (300 of 1000)" in v.describe()


def test_a_steady_error_rate_before_and_after_passes() -> None:
    assert tg.judge(GATE, figs(1000, 20, 0.01), figs(1000, 22, 0.01)).verdict == tg.PASSED
    # ... while the same rise from nothing fails (more than 2 points above 0%).
    assert tg.judge(GATE, figs(1000, 0, 0.01), figs(1000, 25, 0.01)).failed


def test_latency_ratio_fails_only_above_the_floor() -> None:
    slow = tg.judge(GATE, figs(1000, 0, 0.1), figs(1000, 0, 0.3))
    assert slow.failed and "p95 300ms above 2x the old p95 100ms" in slow.describe()
    # 3x slower, but 20ms -> 60ms is under the 50ms floor: jitter of a fast endpoint.
    assert tg.judge(GATE, figs(1000, 0, 0.02), figs(1000, 0, 0.06)).verdict == tg.PASSED


def test_latency_absolute_limit() -> None:
    gate = TrafficGateConfig(max_latency_p95=LatencyLimit(ratio=None, seconds=0.5))
    assert tg.judge(gate, figs(100, 0, 0.4), figs(100, 0, 0.6)).failed
    assert not tg.judge(gate, figs(100, 0, 0.4), figs(100, 0, 0.45)).failed
    # above the limit, but within the floor of the old p95 (which was as slow): passes
    assert not tg.judge(gate, figs(100, 0, 0.58), figs(100, 0, 0.6)).failed


def test_first_deploy_and_no_traffic_are_not_judged() -> None:
    first = tg.judge(GATE, None, figs(100, 100, 9.0))
    assert first.verdict == tg.NOT_JUDGED and "first deploy" in first.describe()
    idle = tg.judge(GATE, figs(100, 0, 0.1), tg.Figures())
    assert idle.verdict == tg.NOT_JUDGED and "no requests" in idle.describe()


def test_too_few_requests_are_judged_with_a_note() -> None:
    v = tg.judge(GATE, figs(100, 0, 0.1), figs(10, 5, 0.1))
    assert v.failed and any("fewer than min_requests 50" in n for n in v.notes)
    ok = tg.judge(GATE, figs(100, 0, 0.1), figs(10, 0, 0.1))
    assert ok.verdict == tg.PASSED and "judged on 10 request(s)" in ok.describe()


def test_no_baseline_traffic_counts_as_zero_errors_and_unknown_latency() -> None:
    v = tg.judge(GATE, tg.Figures(), figs(100, 1, 5.0))
    assert v.verdict == tg.PASSED
    assert any("latency not judged" in n for n in v.notes)
    assert tg.judge(GATE, tg.Figures(), figs(100, 10, 5.0)).failed
