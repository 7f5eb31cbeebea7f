"""What runs on the Swarm, read through the manager: the service's spec, its tasks (node,
digest, state), the nodes' addresses, the update's status; and the deep health gate, which
probes every task of the new version on its node's host-mode port (through the manager's
SSH connection), not only Swarm's own container healthcheck."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from plainsail.config.model import Config
from plainsail.deploy import health
from plainsail.errors import PlainsailError
from plainsail.hosts.executor import Executor
from plainsail.secret import Secret
from plainsail.swarm import proxy
from plainsail.swarm import service as svc

# How long converge waits between two looks at the tasks. A look is one SSH round trip
# running three docker commands on the manager (0.1-0.2 s on a busy 2-core machine); the
# update is seen done on average half a period after Swarm finished it.
POLL_SECONDS = 0.5

# Swarm's UpdateStatus states that mean the update did not go through.
FAILED_UPDATE = ("paused", "rollback_started", "rollback_paused", "rollback_completed")


class SwarmError(PlainsailError):
    """The Swarm did not do what plainsail asked (an update paused, tasks short, ...)."""


@dataclass(frozen=True)
class Task:
    id: str
    node_id: str
    image: str
    state: str  # Swarm's task state: running, starting, failed, ...
    error: str
    deploy: str = ""  # the plainsail deploy whose spec the task runs (its container label)
    node: str = ""  # the node's hostname
    address: str = ""  # the node's address
    ip: str = ""  # the task's address on the service's overlay network

    @property
    def digest(self) -> str:
        return self.image.partition("@")[2]

    def to_json(self) -> dict[str, str]:
        return {"task": self.id, "node_id": self.node_id, "node": self.node,
                "address": self.address, "ip": self.ip, "digest": self.digest,
                "state": self.state, "error": self.error}


def current_spec(ex: Executor, cfg: Config) -> tuple[svc.Spec | None, dict[str, Any] | None]:
    """The service's spec and raw inspect data, (None, None) when no such service exists."""
    data = inspect(ex, cfg, cfg.service)
    if data is None:
        return None, None
    return svc.parse_spec(data), data


def inspect(ex: Executor, cfg: Config, service: str) -> dict[str, Any] | None:
    """`docker service inspect` of a service, None when it does not exist."""
    res = ex.run(svc.inspect_argv(service), check=False, timeout=cfg.timeouts.query,
                 what="docker service inspect")
    if res.returncode != 0:
        if "no such service" in res.tail().lower() or res.stdout.strip() == "[]":
            return None
        raise ex.failure(res, "docker service inspect")
    return dict(json.loads(res.stdout)[0])


def nodes(ex: Executor, cfg: Config) -> dict[str, dict[str, str]]:
    """node id -> {hostname, address, state, availability, role}."""
    res = ex.run(svc.nodes_argv(), timeout=cfg.timeouts.query, what="docker node inspect")
    out = {}
    for n in json.loads(res.stdout):
        out[str(n["ID"])] = {
            "hostname": str((n.get("Description") or {}).get("Hostname") or ""),
            "address": str((n.get("Status") or {}).get("Addr") or ""),
            "state": str((n.get("Status") or {}).get("State") or ""),
            "availability": str((n.get("Spec") or {}).get("Availability") or ""),
            "role": str((n.get("Spec") or {}).get("Role") or ""),
        }
    return out


def ready(known: dict[str, dict[str, str]]) -> list[str]:
    """The ids of the nodes that can take a task: ready and active."""
    return [k for k, n in known.items()
            if n.get("state") == "ready" and n.get("availability") == "active"]


def node_name(node: dict[str, str]) -> str:
    name, address = node.get("hostname", ""), node.get("address", "")
    return f"{name} ({address})" if name and address else name or address or "?"


def _overlay_ip(task: dict[str, Any], network: str) -> str:
    for att in task.get("NetworksAttachments") or []:
        if ((att.get("Network") or {}).get("Spec") or {}).get("Name") == network:
            for addr in att.get("Addresses") or []:
                return str(addr).partition("/")[0]
    return ""


def tasks(ex: Executor, cfg: Config, known: dict[str, dict[str, str]],
          service: str | None = None) -> tuple[dict[str, Any] | None, list[Task]]:
    """(UpdateStatus, the tasks Swarm wants running) of the service (or of `service`), each
    with its node's name and address and its overlay address (`known` is refreshed in
    place when a task is on a node not seen yet)."""
    res = ex.run(svc.tasks_argv(service or cfg.service), timeout=cfg.timeouts.query,
                 what="read the service's tasks")
    status, raw = svc.parse_tasks(res.stdout)
    found = []
    for t in raw:
        node_id = str(t.get("NodeID") or "")
        if node_id and node_id not in known:
            known.update(nodes(ex, cfg))
        node = known.get(node_id, {})
        st = t.get("Status") or {}
        spec = (t.get("Spec") or {}).get("ContainerSpec") or {}
        found.append(Task(
            id=str(t.get("ID") or ""), node_id=node_id, image=str(spec.get("Image") or ""),
            state=str(st.get("State") or ""), error=str(st.get("Err") or ""),
            deploy=str((spec.get("Labels") or {}).get(svc.LABEL_DEPLOY) or ""),
            node=node.get("hostname", ""), address=node.get("address", ""),
            ip=_overlay_ip(t, cfg.swarm_network)))
    return status, found


def converge(ex: Executor, cfg: Config, image: str, deploy: str, deadline: float,
             known: dict[str, dict[str, str]], *, created: bool = False,
             on_wait: Callable[[str], None] = lambda _: None,
             sleep: Callable[[float], None] = time.sleep) -> list[Task]:
    """Wait until `swarm.replicas` tasks of `image` and of the spec of deploy `deploy`
    run (a task of the same image but an older spec, e.g. before a `--force` or a settings
    change, does not count) and the update (if any) completed; the tasks. SwarmError when
    the update paused or rolled back, when a task of a service this attempt `created`
    failed, or at the deadline (the reason says how many tasks ran)."""
    assert cfg.swarm is not None
    want = cfg.swarm.replicas
    while True:
        status, found = tasks(ex, cfg, known)
        state = str((status or {}).get("State") or "")
        if state in FAILED_UPDATE:
            msg = str((status or {}).get("Message") or "")
            raise SwarmError(f"Swarm's update is {state.replace('_', ' ')}"
                             + (f": {msg}" if msg else ""))
        new = [t for t in found if t.image == image and t.deploy == deploy]
        running = [t for t in new if t.state == "running"]
        old = [t for t in found if t not in new]
        done = state in ("", "completed") and len(running) >= want and not old
        if done:
            return running
        errors = sorted({t.error for t in new if t.error})
        where = (f"{len(running)} of {want} task(s) of the new version running"
                 + (f", {len(old)} older still" if old else "")
                 + (f"; task errors: {'; '.join(errors)}" if errors else ""))
        unplaced = [t for t in new if t.state == "pending" and "no suitable node" in t.error]
        if unplaced:
            _too_few_nodes(ex, cfg, known, len(unplaced), where)
        if created and status is None:
            _failed_on_create(ex, cfg, where)
        if time.monotonic() >= deadline:
            raise SwarmError(f"the service did not converge in time: {where}")
        on_wait(where)
        sleep(POLL_SECONDS)


# How Swarm words a task whose container exited non-zero (its app, or a health-check kill).
APP_FAILED = "task: non-zero exit"


def failed_argv(service: str) -> list[str]:
    """The errors of the service's tasks that Swarm stopped (and replaced)."""
    return ["docker", "service", "ps", "--no-trunc", "--filter", "desired-state=shutdown",
            "--format", "{{.Error}}", service]


def _failed_on_create(ex: Executor, cfg: Config, where: str) -> None:
    """SwarmError when a task of a service just created failed by itself: its app exited,
    or Swarm's health check stopped it as unhealthy (both "task: non-zero exit (N)").
    Swarm restarts such a task for ever and has no update whose failure action could stop
    it; an update's first failed task pauses it (`pause`), and a service's first release is
    held to the same rule. Other task errors (a node not ready for the new network yet, an
    image still being pulled) are Swarm's to retry, and left to the deadline."""
    res = ex.run(failed_argv(cfg.service), check=False, timeout=cfg.timeouts.query,
                 what="read the service's failed tasks")
    said = (line.strip().strip('"') for line in res.stdout.splitlines())  # printed quoted
    errors = [e for e in said if e.startswith(APP_FAILED)]
    if not res.ok or not errors:
        return
    unhealthy = sum("unhealthy" in e for e in errors)
    raise SwarmError(
        f"{len(errors)} task(s) of the new service failed"
        + (f" ({unhealthy} stopped by Swarm's health check of {cfg.health.path})"
           if unhealthy else "")
        + f": {sorted(set(errors))[0]}; {where}")


def _too_few_nodes(ex: Executor, cfg: Config, known: dict[str, dict[str, str]],
                   unplaced: int, where: str) -> None:
    """SwarmError when Swarm cannot place a task because fewer nodes are ready than the
    service has replicas: each node holds one task (its host-mode port), so the update
    cannot complete until a node comes back; waiting for the deadline would change nothing.
    A shortfall of another kind (placement constraints, resources) is left to the deadline,
    as is any behind the proxy (the tasks publish no port: a node may hold several)."""
    assert cfg.swarm is not None
    if cfg.proxy is not None:
        return
    known.update(nodes(ex, cfg))
    up = ready(known)
    if len(up) >= cfg.swarm.replicas:
        return
    gone = sorted(f"{node_name(n)} is {n.get('state') or '?'}"
                  + (f" ({n['availability']})" if n.get("availability") not in ("active", "")
                     else "")
                  for k, n in known.items() if k not in up)
    raise SwarmError(
        f"Swarm cannot place {unplaced} task(s): {'; '.join(gone) or 'nodes are missing'}, "
        f"and the {len(up)} ready node(s) hold at most {len(up)} of the "
        f"{cfg.swarm.replicas} replicas (one task per node: host-mode port "
        f"{cfg.app.publish}); {where}")


def task_state(ex: Executor, task_id: str) -> tuple[str, int]:
    """A task's state in the terms of `health.container_state` (for the gate's checks)."""
    res = ex.run(["docker", "inspect", "--format", "{{.Status.State}}", task_id],
                 check=False, timeout=30, what="inspect task")
    if res.returncode == 255 and not ex.host.is_local:
        return "unreachable", 0
    if res.returncode != 0:
        return "missing", 0
    state = res.stdout.strip()
    return ("running" if state == "running" else "exited" if state in (
        "failed", "shutdown", "rejected", "complete", "orphaned", "remove") else state), 0


UNREACHABLE = "No route to host"  # EHOSTUNREACH: no neighbour entry for the address
OVERLAY_HINT = (
    "; the manager reaches no task on that node over the overlay network: the nodes must "
    "reach each other on 7946/tcp and udp (Swarm's gossip, which spreads the tasks' "
    "addresses) and 4789/udp (VXLAN), and an engine that started again in the last minute "
    "rejoins the gossip some 30 s after its node is Ready")


def probe_target(cfg: Config, task: Task) -> tuple[str, int]:
    """Where the gate asks a task: by its overlay address on app.port behind the proxy (from
    the probe container), else its node's host-mode port app.publish."""
    if cfg.proxy is not None:
        return task.ip, cfg.app.port
    assert cfg.app.publish
    return task.address, cfg.app.publish


def gate(ex: Executor, cfg: Config, running: list[Task], secrets: list[Secret],
         progress: Callable[[Task, health.Attempt], None] | None = None
         ) -> tuple[bool, str, list[dict[str, Any]]]:
    """The deep health gate on every task, in turn, until one fails: (all healthy, the
    reason, the verdicts of the tasks probed). Behind the proxy `ex` is the probe's."""
    verdicts = []
    bad = []
    for task in running:
        verdict = health.gate(
            ex, cfg.health, probe_target(cfg, task), task.id, secrets,
            progress=partial(progress, task) if progress else None,
            state=task_state)
        verdicts.append({**task.to_json(), **verdict.to_json()})
        if not verdict.healthy:  # one failed task decides: the others are not waited for
            bad.append(f"task {task.id[:12]} on {task.address or task.node_id}: "
                       f"{verdict.reason}"
                       + (OVERLAY_HINT if cfg.proxy is not None
                          and UNREACHABLE in verdict.reason else ""))
            break
    if bad:
        return False, "; ".join(bad), verdicts
    return True, f"{len(running)} task(s) healthy", verdicts


def proxy_converge(ex: Executor, cfg: Config, known: dict[str, dict[str, str]],
                   deadline: float, *, on_wait: Callable[[str], None] = lambda _: None,
                   sleep: Callable[[float], None] = time.sleep) -> list[Task]:
    """Wait until the proxy service runs a task on every ready, active node and its update
    (if any) completed; its tasks. SwarmError when Swarm rolled its update back or at the
    deadline."""
    name = proxy.service_name(cfg.service)
    while True:
        status, found = tasks(ex, cfg, known, service=name)
        state = str((status or {}).get("State") or "")
        wanted = set(ready(known))
        running = [t for t in found if t.state == "running"]
        if state in FAILED_UPDATE:
            msg = str((status or {}).get("Message") or "")
            raise SwarmError(f"the proxy service {name}: Swarm's update is "
                             f"{state.replace('_', ' ')}" + (f": {msg}" if msg else ""))
        if (state in ("", "completed") and running and len(running) == len(found)
                and wanted <= {t.node_id for t in running}):
            return running
        errors = sorted({t.error for t in found if t.error})
        where = (f"the proxy runs on {len(running)} of {len(wanted)} node(s)"
                 + (f"; task errors: {'; '.join(errors)}" if errors else ""))
        if time.monotonic() >= deadline:
            raise SwarmError(f"the proxy service {name} did not start in time: {where}")
        on_wait(where)
        sleep(POLL_SECONDS)
