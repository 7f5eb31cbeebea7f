"""What the proxy saw of each upstream's answers, for the release gate on real traffic.

The proxy writes one JSON line per request it passes to an upstream (Caddy's
`http.handlers.reverse_proxy` debug entry "upstream roundtrip": time, upstream address,
status, duration) to `traffic.log` in its state folder; request and answer headers are
dropped before the line is written, so no cookie or token reaches the file. The deploy
reads the file over its SSH connection (`read`) and judges it
(plainsail.deploy.trafficgate). Nothing is installed on the host for it.
"""

from __future__ import annotations

import copy
from typing import Any

from plainsail.config.model import Config
from plainsail.deploy.trafficgate import Sample, parse
from plainsail.hosts.executor import Executor
from plainsail.proxy.admin import Admin, ProxyError
from plainsail.proxy.caddyconf import MOUNT
from plainsail.proxy.host import proxy_lock, read_state

LOG_NAME = "plainsail-traffic"
LOG_FILE = "traffic.log"
ROLL_MB = 100  # one file holds about 10 minutes of 1,000 requests/s
READ_BYTES = 64 * 1024 * 1024  # the end of the file a read takes, at most


def log_config() -> dict[str, Any]:
    """Caddy's `logging.logs` entry for the traffic log (Caddy 2.6 and newer)."""
    return {
        "writer": {"output": "file", "filename": f"{MOUNT}/{LOG_FILE}",
                   "roll_size_mb": ROLL_MB, "roll_keep": 1},
        "encoder": {"format": "filter", "wrap": {"format": "json"},
                    "fields": {"request": {"filter": "delete"},
                               "headers": {"filter": "delete"}}},
        "level": "DEBUG",
        "include": ["http.handlers.reverse_proxy"],
    }


def with_log(config: dict[str, Any]) -> dict[str, Any]:
    """The proxy's config with the traffic log in it (unchanged when it is there)."""
    new = copy.deepcopy(config)
    logs = new.setdefault("logging", {}).setdefault("logs", {})
    logs[LOG_NAME] = log_config()
    return new


def ensure_log(ex: Executor, cfg: Config) -> bool:
    """Make the host's proxy write the traffic log (idempotent; under the proxy's lock, as
    every whole-config change). Whether it changed the config."""
    st = read_state(ex, cfg)
    if st.status != "running" or not st.socket:
        raise ProxyError(f"{ex.host.name}: the proxy {st.name} is {st.status}: cannot turn "
                         "on its traffic log")
    with proxy_lock(ex, st.state_dir, cfg.service, "traffic log"), \
            Admin(ex, st.socket_path) as api:
        config = api.config()
        new = with_log(config)
        if new == config:
            return False
        api.load(new)
        return True


READ_SCRIPT = 'tail -c "$2" -- "$1" 2>/dev/null; true'


def read_argv(state_dir: str) -> list[str]:
    return ["sh", "-c", READ_SCRIPT, "sh", f"{state_dir}/{LOG_FILE}", str(READ_BYTES)]


def read(ex: Executor, cfg: Config, since: float) -> list[Sample]:
    """The requests the proxy logged at or after `since` (the host's clock)."""
    st = read_state(ex, cfg)
    res = ex.run(read_argv(st.state_dir), timeout=cfg.timeouts.command,
                 what="read the proxy's traffic log")
    return [s for s in parse(res.stdout) if s.ts >= since]


def host_time(ex: Executor) -> float:
    """The host's clock (the log's timestamps are the proxy's, which shares it)."""
    res = ex.run(["date", "+%s.%N"], timeout=30, what="the host's clock")
    try:
        return float(res.stdout.strip())
    except ValueError:
        raise ProxyError(f"{ex.host.name}: `date +%s.%N` answered "
                         f"{res.stdout.strip()[:40]!r}, not a time") from None
