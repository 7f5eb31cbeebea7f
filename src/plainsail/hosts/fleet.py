"""Open the selected hosts of a config for the read-only and maintenance commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from plainsail.config.model import Config
from plainsail.deploy.plan import select_hosts, ssh_options
from plainsail.hosts import state as hoststate
from plainsail.hosts.addresses import Host
from plainsail.hosts.executor import Executor, executor_for


@dataclass
class Opened:
    host: Host
    ex: Executor
    paths: hoststate.Paths


@contextmanager
def opened(cfg: Config, wanted: list[str],
           executors: dict[str, Executor] | None = None) -> Iterator[list[Opened]]:
    """The selected hosts, probed. Connections given in `executors` (by host name) are used
    and left open for the caller; the ones opened here are closed on the way out."""
    hosts = select_hosts(cfg, wanted)
    given = executors or {}
    out: list[Opened] = []
    try:
        for host in hosts:
            ex = given.get(host.name) or executor_for(host, ssh_options(cfg), cfg.secrets())
            out.append(Opened(host, ex, hoststate.probe(ex, cfg.host_dir, cfg.service)[0]))
        yield out
    finally:
        for o in out:
            if o.host.name not in given:
                o.ex.close()
