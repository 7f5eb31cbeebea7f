"""The entry point of a swarm service with a `proxy` block: Caddy as a global Swarm service
(no I/O here but the probe executor's commands).

The routing mesh and service VIPs need IPVS, which not every kernel has. So plainsail runs
`<service>-proxy`, a global service of `proxy.image` (one task on every node), attached to
the service's overlay network and publishing `proxy.http_port` in host mode on each node:
the operator's load balancer points at that port on every node. Its Caddy config, a Docker
config named for its content, sends each request to an address of `tasks.<service>`
(Caddy's `dynamic a` upstreams, refreshed every second from Swarm's DNS) and tries another
task when a connection fails. Swarm takes a task out of `tasks.<service>` before it stops
it (and waits for the name to spread), and puts a new one in when it starts (or, when the
image has a HEALTHCHECK, once that passes), so an update, start-first or stop-first, never
leaves a request without a task. The app tasks publish nothing.

The deep health gate probes each new task by its overlay address from a short-lived probe
container of the proxy image on the manager, attached to the same overlay network: `docker
exec` runs one GET in it per attempt (with python3, or else wget, from the image).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

from plainsail.config.model import Config
from plainsail.errors import PlainsailError
from plainsail.hosts.executor import Executor, Result, error_line
from plainsail.swarm import objects
from plainsail.swarm import service as svc

LABEL_PROXY = "plainsail.proxy"  # the proxy service's settings: image, port and config
CONFIG_PATH = "/etc/plainsail-caddy.json"
LISTEN = 80  # Caddy's port in its container; proxy.http_port is published in host mode
REFRESH = "1s"  # how often each proxy asks Swarm's DNS for the tasks
TRY_DURATION = "10s"  # how long a request may look for a task that answers
TRY_INTERVAL = "100ms"
DIAL_TIMEOUT = "1s"


def service_name(service: str) -> str:
    """The proxy's Swarm service: `<service>-proxy` (at most 63 characters)."""
    name = f"{service}-proxy"
    if len(name) <= 63:
        return name
    return f"{service[:48]}-{hashlib.sha256(service.encode()).hexdigest()[:8]}-proxy"


def caddy_config(cfg: Config) -> str:
    """Caddy's JSON config: plain HTTP on LISTEN for any host name, every request to a
    task of `tasks.<service>` on the overlay network; a failed connection (a task just
    gone or not listening yet) and a failed GET or HEAD round trip are tried on another
    task for up to TRY_DURATION. No admin endpoint."""
    handler: dict[str, Any] = {
        "handler": "reverse_proxy",
        "dynamic_upstreams": {"source": "a", "name": f"tasks.{cfg.service}",
                              "port": str(cfg.app.port), "refresh": REFRESH},
        "load_balancing": {"selection_policy": {"policy": "round_robin"},
                           "try_duration": TRY_DURATION, "try_interval": TRY_INTERVAL,
                           "retry_match": [{"method": ["GET", "HEAD"]}]},
        "transport": {"protocol": "http", "dial_timeout": DIAL_TIMEOUT},
    }
    conf = {"admin": {"disabled": True},
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "apps": {"http": {"servers": {"plainsail": {
                "listen": [f":{LISTEN}"], "automatic_https": {"disable": True},
                "routes": [{"handle": [handler]}]}}}}}
    return json.dumps(conf, indent=1, sort_keys=True) + "\n"


def config_name(cfg: Config) -> str:
    """The Docker config holding the Caddy config, named for its content."""
    digest = hashlib.sha256(caddy_config(cfg).encode()).hexdigest()[:12]
    return f"{service_name(cfg.service)[:50]}-{digest}"


def settings(cfg: Config) -> str:
    """What the proxy service runs: its image, port and config (compared before changing)."""
    assert cfg.proxy is not None
    return hashlib.sha256(json.dumps(
        [cfg.proxy.image, cfg.proxy.http_port, config_name(cfg)]).encode()).hexdigest()[:16]


def config_create_argv(cfg: Config) -> list[str]:
    """Create the Caddy config (its content on stdin)."""
    return ["docker", "config", "create", "--label", f"{svc.LABEL_SERVICE}={cfg.service}",
            "--label", f"{LABEL_PROXY}=config", config_name(cfg), "-"]


def config_inspect_argv(cfg: Config) -> list[str]:
    return ["docker", "config", "inspect", "--format", "{{.ID}}", config_name(cfg)]


def config_ls_argv(cfg: Config) -> list[str]:
    return ["docker", "config", "ls", "--filter", f"label={svc.LABEL_SERVICE}={cfg.service}",
            "--filter", f"label={LABEL_PROXY}", "--format", "{{.Name}}"]


def _image(cfg: Config) -> str:
    assert cfg.proxy is not None
    return cfg.proxy.image


def _config_opt(cfg: Config) -> str:
    return f"source={config_name(cfg)},target={CONFIG_PATH},mode=0444"


def _publish(cfg: Config) -> str:
    assert cfg.proxy is not None
    return f"mode=host,target={LISTEN},published={cfg.proxy.http_port}"


# Each node's proxy is replaced in place (its host port allows no second one), one node at a
# time; Swarm itself goes back to the proxy's previous spec when a new one does not start.
_POLICY = ["--update-order", "stop-first", "--update-parallelism", "1",
           "--update-failure-action", "rollback", "--stop-grace-period", "5s"]


def create_argv(cfg: Config) -> list[str]:
    """`docker service create` of the proxy: global, host-mode port, on the overlay."""
    return ["docker", "service", "create", "--detach", "--name", service_name(cfg.service),
            "--mode", "global", "--no-resolve-image", "--with-registry-auth",
            "--endpoint-mode", "dnsrr", "--network", cfg.swarm_network,
            "--publish", _publish(cfg), "--config", _config_opt(cfg), *_POLICY,
            "--label", f"{svc.LABEL_SERVICE}={cfg.service}",
            "--label", f"{LABEL_PROXY}={settings(cfg)}",
            "--entrypoint", "caddy", _image(cfg), "run", "--config", CONFIG_PATH]


def update_argv(cfg: Config, current: ProxySpec) -> list[str]:
    """`docker service update` of the proxy to this config's image, port and Caddy config."""
    assert cfg.proxy is not None
    argv = ["docker", "service", "update", "--detach", "--no-resolve-image",
            "--with-registry-auth", "--image", _image(cfg), *_POLICY]
    if current.published != [cfg.proxy.http_port]:
        # (removed by target port and mode: the short form "80" would mean ingress mode)
        argv += ["--publish-rm", f"target={LISTEN},mode=host", "--publish-add", _publish(cfg)]
    current_configs = current.configs
    for name in current_configs:
        if name != config_name(cfg):
            argv += ["--config-rm", name]
    if config_name(cfg) not in current_configs:
        argv += ["--config-add", _config_opt(cfg)]
    argv += ["--label-add", f"{LABEL_PROXY}={settings(cfg)}",
             "--args", f"run --config {CONFIG_PATH}"]
    return [*argv, service_name(cfg.service)]


@dataclass(frozen=True)
class ProxySpec:
    """What plainsail reads of the proxy service: its settings label, its configs' names,
    the node ports it publishes."""

    label: str
    configs: list[str]
    published: list[int]


def parse_inspect(data: dict[str, Any]) -> ProxySpec:
    """The proxy service's ProxySpec from its `docker service inspect`."""
    spec = data.get("Spec") or {}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    names = [str(c.get("ConfigName") or "") for c in container.get("Configs") or []]
    ports = [int(p.get("PublishedPort") or 0)
             for p in (spec.get("EndpointSpec") or {}).get("Ports") or []]
    return ProxySpec(str((spec.get("Labels") or {}).get(LABEL_PROXY) or ""), names, ports)


# ---------------------------------------------------------------- the probe on the overlay

# One GET of $1 bounded by $2 seconds ($3: the same, whole seconds); prints the status on
# the first line, then the body's start. With python3 from the image, else its wget (which
# gives no body for a non-2xx answer), bounded by `timeout` where the image has it.
PROBE_SCRIPT = r"""
if command -v python3 >/dev/null 2>&1; then
  exec python3 -c '
import sys, urllib.request, urllib.error
try:
    a = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))
    s, b = a.status, a.read(4096)
except urllib.error.HTTPError as e:
    s, b = e.code, e.read(4096)
except Exception as e:
    r = getattr(e, "reason", e)
    sys.exit("timed out" if "timed out" in str(r) else str(r))
sys.stdout.write("%d\n" % s)
sys.stdout.flush()
sys.stdout.buffer.write(b)
' "$1" "$2"
fi
mkdir -p /tmp && h=/tmp/plainsail-probe.$$ || exit 1
if command -v timeout >/dev/null 2>&1; then
  b=$(timeout "$3" wget -S -q -O - "$1" 2>"$h")
else
  b=$(wget -S -q -O - "$1" 2>"$h")
fi
code=$?
s=$(sed -n 's/^ *HTTP\/[0-9.]* \([0-9][0-9]*\).*/\1/p' "$h" | tail -n 1)
if [ -z "$s" ]; then
  case $code in 124|143) echo "timed out" >&2 ;; *) tail -n 1 "$h" >&2 ;; esac
  rm -f "$h"
  exit 1
fi
rm -f "$h"
printf '%s\n%s' "$s" "$b"
"""


def probe_name(cfg: Config, deploy_id: str) -> str:
    return f"{service_name(cfg.service)[:40]}-probe-{deploy_id[-6:]}"


def probe_start_argv(cfg: Config, name: str) -> list[str]:
    """A probe container of the proxy image on the manager, on the overlay network."""
    return ["docker", "run", "--detach", "--rm", "--name", name, "--network",
            cfg.swarm_network, "--label", f"{svc.LABEL_SERVICE}={cfg.service}",
            "--label", f"{LABEL_PROXY}=probe", "--entrypoint", "sleep", _image(cfg), "900"]


def probe_rm_argv(name: str) -> list[str]:
    return ["docker", "rm", "--force", name]


class ProbeExecutor(Executor):
    """The manager's executor, but an HTTP GET runs in the probe container (which reaches
    the tasks' overlay addresses); every other command runs on the manager as before."""

    def __init__(self, inner: Executor, container: str) -> None:
        super().__init__(inner.host, inner.secrets)
        self.inner, self.container = inner, container

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return self.inner.wrap(argv)

    def run(self, argv: Sequence[str], **kw: Any) -> Result:
        return self.inner.run(argv, **kw)

    def reach(self, host: str, port: int) -> tuple[str, int]:
        return host, port

    def http_get(self, host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
        res = self.inner.run(
            ["docker", "exec", self.container, "sh", "-c", PROBE_SCRIPT, "sh",
             f"http://{host}:{port}{path}", f"{timeout:g}", str(math.ceil(timeout))],
            check=False, timeout=timeout + 30, what="probe a task")
        if res.returncode != 0:
            why = error_line(res.stderr or res.stdout) or f"exit code {res.returncode}"
            if "timed out" in why:
                raise TimeoutError(why)
            if "refused" in why.lower():
                raise ConnectionRefusedError(why)
            raise OSError(why)
        first, _, body = res.stdout.partition("\n")
        try:
            return int(first.strip()), body
        except ValueError:
            raise OSError(f"the probe said: {first[:80]}") from None


@contextmanager
def prober(ex: Executor, cfg: Config, name: str) -> Iterator[Executor]:
    """What probes the tasks: the manager's executor (the nodes' host-mode ports), or behind
    the proxy a probe container `name` on the overlay network (removed at the end)."""
    if cfg.proxy is None:
        yield ex
        return
    objects.attach(ex, cfg, cfg.swarm_network, partial(
        ex.run, probe_start_argv(cfg, name), timeout=cfg.timeouts.pull,
        what="start the probe container"))
    try:
        yield ProbeExecutor(ex, name)
    finally:
        with suppress(PlainsailError):
            ex.run(probe_rm_argv(name), check=False, timeout=cfg.timeouts.command,
                   what="remove the probe container")
