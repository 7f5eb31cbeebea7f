"""The steps of a host's plan around the switch: the lock and env file, the image sent to
the host's own registry, the backup and the migrations, the record and the unlock.

`HostSteps.actions()` names them for the runner (plainsail.deploy.runner); the switch's
steps are `Switcher`'s (plainsail.deploy.switch). What the backup and the migration did
is kept here (`backup`, `migration`) for the attempt's record.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

from plainsail.backup import host as backup_host
from plainsail.backup.host import BackupError
from plainsail.config.model import Config
from plainsail.deploy import hostregistry
from plainsail.deploy.outcomes import ABORTED
from plainsail.deploy.plan import PlannedStep, Target
from plainsail.deploy.runner import Action
from plainsail.deploy.switch import HostRun, Step, Switcher
from plainsail.errors import LockError, PlainsailError, RemoteError, one_line
from plainsail.hosts import docker
from plainsail.hosts import state as hoststate
from plainsail.hosts.executor import error_line
from plainsail.supply.registrycopy import CopyStats


class MigrationFailed(PlainsailError):
    """The migrations exited non-zero or timed out; the message is the attempt's reason."""


class HostSteps:
    """The actions of one attempt's steps outside the switch."""

    def __init__(self, cfg: Config, target: Target, deploy_id: str,
                 lock_info: hoststate.LockInfo, env: dict[str, str], sw: Switcher,
                 backup_why: str | None, backup_id: str,
                 complain: Any) -> None:
        self.cfg, self.target, self.id = cfg, target, deploy_id
        self.lock_info, self.env, self.sw = lock_info, env, sw
        self.backup_why, self.backup_id = backup_why, backup_id
        self.complain = complain  # one line about a host that the operator must act on
        self.migration: dict[str, Any] | None = None
        self.backup: dict[str, Any] | None = None  # the backup taken before migrations
        self.unrecorded: list[str] = []  # hosts whose record could not be stored

    def actions(self) -> dict[str, Action]:
        return {
            "lock": self.lock, "lock+env": self.lock,
            "host-registry": self.host_registry, "send": self.send,
            "verify-host": self.verify_host,
            "backup": self.take_backup, "migrate": self.migrate,
            "record": self.record, "unlock": self.unlock,
        }

    # -- lock
    def lock(self, run: HostRun, step: PlannedStep) -> None:
        """Take the host's deploy lock and, for a host that changes (lock+env), write its
        env file in the same round trip."""
        try:
            if step.name == "lock+env":
                self.sw.step(run, step.name, lambda: hoststate.lock_and_write_env(
                    run.ex, run.paths, self.lock_info, self.env))
            else:
                self.sw.step(run, step.name, lambda: hoststate.acquire(
                    run.ex, run.paths, self.lock_info))
        except hoststate.EnvFileError:
            run.locked = True
            raise
        except LockError:
            run.outcome = ABORTED
            raise
        run.locked = True

    # -- registry.mode host: the host's registry up, the image and its signature sent to
    # it over the SSH connection, the signature verified there
    def host_registry(self, run: HostRun, step: PlannedStep) -> None:
        argv = step.argv
        assert argv is not None
        did: list[str] = []
        self.sw.step(run, step.name, lambda: did.append(
            hostregistry.ensure(run.ex, self.cfg, argv, step.timeout)))
        self.sw.say(run.host.name, f"host-registry: {did[0]}")

    def send(self, run: HostRun, step: PlannedStep) -> None:
        copied: list[CopyStats] = []
        folder = hostregistry.registry_folder(run.paths.root)
        key, progress = f"send {run.host.name}", self.sw.progress
        try:
            self.sw.step(run, step.name, lambda: copied.append(hostregistry.send(
                run.ex, self.cfg, folder, self.target.tag, self.target.digest, step.timeout,
                progress=progress, key=key)))
        finally:
            progress.done(key)
        self.sw.say(run.host.name, f"send: {copied[0].summary()}")

    def verify_host(self, run: HostRun, step: PlannedStep) -> None:
        folder = hostregistry.registry_folder(run.paths.root)
        self.sw.step(run, step.name, lambda: hostregistry.verify_there(
            run.ex, self.cfg, folder, self.target.tag, self.target.digest))

    # -- before any switch, on one host
    def take_backup(self, run: HostRun, step: PlannedStep) -> None:
        """pg_dump before the migrations (BackupError on failure, with nothing of the
        backup left on the host)."""
        assert step.argv is not None
        say = self.sw.say
        say(run.host.name, f"backup: {self.backup_why}")
        start = time.monotonic()
        try:
            taken = backup_host.take(run.ex, self.cfg, run.paths, step.argv, self.backup_id,
                                     self.id, step.timeout, self.backup_why or "")
        except (BackupError, RemoteError) as exc:
            run.steps.append(Step("backup", round(time.monotonic() - start, 3), False))
            self.backup = {"id": self.backup_id, "ok": False, "error": one_line(exc)}
            say(run.host.name, f"backup: FAILED ({one_line(exc)})")
            if isinstance(exc, BackupError):
                raise
            raise BackupError(f"backup failed: {one_line(exc)}") from None
        except Exception:
            raise
        except BaseException:  # a signal (the deploy's Interrupted): recorded, then raised
            run.steps.append(Step("backup", round(time.monotonic() - start, 3), False))
            self.backup = {"id": self.backup_id, "ok": False, "error": "interrupted"}
            raise
        rec = taken.record
        run.steps.append(Step("backup", rec["seconds"], True))
        self.backup = {**{k: rec[k] for k in ("id", "created", "size", "sha256", "seconds",
                                              "tables", "file", "reason")},
                       "ok": True, "removed": taken.removed}
        say(run.host.name, f"backup: ok, {rec['size']} bytes, "
            f"{len(rec['tables'])} table(s) in {rec['seconds']:.1f}s "
            f"({rec['id']})" + (f"; removed {len(taken.removed)} older"
                                if taken.removed else ""))

    def migrate(self, run: HostRun, step: PlannedStep) -> None:
        """The migrations, once, in a temporary container of the new image; MigrationFailed
        (its message the attempt's reason) when they exit non-zero or time out."""
        assert self.cfg.migrate is not None and step.argv is not None
        argv = step.argv
        name = argv[argv.index("--name") + 1]
        start = time.monotonic()
        self.sw.say(run.host.name, f"migrate: {' '.join(self.cfg.migrate.command)}")
        try:
            res = run.ex.run(argv, timeout=step.timeout, check=False, what=step.what)
            code: int | None = res.returncode
            tail = res.tail()
        except RemoteError as exc:  # timeout
            code, tail = None, exc.output_tail
            with suppress(PlainsailError):
                run.ex.run(docker.rm([name], force=True), check=False,
                           timeout=self.cfg.timeouts.command)
        seconds = time.monotonic() - start
        self.migration = {"host": run.host.name, "exit_code": code,
                          "output_tail": tail, "seconds": round(seconds, 3)}
        ok = code == 0
        run.steps.append(Step("migrate", round(seconds, 3), ok))
        if ok:
            self.sw.say(run.host.name, f"migrate: ok ({seconds:.1f}s)")
            return
        why = (f"timed out after {self.cfg.migrate.timeout:g}s" if code is None
               else f"exit code {code}")
        last = error_line(tail) or "no output"
        self.sw.say(run.host.name, f"migrate: FAILED ({why})")
        raise MigrationFailed(
            f"migrations failed ({why}): {last}; the deploy stopped before touching the "
            "running app, which keeps serving the old schema")

    # -- after the outcome
    def record(self, run: HostRun, step: PlannedStep) -> None:
        """Append the attempt's record (`run.record`) to the host's history; a failure is
        told and noted (`unrecorded`), never raised: the unlock follows all the same."""
        assert run.record is not None
        try:
            hoststate.append_history(run.ex, run.paths, run.record)
        except Exception as exc:  # noqa: BLE001 - the outcome must still be recorded
            self.unrecorded.append(run.host.name)
            self.complain(f"{run.host.name}: the record of this attempt could not be stored "
                          f"on the host ({type(exc).__name__}: {one_line(exc)}); rollback "
                          f"reads those records, so fix the host's state folder "
                          f"{run.paths.root}. The record is kept locally in "
                          ".plainsail/history.jsonl")

    def unlock(self, run: HostRun, step: PlannedStep | None = None) -> None:
        """Release the host's deploy lock if this attempt holds it; a failure is told."""
        if not run.locked:
            return
        try:
            hoststate.release(run.ex, run.paths, self.id)
            run.locked = False
        except Exception as exc:  # noqa: BLE001 - the outcome must still be recorded
            self.complain(f"{run.host.name}: could not release the deploy lock "
                          f"{run.paths.lock} ({type(exc).__name__}: {one_line(exc)}); "
                          "check the host, then run: plainsail lock release")
