"""The health gate: the step between "deployed" and "done".

Poll `health.path` until it answers `health.status` (and contains `health.body_contains`),
each attempt bounded as a whole by `health.timeout` (connection, answer and body: an
answer that trickles is cut off), at most `health.attempts` attempts `health.interval`
apart: the gate ends within attempts x (timeout + interval), plus one container check
per attempt. Between failed attempts the container itself is checked, so a
container that exits or restarts fails the gate at once instead of after every attempt.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from plainsail.config.model import Config, HealthConfig
from plainsail.errors import RemoteError, one_line
from plainsail.hosts import docker
from plainsail.hosts.executor import Executor
from plainsail.secret import Secret, redact

log = logging.getLogger("plainsail.deploy.health")
BODY_KEPT = 300
BODY_SHOWN = 200  # of the last answer's body, in a failed gate's reason


@dataclass
class Attempt:
    n: int
    seconds: float  # since the gate started
    status: int | None = None
    body: str = ""
    error: str | None = None


@dataclass
class Verdict:
    healthy: bool
    reason: str
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self, last: int = 5) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "reason": self.reason,
            "attempts": len(self.attempts),
            "seconds": round(self.seconds, 3),
            "last": [asdict(a) for a in self.attempts[-last:]],
        }


def app_address(ex: Executor, cfg: Config, container: str) -> tuple[str, int]:
    """Where the target host reaches the app: its published (or host-network) port, else
    the container's own address on its network."""
    from plainsail.deploy.plan import health_target

    target = health_target(cfg)
    if target is not None:
        return target
    ips = ex.run(docker.container_ips(container), timeout=cfg.timeouts.query,
                 what="find the app's address").stdout.split()
    return (ips[0] if ips else "127.0.0.1"), cfg.app.port


def probe_once(ex: Executor, host: str, port: int, path: str,
               timeout: float) -> tuple[int, str]:
    """One GET through the executor (which knows how the host is reached)."""
    return ex.http_get(host, port, path, timeout)


def container_state(ex: Executor, name: str) -> tuple[str, int]:
    """(status, restart count) of a container; ("missing", 0) if it does not exist,
    ("unreachable", 0) when the SSH connection dropped, ("unknown", 0) when Docker did not
    say."""
    res = ex.run(docker.inspect([name]), check=False, timeout=30, what="inspect container")
    if res.returncode == 255 and not ex.host.is_local:
        return "unreachable", 0
    if res.returncode != 0:
        return ("missing", 0) if "no such" in res.stderr.lower() else ("unknown", 0)
    try:
        data = json.loads(res.stdout)[0]
        return str(data["State"]["Status"]), int(data.get("RestartCount", 0))
    except (ValueError, KeyError, IndexError, TypeError):
        return "unknown", 0


def check(status: int, body: str, hc: HealthConfig) -> str | None:
    """Why an answer does not pass, or None when it does."""
    if status != hc.status:
        return f"answered {status}, expected {hc.status}"
    if hc.body_contains and hc.body_contains not in body:
        return f"answered {status} without {hc.body_contains!r} in the body"
    return None


def gate(
    ex: Executor,
    hc: HealthConfig,
    target: tuple[str, int],
    container: str,
    secrets: Iterable[Secret] = (),
    *,
    progress: Callable[[Attempt], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    state: Callable[[Executor, str], tuple[str, int]] | None = None,
) -> Verdict:
    """Run the gate against `target` (host, port as seen from the target host)."""
    secrets = list(secrets)
    start = time.monotonic()
    attempts: list[Attempt] = []
    reason = "no attempt was made"
    for n in range(1, hc.attempts + 1):
        attempt = Attempt(n, round(time.monotonic() - start, 3))
        try:
            # Reached again at every attempt: a dropped SSH connection took its forwarded
            # port with it, and the executor connects anew.
            host, port = ex.reach(*target)
            status, body = probe_once(ex, host, port, hc.path, hc.timeout)
            attempt.status = status
            attempt.body = redact(body[:BODY_KEPT], secrets)
            problem = check(status, body, hc)
            if problem and attempt.body.strip():
                problem += f"; the body: {shown(attempt.body)}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # ValueError: a path http.client cannot send (config check refuses those).
            problem = attempt.error = redact(_describe(exc), secrets)
        except RemoteError as exc:  # reaching the host again failed (SSH is down)
            problem = attempt.error = redact(f"the host cannot be reached: {one_line(exc)}",
                                             secrets)
        attempts.append(attempt)
        if progress:
            progress(attempt)
        if problem is None:
            return Verdict(True, f"healthy after {n} attempt(s)", attempts,
                           time.monotonic() - start)
        reason = problem
        now, restarts = (state or container_state)(ex, container)
        if now == "unreachable":
            reason = problem = (f"{problem}; the SSH connection to the host dropped (the "
                                "container's state is unknown)")
        elif now in ("exited", "dead", "missing") or restarts > 0 or now == "restarting":
            what = f"restarted {restarts} time(s)" if restarts else f"is {now}"
            return Verdict(False, f"the container {what} (last check: {problem})", attempts,
                           time.monotonic() - start)
        if n < hc.attempts:
            sleep(hc.interval)
    return Verdict(
        False,
        f"not healthy after {hc.attempts} attempts over {time.monotonic() - start:.1f}s "
        f"(last: {reason})",
        attempts,
        time.monotonic() - start,
    )


def shown(body: str, limit: int = BODY_SHOWN) -> str:
    """An answer's body on one line, cut at `limit` characters (already redacted)."""
    text = " ".join(body.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed the connection without answering"
    return str(exc) or type(exc).__name__
