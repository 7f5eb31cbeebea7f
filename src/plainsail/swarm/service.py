"""The Swarm service as plainsail writes it: argv lists and the spec they set (no I/O).

A service is created once (`docker service create`) and changed with `docker service
update`, always to a whole spec plainsail computes: the image by digest (with
`--no-resolve-image`, so no node ever resolves a tag), labels naming the release, the
app's plain settings as environment variables, and each app secret as a Docker secret of
its own (a new, versioned name per deploy: Docker secrets cannot change). The secrets reach
the app as environment variables through a small entry shim (a Docker config mounted at
ENTRY_PATH, run by the image's `/bin/sh`): it exports each `/run/secrets/plainsail-env.NAME`
as NAME and execs the image's own command. Secret values travel only on stdin
(`docker secret create NAME -`): never in an argv, the service's env or its inspect output.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plainsail.config.model import Config
from plainsail.swarm import healthcheck
from plainsail.swarm.healthcheck import Health

LABEL_SERVICE = healthcheck.LABEL  # one name for the label, in the module both use
LABEL_TAG = "plainsail.tag"
LABEL_DIGEST = "plainsail.digest"
LABEL_DEPLOY = "plainsail.deploy"
LABEL_SETTINGS = "plainsail.settings"
RELEASE_LABELS = (LABEL_TAG, LABEL_DIGEST, LABEL_DEPLOY, LABEL_SETTINGS)

SECRET_PREFIX = "plainsail-env."  # /run/secrets/plainsail-env.NAME holds the variable NAME
ENTRY_PATH = "/plainsail-entry.sh"
ENTRY_SCRIPT = """\
# plainsail's entry shim for Swarm services: each Docker secret mounted as
# /run/secrets/plainsail-env.NAME becomes the environment variable NAME (its exact bytes),
# then the image's own command runs in this process's place.
for f in /run/secrets/plainsail-env.*; do
  [ -f "$f" ] || continue
  v=$(cat "$f"; echo x)
  export "${f#/run/secrets/plainsail-env.}=${v%x}"
done
exec "$@"
"""
ENTRYPOINT = ["/bin/sh", ENTRY_PATH]
# The config files plainsail mounts into each task (and swaps on an update).
MOUNTED = (ENTRY_PATH, healthcheck.HEALTH_PATH)


def entry_config_name() -> str:
    """The Docker config holding the shim: named for its content (configs cannot change)."""
    return "plainsail-entry-" + hashlib.sha256(ENTRY_SCRIPT.encode()).hexdigest()[:12]


def secret_name(service: str, variable: str, deploy_id: str) -> str:
    """A Docker secret's name for one app secret of one deploy (at most 64 characters)."""
    version = deploy_id[-6:]
    name = f"{service}_{variable}_{version}"
    if len(name) <= 64:
        return name
    short = hashlib.sha256(variable.encode()).hexdigest()[:8]
    return f"{service[:64 - len(short) - len(version) - 2]}_{short}_{version}"


@dataclass(frozen=True)
class Spec:
    """The parts of a service's spec plainsail sets and restores."""

    image: str  # repo@digest
    labels: dict[str, str] = field(default_factory=dict)
    env: list[str] = field(default_factory=list)  # KEY=VALUE, plain settings only
    args: list[str] = field(default_factory=list)  # after the entry shim: the app's command
    secrets: dict[str, str] = field(default_factory=dict)  # variable -> Docker secret name
    # (target, published) host-mode ports: app.publish, or none behind the proxy
    ports: list[tuple[int, int]] = field(default_factory=list)
    # Docker configs plainsail mounts: file path in the task -> config name (the entry shim,
    # the health check's script)
    configs: dict[str, str] = field(default_factory=dict)
    health: Health | None = None  # Swarm's health check of each task (healthcheck.py)

    @property
    def digest(self) -> str:
        return self.image.partition("@")[2]

    @property
    def tag(self) -> str:
        return self.labels.get(LABEL_TAG, "")


def parse_spec(data: Mapping[str, Any]) -> Spec:
    """A Spec from `docker service inspect` (one element of its JSON list)."""
    spec = data.get("Spec") or {}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    secrets = {}
    for s in container.get("Secrets") or []:
        target = str((s.get("File") or {}).get("Name") or "")
        if target.startswith(SECRET_PREFIX):
            secrets[target[len(SECRET_PREFIX):]] = str(s.get("SecretName") or "")
    ports = [(int(p.get("TargetPort") or 0), int(p.get("PublishedPort") or 0))
             for p in (spec.get("EndpointSpec") or {}).get("Ports") or []]
    configs = {str((c.get("File") or {}).get("Name") or ""): str(c.get("ConfigName") or "")
               for c in container.get("Configs") or []}
    return Spec(image=str(container.get("Image") or ""),
                labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
                env=[str(e) for e in container.get("Env") or []],
                args=[str(a) for a in container.get("Args") or []],
                secrets=secrets, ports=ports,
                configs={k: v for k, v in configs.items() if k in MOUNTED},
                health=healthcheck.parse(container))


def app_command(cfg: Config, image_config: Mapping[str, Any]) -> list[str]:
    """What the shim execs: the image's entrypoint with app.command or the image's CMD."""
    entry = [str(x) for x in image_config.get("Entrypoint") or []]
    cmd = list(cfg.app.command) if cfg.app.command else [
        str(x) for x in image_config.get("Cmd") or []]
    return entry + cmd


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def settings_args(cfg: Config) -> list[str]:
    """The options that do not change between releases: replicas, placement, update
    policy, resources, port, network, stop grace period."""
    sw = cfg.swarm
    assert sw is not None
    argv = ["--replicas", str(sw.replicas),
            "--update-parallelism", str(sw.update.parallelism),
            "--update-delay", _duration(sw.update.delay),
            "--update-order", sw.update.order,
            # plainsail, not Swarm, decides what a failed update becomes: Swarm pauses.
            "--update-failure-action", "pause",
            "--stop-grace-period", _duration(cfg.app.stop_timeout)]
    res = sw.resources
    for flag, value in (("--limit-cpu", res.limits.cpus), ("--reserve-cpu", res.reservations.cpus)):
        if value is not None:
            argv += [flag, f"{value:g}"]
    for flag, mem in (("--limit-memory", res.limits.memory),
                      ("--reserve-memory", res.reservations.memory)):
        if mem is not None:
            argv += [flag, str(mem)]
    return argv


def _labels(spec: Spec) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(spec.labels.items())]


def _secret_opt(variable: str, name: str) -> str:
    return f"source={name},target={SECRET_PREFIX}{variable}"


def _port_opt(port: tuple[int, int]) -> str:
    return f"mode=host,target={port[0]},published={port[1]}"


def _config_opt(target: str, name: str) -> str:
    return f"source={name},target={target},mode=0555"


def create_argv(cfg: Config, network: str, spec: Spec) -> list[str]:
    """`docker service create` of the service at `spec` (its first release)."""
    assert cfg.swarm is not None
    # Behind the proxy the tasks publish nothing: the proxy reaches them on the overlay.
    publish = [x for port in spec.ports for x in ("--publish", _port_opt(port))]
    argv = ["docker", "service", "create", "--detach", "--name", cfg.service,
            "--no-resolve-image", "--with-registry-auth", "--endpoint-mode", "dnsrr",
            "--network", network, *publish,
            *[x for target, name in sorted(spec.configs.items())
              for x in ("--config", _config_opt(target, name))],
            "--entrypoint", shlex.join(ENTRYPOINT), *settings_args(cfg),
            *healthcheck.args(spec.health, update=False)]
    if cfg.app.init:
        argv.append("--init")
    for c in cfg.swarm.placement:
        argv += ["--constraint", c]
    for lab in _labels(spec):
        argv += ["--label", lab, "--container-label", lab]
    for e in spec.env:
        argv += ["--env", e]
    for variable, name in sorted(spec.secrets.items()):
        argv += ["--secret", _secret_opt(variable, name)]
    return [*argv, spec.image, *spec.args]


def _swap(kind: str, now: Mapping[str, str], wanted: Mapping[str, str],
          opt: Callable[[str, str], str]) -> list[str]:
    """--KIND-rm and --KIND-add options that turn the mounted secrets or configs `now`
    (key -> Docker name) into `wanted`."""
    argv = []
    for key, name in sorted(now.items()):
        if wanted.get(key) != name:
            argv += [f"--{kind}-rm", name]
    for key, name in sorted(wanted.items()):
        if now.get(key) != name:
            argv += [f"--{kind}-add", opt(key, name)]
    return argv


def update_argv(cfg: Config, current: Spec, wanted: Spec, *, force: bool = False) -> list[str]:
    """`docker service update` from `current` to `wanted` (a release, or the way back)."""
    argv = ["docker", "service", "update", "--detach", "--no-resolve-image",
            "--with-registry-auth", "--image", wanted.image, *settings_args(cfg)]
    for key in sorted(set(current.labels) - set(wanted.labels)):
        argv += ["--label-rm", key, "--container-label-rm", key]
    for lab in _labels(wanted):
        argv += ["--label-add", lab, "--container-label-add", lab]
    now_keys = {e.partition("=")[0] for e in wanted.env}
    for key in sorted({e.partition("=")[0] for e in current.env} - now_keys):
        argv += ["--env-rm", key]
    for e in wanted.env:
        argv += ["--env-add", e]
    argv += _swap("secret", current.secrets, wanted.secrets, _secret_opt)
    for port in current.ports:  # e.g. app.publish given up for the proxy, or back
        if port not in wanted.ports:
            argv += ["--publish-rm", f"published={port[1]},target={port[0]},mode=host"]
    for port in wanted.ports:
        if port not in current.ports:
            argv += ["--publish-add", _port_opt(port)]
    argv += _swap("config", current.configs, wanted.configs, _config_opt)
    argv += healthcheck.args(wanted.health, update=True)
    argv += ["--args", shlex.join(wanted.args)]
    if force:
        argv.append("--force")
    return [*argv, cfg.service]


def wanted_spec(cfg: Config, image: str, tag: str, digest: str, deploy_id: str,
                settings: str, args: Sequence[str], secrets: Mapping[str, str],
                health: Health | None = None) -> Spec:
    """The spec of a release: plain env from app.env, each secret by its Docker name, the
    entry shim and (with `health`, a check of plainsail's) the health script mounted."""
    labels = {LABEL_SERVICE: cfg.service, LABEL_TAG: tag, LABEL_DIGEST: digest,
              LABEL_DEPLOY: deploy_id, LABEL_SETTINGS: settings}
    return Spec(image=f"{image}@{digest}", labels=labels,
                env=[f"{k}={v}" for k, v in sorted(cfg.app.env.items())],
                args=list(args), secrets=dict(secrets),
                ports=[(cfg.app.port, cfg.app.publish)] if cfg.app.publish else [],
                configs={ENTRY_PATH: entry_config_name(), **(
                    {healthcheck.HEALTH_PATH: healthcheck.config_name()}
                    if health is not None and health.ours else {})},
                health=health)


# ---------------------------------------------------------------- small argv lists

def inspect_argv(service: str) -> list[str]:
    return ["docker", "service", "inspect", service]


def logs_argv(service: str, tail: int) -> list[str]:
    """The last `tail` lines of every task, each line naming its task and node."""
    return ["docker", "service", "logs", "--tail", str(tail), "--timestamps", service]


def rm_argv(service: str) -> list[str]:
    return ["docker", "service", "rm", service]


def secret_create_argv(name: str, service: str, deploy_id: str) -> list[str]:
    """Create a Docker secret whose value comes on stdin."""
    return ["docker", "secret", "create", "--label", f"{LABEL_SERVICE}={service}",
            "--label", f"{LABEL_DEPLOY}={deploy_id}", name, "-"]


def secret_ls_argv(service: str) -> list[str]:
    return ["docker", "secret", "ls", "--filter", f"label={LABEL_SERVICE}={service}",
            "--format", "{{.Name}}"]


def secret_rm_argv(names: Sequence[str]) -> list[str]:
    return ["docker", "secret", "rm", *names]


def entry_config_argv() -> list[str]:
    """Create the shim's Docker config (its content on stdin)."""
    return ["docker", "config", "create", "--label", f"{LABEL_SERVICE}=*",
            entry_config_name(), "-"]


def entry_config_inspect_argv() -> list[str]:
    return ["docker", "config", "inspect", "--format", "{{.ID}}", entry_config_name()]


def network_inspect_argv(network: str) -> list[str]:
    return ["docker", "network", "inspect", "--format", "{{.Driver}} {{.Scope}}", network]


def network_create_argv(network: str) -> list[str]:
    """The service's overlay network; attachable, so the migration container joins it."""
    return ["docker", "network", "create", "--driver", "overlay", "--attachable",
            "--label", f"{LABEL_SERVICE}=*", network]


# Reads the update's status and the service's running tasks in one round trip: line 1 the
# UpdateStatus (JSON or null), then `docker inspect` of the tasks (a JSON list), if any.
TASKS_SCRIPT = (
    'docker service inspect --format "{{json .UpdateStatus}}" "$1" || exit; '
    'ids=$(docker service ps -q --no-trunc --filter desired-state=running "$1") || exit; '
    '[ -z "$ids" ] || docker inspect $ids'
)


def tasks_argv(service: str) -> list[str]:
    return ["sh", "-c", TASKS_SCRIPT, "sh", service]


def nodes_argv() -> list[str]:
    """Every node: `docker node inspect` of `docker node ls -q` (one round trip)."""
    return ["sh", "-c", 'docker node inspect $(docker node ls -q)']


def parse_tasks(text: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(UpdateStatus or None, tasks) from TASKS_SCRIPT's output."""
    first, _, rest = text.partition("\n")
    try:
        status = json.loads(first) if first.strip() else None
    except ValueError:
        status = None
    tasks = json.loads(rest) if rest.strip() else []
    return (status if isinstance(status, dict) else None), list(tasks)
