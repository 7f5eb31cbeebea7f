"""The release gate on real traffic, judged: pure functions over the proxy's log of the
answers each upstream gave (no I/O; the engine reads the log and routes).

The proxy logs one JSON line per request it passed to an upstream (Caddy's
`http.handlers.reverse_proxy` "upstream roundtrip" entry: `ts`, `upstream`, `status`,
`duration`; a request the upstream never answered carries `error` and counts as a 502, the
answer the proxy gave). `figures` sums one upstream's requests in a time range; `judge`
compares the new version's window with the old version's baseline under the limits of
`traffic_gate`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from plainsail.config.model import TrafficGateConfig

ROUNDTRIP = "upstream roundtrip"
NO_ANSWER = 502  # what the proxy answers when the upstream did not


@dataclass(frozen=True)
class Sample:
    ts: float  # unix seconds, when the proxy logged it
    upstream: str  # host:port as the route names it
    status: int
    duration: float  # seconds, the upstream's round trip


def parse_line(line: str) -> Sample | None:
    """One log line as a Sample, or None for any other line (other loggers, junk, a line
    cut at the start of a read)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("msg") != ROUNDTRIP:
        return None
    upstream, ts = entry.get("upstream"), entry.get("ts")
    if not isinstance(upstream, str) or not isinstance(ts, int | float):
        return None
    status = entry.get("status")
    if not isinstance(status, int) or isinstance(status, bool):
        status = NO_ANSWER if "error" in entry else None
    if status is None:
        return None
    duration = _seconds(entry.get("duration"))
    return Sample(float(ts), upstream, status, duration)


def _seconds(value: Any) -> float:
    """Caddy writes durations as float seconds; a string such as `1.5ms` is read too."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(float(value), 0.0) if math.isfinite(value) else 0.0
    if isinstance(value, str):
        for unit, factor in (("ms", 0.001), ("µs", 1e-6), ("us", 1e-6), ("ns", 1e-9), ("s", 1.0)):
            if value.endswith(unit):
                try:
                    return max(float(value[: -len(unit)]) * factor, 0.0)
                except ValueError:
                    return 0.0
    return 0.0


def parse(text: str) -> list[Sample]:
    return [s for s in (parse_line(line) for line in text.splitlines()) if s is not None]


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0..100) of values; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Figures:
    """One version's answers over a time range."""

    requests: int = 0
    errors: int = 0  # 5xx answers (a request the upstream never answered counts)
    p50: float | None = None
    p95: float | None = None
    seconds: float = 0.0  # the length of the range

    @property
    def error_rate(self) -> float:
        """5xx share in percent (0 with no requests)."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["error_rate"] = round(self.error_rate, 3)
        for key in ("p50", "p95"):
            if out[key] is not None:
                out[key] = round(out[key], 4)
        out["seconds"] = round(self.seconds, 3)
        return out

    def describe(self) -> str:
        if not self.requests:
            return "no requests"
        return (f"{self.requests} requests, {self.errors} 5xx ({self.error_rate:.1f}%), "
                f"p50 {_ms(self.p50)}, p95 {_ms(self.p95)}")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def figures(samples: Iterable[Sample], upstreams: set[str], start: float,
            end: float) -> Figures:
    """The figures of the requests to any of `upstreams` logged in [start, end)."""
    durations: list[float] = []
    errors = 0
    for s in samples:
        if s.upstream in upstreams and start <= s.ts < end:
            durations.append(s.duration)
            errors += s.status >= 500
    return Figures(len(durations), errors, percentile(durations, 50),
                   percentile(durations, 95), max(end - start, 0.0))


PASSED = "passed"
FAILED = "failed"
NOT_JUDGED = "not-judged"


@dataclass(frozen=True)
class Verdict:
    verdict: str  # passed, failed, not-judged
    reasons: list[str] = field(default_factory=list)  # why it failed (empty otherwise)
    notes: list[str] = field(default_factory=list)  # what the record should say besides

    @property
    def failed(self) -> bool:
        return self.verdict == FAILED

    def describe(self) -> str:
        return "; ".join(self.reasons or self.notes) or self.verdict


def judge(gate: TrafficGateConfig, old: Figures | None, new: Figures) -> Verdict:
    """Compare the new version's window with the old version's baseline.

    - error rate: fails when the new version's 5xx share exceeds the old one's by more than
      `max_error_rate` percentage points (a steady 2% before and after passes);
    - latency: fails when the new p95 is above the limit (`Nx` the old p95, or a duration)
      and more than `latency_floor` above the old p95 (fast endpoints jitter);
    - no old version (first deploy): not judged; no requests in the window: not judged.
    Too few requests (below `min_requests`) are judged all the same, with a note (the
    engine extends the window once before it asks).
    """
    notes: list[str] = []
    if old is None:
        return Verdict(NOT_JUDGED, notes=["first deploy: no old version to compare with, "
                                          "not judged"])
    if new.requests == 0:
        return Verdict(NOT_JUDGED, notes=["the new version got no requests in the window: "
                                          "nothing to judge"])
    if new.requests < gate.min_requests:
        notes.append(f"judged on {new.requests} request(s), fewer than min_requests "
                     f"{gate.min_requests}")
    if old.requests == 0:
        notes.append("the old version got no requests before the switch: its error rate "
                     "counts as 0% and its p95 as unknown")
    reasons: list[str] = []
    excess = new.error_rate - old.error_rate
    if excess > gate.max_error_rate:
        reasons.append(f"error rate {new.error_rate:.1f}% ({new.errors} of {new.requests}) "
                       f"against {old.error_rate:.1f}% before, more than "
                       f"{gate.max_error_rate:g} points above it")
    limit = gate.max_latency_p95
    new_p95 = new.p95 or 0.0
    old_p95 = old.p95
    if limit.ratio is not None:
        bound = None if old_p95 is None else old_p95 * limit.ratio
        said = f"{limit.ratio:g}x the old p95 {_ms(old_p95)}"
    else:
        bound = limit.seconds
        said = f"the limit {_ms(limit.seconds)}"
    if bound is None:
        notes.append("latency not judged: the old version's p95 is unknown")
    elif new_p95 > bound and new_p95 - (old_p95 or 0.0) > gate.latency_floor:
        reasons.append(f"p95 {_ms(new_p95)} above {said}")
    return Verdict(FAILED if reasons else PASSED, reasons, notes)
