"""plainsail's per-host reverse proxy (Caddy 2): zero-downtime switches between containers.

The API the deploy engine calls (every function takes the host's Executor and the Config):

- `preflight(ex, cfg) -> HostState`           read only: ProxyError when the proxy there runs
  with other host-level settings (naming the service that set them), or when this
  service's route would overlap another service's route there (plainsail.proxy.overlap)
- `ensure_booted(ex, cfg) -> Booted`          the proxy runs with this config's host-level
  settings and answers (idempotent, locked); ProxyError naming the service that set other
  settings
- `route_to(ex, cfg, container) -> Switched`  point the service's route at a container
  (atomic; `Switched.previous` is what to switch back to, `.in_flight` the requests then
  in flight to it)
- `check_through(ex, cfg[, container])`       health.path through the proxy, by host name;
  ProxyError when it does not pass or the answer did not come from `container` through
  this service's route
- `in_flight(ex, cfg, container) -> int` and `drain(ex, cfg, container[, timeout])`
- `maintenance(ex, cfg, on[, message])`, `remove_route(ex, cfg)`
- `status(ex, cfg)`, `logs(ex, cfg, tail)`, `root_certificate(ex, cfg)`
- `ensure_traffic_log(ex, cfg) -> bool`, `read_traffic(ex, cfg, since) -> [Sample]`,
  `host_time(ex)`: the per-upstream answers the release gate on real traffic judges
  (plainsail.proxy.traffic)
- `split(ex, cfg, container, share) -> Switched`: a canary share of the route to
  `container` (Caddy 2.8+); `check_canary(ex, cfg)` refuses an older running proxy

Commands on the host are built as argv lists in `plainsail.proxy.argv`; Caddy's JSON in
`plainsail.proxy.caddyconf`; the admin API client in `plainsail.proxy.admin`.
"""

from plainsail.proxy.admin import ProxyError
from plainsail.proxy.host import Booted, ensure_booted, logs, preflight, read_state, status
from plainsail.proxy.routes import (
    Switched,
    check_through,
    drain,
    in_flight,
    maintenance,
    probe_through,
    remove_route,
    root_certificate,
    route_to,
    split,
    upstream_of,
)
from plainsail.proxy.traffic import ensure_log as ensure_traffic_log
from plainsail.proxy.traffic import host_time
from plainsail.proxy.traffic import read as read_traffic
from plainsail.proxy.version import check_canary

__all__ = [
    "Booted", "ProxyError", "Switched", "check_through", "drain", "ensure_booted",
    "check_canary", "ensure_traffic_log", "host_time", "read_traffic", "split",
    "in_flight", "logs", "maintenance", "preflight", "probe_through", "read_state", "remove_route",
    "root_certificate", "route_to", "status", "upstream_of",
]
