"""The Swarm objects a deploy makes sure of before it changes the service (the overlay
network, the configs), and how a command that joins the network is run.

A manager keeps its own copy of a Swarm network for a moment after the network was removed
(while the last container attached to it on that node is torn down): for that moment
`docker network inspect NAME` still answers, so the network is not created again, and a
`docker run --network NAME` or `docker service create --network NAME` fails with "network
ID not found" (the name resolves to an id the Swarm no longer has). Nothing started then,
so the command is safe to run again once the stale copy is gone and the network exists.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

from plainsail.config.model import Config
from plainsail.errors import RemoteError
from plainsail.hosts.executor import Executor, Result, error_line
from plainsail.swarm import service as svc

# How Docker says a network is unknown when a container or service asks to join it: the
# name resolved to a removed network's id ("network ID not found"), or the Swarm refused
# the attachment ("Could not attach to network NAME: rpc error: code = NotFound desc =
# network NAME not found").
_NOT_FOUND = re.compile(r"Error response from daemon: (?:.*\b)?network \S+ not found")
# How often a command that found the network missing is run again, and how long the wait
# for a removed network's stale copy to go may take each time.
ATTEMPTS = 3
SETTLE_SECONDS = 15.0
POLL_SECONDS = 0.25
DOCKER_RUN_FAILED = 125

T = TypeVar("T")


def unknown(text: str) -> bool:
    """Does this output say the engine did not find a network it was asked to join?"""
    return bool(_NOT_FOUND.search(text))


def ensure(ex: Executor, cfg: Config, check: list[str], create: list[str], what: str,
           stdin: str | None = None) -> bool:
    """Create an object (network, config) unless it exists; True when it was created.
    Another deployer creating it meanwhile is no error."""
    if ex.run(check, check=False, timeout=cfg.timeouts.query, what=f"inspect {what}").ok:
        return False
    res = ex.run(create, check=False, input=stdin, timeout=cfg.timeouts.command,
                 what=f"create {what}")
    if res.ok:
        return True
    if "already exists" in res.tail():
        return False
    raise RemoteError(f"{ex.host.name}: could not create {what}: "
                      f"{error_line(res.tail()) or 'no output'}",
                      host=ex.host.name, argv=res.argv, returncode=res.returncode,
                      output_tail=res.tail())


def ensure_network(ex: Executor, cfg: Config, network: str) -> bool:
    """The service's overlay network, created unless it exists; True when it was created."""
    return ensure(ex, cfg, svc.network_inspect_argv(network), svc.network_create_argv(network),
                  f"the overlay network {network}")


def settle(ex: Executor, cfg: Config, network: str, *,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """After the engine said it does not know the network: wait until the manager's stale
    copy is gone (inspect fails), about SETTLE_SECONDS at most, then make sure it exists."""
    for _ in range(round(SETTLE_SECONDS / POLL_SECONDS)):
        if not ex.run(svc.network_inspect_argv(network), check=False,
                      timeout=cfg.timeouts.query,
                      what=f"inspect the overlay network {network}").ok:
            break
        sleep(POLL_SECONDS)
    ensure_network(ex, cfg, network)


def attach(ex: Executor, cfg: Config, network: str, run: Callable[[], T], *,
           on_retry: Callable[[str], None] = lambda _: None,
           sleep: Callable[[float], None] = time.sleep) -> T:
    """run() a command that joins the network (it returns a Result or raises RemoteError);
    when the engine answered that it does not know the network, settle() and run it again,
    up to ATTEMPTS times in all. Any other answer is returned (or raised) as it is."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            out = run()
        except RemoteError as exc:
            if attempt == ATTEMPTS or not unknown(exc.output_tail):
                raise
            said = exc.output_tail
        else:
            # 125: `docker run` itself failed, the container never started (a command
            # that ran and printed such a line is never run twice).
            if not isinstance(out, Result) or out.returncode != DOCKER_RUN_FAILED \
                    or attempt == ATTEMPTS or not unknown(out.tail()):
                return out
            said = out.tail()
        on_retry(f"the engine does not know the overlay network {network} yet "
                 f"({error_line(said)}); making sure of it and trying again")
        settle(ex, cfg, network, sleep=sleep)
    raise AssertionError("unreachable")  # pragma: no cover
