"""`plainsail logs [--tail N]`: the running app container's logs on each host.

An app may log its own secrets (a connection URL in an error, a token in a debug line):
the values of `app.secrets` are redacted as the logs are printed, along with the registry
password and webhook URLs. They are taken from this environment and from the host's env
file (mode 0600, the values the containers were given), so secrets from other sources
(file, command, Vault) are redacted too without being fetched again.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping

from plainsail.config import model as configlib
from plainsail.config.secretsources import env_values
from plainsail.errors import PlainsailError
from plainsail.hosts import docker
from plainsail.hosts.containers import current, list_service
from plainsail.hosts.executor import Executor
from plainsail.hosts.fleet import opened
from plainsail.output import say, warn
from plainsail.secret import Secret, redact
from plainsail.swarm import service as swarm_service


def secrets_to_hide(cfg: configlib.Config, environ: Mapping[str, str]) -> list[Secret]:
    """The config's secrets plus the app's, as far as this environment sets them."""
    return [*cfg.secrets(), *env_values(cfg, environ)]


def host_env_secrets(ex: Executor, env_file: str, names: Iterable[str]) -> list[Secret]:
    """The values of the secret `names` in the host's env file (empty when unreadable)."""
    res = ex.run(["cat", env_file], timeout=30, check=False, what="read the env file")
    wanted = set(names)
    found = []
    for line in res.stdout.splitlines() if res.ok else []:
        key, sep, value = line.partition("=")
        if sep and key in wanted and value:
            found.append(Secret(value))
    return found


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config, swarm_ok=True)
    secrets = secrets_to_hide(cfg, os.environ)
    with opened(cfg, args.host) as fleet:
        for o in fleet:
            if cfg.target == "swarm":
                _print_logs(o.ex, swarm_service.logs_argv(cfg.service, args.tail),
                            f"==> {o.host.name}: the tasks of the Swarm service {cfg.service}",
                            secrets, "docker service logs")
                continue
            containers = list_service(o.ex, cfg.service)
            cur = current(containers) or (containers[0] if containers else None)
            if cur is None:
                say(f"==> {o.host.name}: no container of {cfg.service}")
                continue
            secrets += host_env_secrets(o.ex, o.paths.env, cfg.app.secrets)
            _print_logs(o.ex, docker.logs(cur.name, args.tail),
                        f"==> {o.host.name}: {cur.name} ({cur.tag}, {cur.status})", secrets,
                        "docker logs")
    return 0


def _print_logs(ex: Executor, argv: list[str], heading: str, secrets: list[Secret],
                what: str) -> None:
    say(heading)
    res = ex.run(argv, timeout=60, check=False)
    # A Swarm task that never reached a node (one of an update that was undone) has no
    # logs: Docker says so and exits 1 after printing the other tasks' logs.
    partial = "some logs could not be retrieved" in res.stderr
    if not res.ok and not partial:
        raise PlainsailError(redact(str(ex.failure(res, what)), secrets))
    if partial:
        warn(redact(" ".join(res.stderr.split()), secrets))
    text = res.stdout + ("\n" if res.stdout and res.stderr and not partial else "") + (
        "" if partial else res.stderr)
    for line in text.splitlines():
        say(redact(line, secrets))
