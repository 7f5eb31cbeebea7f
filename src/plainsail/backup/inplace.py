"""`plainsail backup restore ID --in-place --yes`: the app's own database put back to the
backup, with the service out of the way meanwhile.

1. Every host locked (no deploy meanwhile); the backup's checksum checked on its host.
2. Behind the proxy: maintenance on (503 with Retry-After); otherwise the app container
   stopped (kept, not removed).
3. `pg_restore --clean --if-exists --single-transaction` into the app's database: a failure
   rolls back and leaves the database as it was.
4. Maintenance off, or the app container started again and its health gate passed, on
   every host; locks released.

Outcomes (closed set): `restored` (the database is the backup's, the service serves
again); `restore-failed` (the database was left as it was, the service serves again);
`service-down` (the service could not be put back on some host: see the reason).
"""

from __future__ import annotations

import time
from typing import Any

from plainsail.backup import restore as restorelib
from plainsail.backup import signals
from plainsail.backup.host import BackupError
from plainsail.backup.ops import _find, _lock_info, public
from plainsail.config.model import Config
from plainsail.deploy.history import append_local
from plainsail.deploy.plan import app_network
from plainsail.deploy.records import now, origin, who
from plainsail.errors import PlainsailError, one_line
from plainsail.hosts import docker
from plainsail.hosts import state as hoststate
from plainsail.hosts.containers import current
from plainsail.hosts.executor import Executor
from plainsail.hosts.fleet import Opened, opened

RESTORED, RESTORE_FAILED, SERVICE_DOWN = "restored", "restore-failed", "service-down"
INTERRUPTED = "interrupted"
OUTCOMES = (RESTORED, RESTORE_FAILED, SERVICE_DOWN, INTERRUPTED)


def _out_of_the_way(cfg: Config, o: Opened, stopped: dict[str, str | None]) -> None:
    """Maintenance on (proxy) or the app stopped. `stopped` learns what to put back
    before anything is changed, so that a failure or a signal midway puts it back too."""
    if cfg.proxy is not None:
        from plainsail import proxy

        stopped[o.host.name] = None
        proxy.maintenance(o.ex, cfg, True, "Restoring the database; back shortly.")
        return
    found = hoststate.survey(o.ex, cfg.host_dir, cfg.service, timeout=cfg.timeouts.query)
    running = current(found.containers)
    if running is None:
        return
    stopped[o.host.name] = running.name
    o.ex.run(docker.stop(running.name, cfg.app.stop_timeout),
             timeout=cfg.app.stop_timeout + cfg.timeouts.command, what="docker stop")


def _back(cfg: Config, o: Opened, stopped: str | None) -> None:
    """Maintenance off, or the stopped container started and its health gate passed."""
    if cfg.proxy is not None:
        from plainsail import proxy

        proxy.maintenance(o.ex, cfg, False)
    elif stopped:
        from plainsail.deploy import health

        o.ex.run(docker.start(stopped), timeout=cfg.timeouts.command, what="docker start")
        verdict = health.gate(o.ex, cfg.health, health.app_address(o.ex, cfg, stopped),
                              stopped, o.ex.secrets)
        if not verdict.healthy:
            raise BackupError(f"{stopped} started but failed its health gate "
                              f"({verdict.reason})")


def restore_in_place(cfg: Config, backup_id: str, hosts: list[str],
                     executors: dict[str, Executor] | None = None) -> dict[str, Any]:
    if cfg.backup is None or not cfg.backup.image:
        raise BackupError("plainsail.yml has no backup block with an image")
    started, t0 = now(), time.monotonic()
    info = _lock_info(cfg, "restore")
    with signals.guarded() as guard, opened(cfg, hosts, executors) as fleet:
        where, rec = _find(cfg, fleet, backup_id)
        locked: list[Opened] = []
        stopped: dict[str, str | None] = {}
        try:
            for o in fleet:
                hoststate.acquire(o.ex, o.paths, info)
                locked.append(o)
            argv = restorelib.restore_argv(cfg, where.paths, rec, "", "in-place",
                                           app_network(cfg), attempt=info.deploy_id)
            outcome, reason = RESTORED, ""
            try:
                # Each command runs whole (a `docker stop` cut short here would still stop
                # the app on the host after it was started again): a signal is acted on
                # between them, and waits for the restore's end once it has begun.
                for o in fleet:
                    guard.check()
                    _out_of_the_way(cfg, o, stopped)
                guard.check()
                restorelib.run_restore(where.ex, argv, cfg.backup.timeout)
                reason = f"the database is back to backup {rec['id']} of {rec['created']}"
            except PlainsailError as exc:
                outcome = RESTORE_FAILED
                reason = f"{one_line(exc)}; the database was left as it was"
            except signals.Interrupted:
                outcome = INTERRUPTED
                reason = ("interrupted by a signal before the restore began; the database "
                          "was left as it was")
            if guard.pending is not None and outcome != INTERRUPTED:
                reason += " (a signal came during the restore: it was let finish)"
            down = []
            for o in fleet:
                if o.host.name not in stopped:
                    continue
                try:
                    _back(cfg, o, stopped[o.host.name])
                except PlainsailError as exc:
                    down.append(f"{o.host.name}: {one_line(exc)}")
            if down:
                outcome = SERVICE_DOWN
                reason = (f"{reason}; but the service could not be put back: "
                          f"{'; '.join(down)}; start it by hand (plainsail maintenance off, or "
                          "docker start)")
            elif cfg.proxy is not None:
                reason += "; maintenance is off again"
            else:
                reason += "; the app runs again"
        finally:
            for o in locked:
                hoststate.release(o.ex, o.paths, info.deploy_id)
        result: dict[str, Any] = {
            "kind": "backup-restore", "id": info.deploy_id, "service": cfg.service,
            "backup": public({**rec, "host": where.host.name}), "outcome": outcome,
            "reason": reason, "started": started, "ended": now(),
            "seconds": round(time.monotonic() - t0, 3), "who": who(cfg), "origin": origin(),
            "hosts": [o.host.name for o in fleet],
            "maintenance": cfg.proxy is not None}
        for o in fleet:
            try:
                hoststate.append_history(o.ex, o.paths, result)
            except PlainsailError:
                pass
        append_local(cfg, result)
    return result
