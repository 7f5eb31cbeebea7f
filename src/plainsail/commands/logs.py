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
from plainsail.output import say
from plainsail.secret import Secret, redact


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
    cfg = configlib.load(args.config)
    secrets = secrets_to_hide(cfg, os.environ)
    with opened(cfg, args.host) as fleet:
        for o in fleet:
            containers = list_service(o.ex, cfg.service)
            cur = current(containers) or (containers[0] if containers else None)
            if cur is None:
                say(f"==> {o.host.name}: no container of {cfg.service}")
                continue
            secrets += host_env_secrets(o.ex, o.paths.env, cfg.app.secrets)
            say(f"==> {o.host.name}: {cur.name} ({cur.tag}, {cur.status})")
            res = o.ex.run(docker.logs(cur.name, args.tail), timeout=60, check=False)
            if not res.ok:
                raise PlainsailError(redact(str(o.ex.failure(res, "docker logs")), secrets))
            text = res.stdout + ("\n" if res.stdout and res.stderr else "") + res.stderr
            for line in text.splitlines():
                say(redact(line, secrets))
    return 0
