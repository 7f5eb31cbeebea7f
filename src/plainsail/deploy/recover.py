"""Recover from an interrupted attempt: a deployer that died mid-deploy (SIGKILL, a lost
laptop, a cancelled CI job) leaves its lock on the hosts and no record of how it ended.

`recover` finds such attempts (a lock whose holder is a dead process on this machine, or
any lock with `--force`), writes the missing record (`interrupted`) on each host, takes
the lock over, and deploys the last known-good version from the host records wherever
something else runs or the service is down, health gate included, without migrations.
The attempt is recorded as `recovered` (or `restore-failed` if that version does not
come back healthy). What a backup of the interrupted attempt (a deploy's backup step, or
`plainsail backup create`, whose lock is of kind `backup`) left on the host is removed
first: its container, its script if it still runs, its unfinished files. After a
`backup restore --in-place` (lock of kind `restore`), its restore container is removed
(a restore that had not committed rolls back) and maintenance turned off; the app's
container, if it was stopped, is started again by the deploy of the last good version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from plainsail.backup import host as backuphost
from plainsail.config.model import Config
from plainsail.deploy.hostregistry import pull_repository
from plainsail.deploy.outcomes import INTERRUPTED, SUCCEEDED
from plainsail.deploy.plan import Request, Target, select_hosts, ssh_options
from plainsail.deploy.records import now
from plainsail.deploy.run import Deploy, Reporter
from plainsail.errors import DeployError, UsageError
from plainsail.hosts import state as hoststate
from plainsail.hosts.executor import Executor, executor_for
from plainsail.hosts.fleet import opened
from plainsail.progress import NULL, Progress, reporter


@dataclass
class Stale:
    """An interrupted attempt's lock on one host."""

    host: str
    lock: hoststate.LockInfo | None  # None: a lock without readable info
    paths: hoststate.Paths


def last_good(records: Sequence[dict[str, Any]], skip_id: str | None) -> dict[str, Any] | None:
    """The newest successful deploy or rollback (or recovery), other than `skip_id`."""
    good = [r for r in records if r.get("outcome") in (SUCCEEDED, "recovered")
            and r.get("tag") and r.get("digest") and r.get("id") != skip_id]
    return max(good, key=lambda r: str(r.get("started", "")), default=None)


def find_stale(cfg: Config, hosts: list[str], force: bool, executors: dict[str, Executor],
               warn: Callable[[str], None]) -> tuple[list[Stale], dict[str, dict[str, Any]]]:
    """The interrupted attempts' locks, and the last good record of each selected host
    (`warn` is told of damaged history lines)."""
    stale: list[Stale] = []
    good: dict[str, dict[str, Any]] = {}
    with opened(cfg, hosts, executors) as fleet:
        for o in fleet:
            lock = hoststate.read_lock(o.ex, o.paths)
            info = lock if isinstance(lock, hoststate.LockInfo) else None
            if lock is None:
                pass
            elif info is not None and not info.holder_dead() and not force:
                raise UsageError(
                    f"{o.host.name}: the lock is held by {info.describe()}, which may still "
                    "be running (it is not a process of this machine that has died); if you "
                    "are sure it is gone, run plainsail recover --force"
                )
            else:
                stale.append(Stale(o.host.name, info, o.paths))
            rec = last_good(hoststate.read_history(o.ex, o.paths, warn),
                            info.deploy_id if info else None)
            if rec is not None:
                good[o.host.name] = rec
    return stale, good


def recover(cfg: Config, *, hosts: list[str] | None = None, force: bool = False,
            report: Reporter = NULL, environ: dict[str, str] | None = None,
            executors: dict[str, Executor] | None = None,
            progress: Progress = NULL) -> dict[str, Any]:
    hosts = hosts or []
    out = reporter(report, progress)
    given = executors or {}
    executors = {h.name: given.get(h.name) or executor_for(h, ssh_options(cfg), cfg.secrets())
                 for h in select_hosts(cfg, hosts)}
    try:
        stale, good = find_stale(cfg, hosts, force, executors, out.warn)
        if not stale:
            raise UsageError("nothing to recover: no interrupted attempt holds a lock on the "
                             "selected hosts (plainsail status shows what runs)")
        missing = [h for h in executors if h not in good]
        if missing:
            raise DeployError(f"{', '.join(missing)}: no successful deploy in the host records, "
                              "so there is no known-good version to put back; deploy a fix "
                              "with plainsail deploy, then plainsail lock release")
        picks = {(r["tag"], r["digest"]) for r in good.values()}
        if len(picks) > 1:
            detail = ", ".join(f"{h}: {r['tag']}" for h, r in good.items())
            raise UsageError(f"the hosts' last good versions differ ({detail}); recover one "
                             "group at a time with --host")
        tag, digest = picks.pop()
        for s in stale:
            ex = executors[s.host]
            # Still under the dead attempt's lock: a backup it was taking is ended and
            # its unfinished files removed, so none is ever taken for a whole one.
            removed = backuphost.remove_leftovers(ex, cfg, s.paths,
                                                  s.lock.deploy_id if s.lock else "")
            if removed:
                out.say(f"removed what the interrupted backup left: {', '.join(removed)}"
                        + (" (a restore cut short rolls back)"
                           if s.lock and s.lock.kind == "restore" else ""), s.host)
            if s.lock is not None and s.lock.kind == "restore" and cfg.proxy is not None:
                # `backup restore --in-place` put the service in maintenance.
                from plainsail import proxy

                proxy.maintenance(ex, cfg, False)
                out.say("maintenance is off again (the interrupted restore had turned it on)",
                        s.host)
            if s.lock is not None:
                hoststate.append_history(ex, s.paths, _interrupted_record(cfg, s))
            hoststate.release(ex, s.paths)
            out.say("released the lock of the interrupted attempt "
                    f"{s.lock.deploy_id if s.lock else '(no holder info)'}", s.host)
    except BaseException:
        for ex in executors.values():
            ex.close()
        raise
    interrupted = ", ".join(sorted({s.lock.deploy_id for s in stale if s.lock})) or None
    req = Request(ref=f"{tag}@{digest}", hosts=hosts, skip_migrations=True, kind="recover",
                  rollback_from=interrupted)
    target = Target(pull_repository(cfg), tag, digest, True)  # verified when it was deployed
    return Deploy(cfg, req, out, environ=environ, executors=executors,
                  resolve=lambda c, r: target).run()


def _interrupted_record(cfg: Config, s: Stale) -> dict[str, Any]:
    assert s.lock is not None
    return {
        "id": s.lock.deploy_id, "kind": s.lock.kind, "service": cfg.service,
        "image": cfg.image, "tag": s.lock.tag, "digest": None, "who": s.lock.holder,
        "origin": s.lock.origin, "started": s.lock.started, "ended": now(),
        "outcome": INTERRUPTED, "host": s.host,
        "reason": (f"the deployer (pid {s.lock.pid} on {s.lock.machine}) stopped without "
                   "finishing; found and recorded by plainsail recover"),
    }
