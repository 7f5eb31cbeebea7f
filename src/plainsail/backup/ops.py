"""What `plainsail backup` and `plainsail drill --backup` do, as library functions that
return plain data (the CLI renders it)."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from plainsail.backup import host as backuphost
from plainsail.backup import restore as restorelib
from plainsail.backup import signals
from plainsail.backup.host import BackupError
from plainsail.config.model import Config
from plainsail.deploy.history import append_local
from plainsail.deploy.plan import app_network
from plainsail.deploy.records import new_deploy_id, now, origin, who
from plainsail.errors import UsageError, one_line
from plainsail.hosts import state as hoststate
from plainsail.hosts.executor import Executor
from plainsail.hosts.fleet import Opened, opened


def _configured(cfg: Config) -> None:
    if cfg.backup is None or not cfg.backup.image:
        raise UsageError("plainsail.yml has no backup block with an image; add backup: "
                         "{image: <a PostgreSQL client image pinned by digest>} (see "
                         "docs/backups.md)")


def public(rec: dict[str, Any]) -> dict[str, Any]:
    """A backup as `backup list --json` shows it."""
    return {"id": rec.get("id"), "created": rec.get("created"), "size": rec.get("size"),
            "sha256": rec.get("sha256"), "deploy_id": rec.get("deploy_id"),
            "host": rec.get("host"), "seconds": rec.get("seconds"),
            "tables": rec.get("tables") or {}, "reason": rec.get("reason")}


def list_backups(cfg: Config, hosts: list[str]) -> list[dict[str, Any]]:
    """Every backup on the selected hosts, oldest first."""
    found: list[dict[str, Any]] = []
    with opened(cfg, hosts) as fleet:
        for o in fleet:
            for rec in backuphost.list_on(o.ex, o.paths, cfg.timeouts.query):
                found.append(public({**rec, "host": o.host.name}))
    return sorted(found, key=lambda r: str(r["id"]))


def _find(cfg: Config, fleet: list[Opened], backup_id: str | None
          ) -> tuple[Opened, dict[str, Any]]:
    """The backup `backup_id` (None: the newest) and the host holding it."""
    hits = [(o, rec) for o in fleet
            for rec in backuphost.list_on(o.ex, o.paths, cfg.timeouts.query)
            if backup_id is None or rec.get("id") == backup_id]
    if not hits:
        if backup_id is None:
            raise BackupError(f"no backup of {cfg.service} on "
                              f"{', '.join(o.host.name for o in fleet)}; take one with "
                              "plainsail backup create")
        raise BackupError(f"no backup {backup_id} of {cfg.service} on "
                          f"{', '.join(o.host.name for o in fleet)}; plainsail backup list "
                          "shows the ids")
    return max(hits, key=lambda h: str(h[1]["id"]))


def _lock_info(cfg: Config, kind: str) -> hoststate.LockInfo:
    return hoststate.LockInfo(
        deploy_id=new_deploy_id(), holder=f"{who(cfg)}@{socket.gethostname()}",
        machine=socket.gethostname(), pid=os.getpid(), started=now(), tag="",
        origin=origin(), kind=kind)


TAKEN, FAILED, INTERRUPTED = "taken", "failed", "interrupted"
CREATE_OUTCOMES = (TAKEN, FAILED, INTERRUPTED)


def create(cfg: Config, hosts: list[str],
           executors: dict[str, Executor] | None = None) -> dict[str, Any]:
    """Take a backup now on the first selected host, under its deploy lock (no migration
    runs meanwhile), with the env file the running app uses. It ends `taken`, `failed`
    (raised as BackupError, one line) or `interrupted` (SIGTERM or Ctrl-C: nothing of the
    backup is left on the host), recorded on the host and locally, the lock released."""
    _configured(cfg)
    assert cfg.backup is not None
    started, t0 = now(), time.monotonic()
    with signals.guarded() as guard, opened(cfg, hosts[:1] or cfg.hosts[:1], executors) as fleet:
        o = fleet[0]
        info = _lock_info(cfg, "backup")
        hoststate.acquire(o.ex, o.paths, info)
        taken: backuphost.Taken | None = None
        failure: BackupError | None = None
        try:
            guard.arm()
            has_env = o.ex.run(["test", "-f", o.paths.env], check=False,
                               timeout=cfg.timeouts.query).returncode == 0
            if not has_env:
                raise BackupError(f"{o.host.name}: {cfg.service} has no env file there yet "
                                  f"({o.paths.env}); deploy it first: the backup reads "
                                  "DATABASE_URL from it")
            bid = backuphost.new_id()
            # The container carries this attempt's id, so recover can find it.
            argv = backuphost.take_argv(cfg, o.paths, bid, info.deploy_id, app_network(cfg))
            taken = backuphost.take(o.ex, cfg, o.paths, argv, bid, "", cfg.backup.timeout,
                                    "taken by plainsail backup create")
            outcome, reason = TAKEN, f"backup {bid} taken"
        except BackupError as exc:
            failure = exc
            outcome, reason = FAILED, one_line(exc)
        except signals.Interrupted:
            outcome, reason = INTERRUPTED, ("interrupted by a signal; the unfinished backup "
                                            "was removed from the host")
        finally:
            guard.disarm()
            hoststate.release(o.ex, o.paths, info.deploy_id)
        result: dict[str, Any] = {
            "id": None, **(public(taken.record) if taken else {}),
            "removed": taken.removed if taken else [], "kind": "backup-create",
            "attempt": info.deploy_id, "service": cfg.service, "host": o.host.name,
            "outcome": outcome, "reason": reason, "started": started, "ended": now(),
            "took": round(time.monotonic() - t0, 3), "who": who(cfg), "origin": origin()}
        try:
            hoststate.append_history(o.ex, o.paths, result)
        finally:
            append_local(cfg, result)
    if failure is not None:
        raise failure
    return result


def download(cfg: Config, backup_id: str, output: Path | None,
             hosts: list[str]) -> dict[str, Any]:
    """Copy a backup to this machine (mode 0600) and check its SHA-256; a copy that does
    not match is removed."""
    with opened(cfg, hosts) as fleet:
        o, rec = _find(cfg, fleet, backup_id)
        dest = output or Path(f"{cfg.service}-{backup_id}.dump")
        if dest.exists():
            raise UsageError(f"{dest} exists; give another --output (nothing is overwritten)")
        part = dest.with_name(f".{dest.name}.partial")
        argv = o.ex.wrap(["cat", f"{backuphost.folder(o.paths)}/{rec['id']}.dump"])
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                proc = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE,
                                      timeout=cfg.backup.timeout if cfg.backup else 3600,
                                      check=False)
            if proc.returncode != 0:
                raise BackupError(f"download of {backup_id} from {o.host.name} failed: "
                                  f"{proc.stderr.decode(errors='replace').strip() or 'no output'}")
            digest = hashlib.sha256()
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != rec["sha256"]:
                raise BackupError(f"backup {backup_id} on {o.host.name} was altered: its "
                                  f"SHA-256 is {digest.hexdigest()}, not the recorded "
                                  f"{rec['sha256']}; nothing was saved")
            part.rename(dest)
        finally:
            part.unlink(missing_ok=True)
    return {**public({**rec, "host": o.host.name}), "file": str(dest)}


LET_FINISH = ("a signal came during the restore: it was let finish (cut short, it would "
              "leave a half-made database on the server)")


def restore_into(cfg: Config, backup_id: str, database: str, hosts: list[str],
                 executors: dict[str, Executor] | None = None) -> dict[str, Any]:
    """Restore into a new database NAME on the same server; the running app is untouched.
    SIGTERM or Ctrl-C before the restore began ends it with nothing done (exit 130); once
    it has begun, it runs whole."""
    _configured(cfg)
    assert cfg.backup is not None
    restorelib.check_name(database)
    start = time.monotonic()
    with signals.guarded() as guard, opened(cfg, hosts, executors) as fleet:
        o, rec = _find(cfg, fleet, backup_id)
        _not_interrupted(guard)
        argv = restorelib.restore_argv(cfg, o.paths, rec, database, "keep", app_network(cfg))
        restorelib.run_restore(o.ex, argv, cfg.backup.timeout)
    return {"outcome": "restored", "backup": public({**rec, "host": o.host.name}),
            "database": database, "seconds": round(time.monotonic() - start, 3),
            **({"note": LET_FINISH} if guard.pending is not None else {})}


def _not_interrupted(guard: signals.Guard) -> None:
    """Nothing is done yet: a signal so far ends the command as Ctrl-C does (exit 130)."""
    try:
        guard.check()
    except signals.Interrupted:
        raise KeyboardInterrupt from None


def drill(cfg: Config, hosts: list[str],
          executors: dict[str, Executor] | None = None) -> dict[str, Any]:
    """Restore the newest backup into a scratch database, compare every table's row count
    with the counts recorded when it was taken, drop the scratch database; recorded on the
    host and locally."""
    _configured(cfg)
    assert cfg.backup is not None
    drill_id = new_deploy_id()
    started = now()
    start = time.monotonic()
    scratch = f"plainsail_drill_{secrets.token_hex(4)}"
    with signals.guarded() as guard, opened(cfg, hosts, executors) as fleet:
        o, rec = _find(cfg, fleet, None)
        _not_interrupted(guard)  # once the scratch database is made, the drill runs whole
        argv = restorelib.restore_argv(cfg, o.paths, rec, scratch, "count", app_network(cfg))
        try:
            counted = restorelib.parse_counts(
                restorelib.run_restore(o.ex, argv, cfg.backup.timeout))
            error = ""
        except BackupError as exc:
            counted, error = {}, str(exc)
        recorded = {str(k): int(v) for k, v in (rec.get("tables") or {}).items()}
        differ = {t: {"recorded": recorded.get(t), "restored": counted.get(t)}
                  for t in sorted(set(recorded) | set(counted))
                  if recorded.get(t) != counted.get(t)}
        ok = not error and not differ
        seconds = round(time.monotonic() - start, 3)
        if error:
            reason = error
        elif differ:
            first = next(iter(differ))
            reason = (f"{len(differ)} table(s) differ from the counts recorded at backup "
                      f"time, e.g. {first}: recorded {differ[first]['recorded']}, restored "
                      f"{differ[first]['restored']}")
        else:
            reason = (f"backup {rec['id']} restores: {len(counted)} table(s), every row "
                      f"count as recorded, in {seconds:.1f}s")
        result: dict[str, Any] = {
            "kind": "backup-drill", "id": drill_id, "service": cfg.service,
            "host": o.host.name, "backup": public({**rec, "host": o.host.name}),
            "scratch_database": scratch, "started": started, "ended": now(),
            "seconds": seconds, "outcome": "succeeded" if ok else "failed",
            "reason": reason + (f"; {LET_FINISH}" if guard.pending is not None else ""),
            "tables": len(counted), "differences": differ, "who": who(cfg),
            "origin": origin()}
        try:
            hoststate.append_history(o.ex, o.paths, result)
        finally:
            append_local(cfg, result)
    return result
