"""The deploy stage: the seed's sequence, per host, with loud failures and a record.

1. Preflight (nothing changes anywhere): secrets present, image verified and pinned to a
   digest, every host reachable with Docker. A failure is recorded locally only.
2. Lock the service on every host.
3. Pull `image@digest` and write the env file (mode 0600) on every host.
4. Run the migrations once, in a temporary container of the new image (first host). A
   failure or timeout aborts: the old container was never touched and keeps serving.
5. Per host: stop the old container (kept: the instant way back), start the new one.
6. Health gate. Unhealthy: restore the previous container (on_failure: restore) or leave
   the failed state for a human (on_failure: stop); hosts already switched are restored.
7. Healthy everywhere: prune old containers beyond `retain`, record, notify, unlock.

Rollback (`plainsail.rollback`) runs this same code with migrations skipped.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from plainsail import docker, health, hoststate, notify
from plainsail.config import Config
from plainsail.containers import Container, current, fingerprint
from plainsail.errors import (
    DeployError,
    LockError,
    PlainsailError,
    RemoteError,
)
from plainsail.history import append_local
from plainsail.hosts import Host
from plainsail.outcomes import (
    ABORTED,
    FAILED_MIGRATION,
    INTERRUPTED,
    LEFT_STOPPED,
    RECOVERED,
    RESTORE_FAILED,
    RESTORED,
    SUCCEEDED,
    UNCHANGED,
)
from plainsail.output import error, gha_endgroup, gha_error, gha_group, say, warn
from plainsail.plan import (
    Request,
    Target,
    app_env,
    app_run_argv,
    container_name,
    migrate_argv,
    missing_secrets,
    resolve_target,
    run_options,
    select_hosts,
    ssh_options,
)
from plainsail.records import new_deploy_id, now, origin, redact_free_text, who
from plainsail.runner import Executor, executor_for, tail_text, write_file_argv
from plainsail.secret import Secret

log = logging.getLogger("plainsail.deploy")

PULL_TIMEOUT = 900.0
BUILTIN_NETWORKS = ("bridge", "host", "none")
STEP_TIMEOUT = 120.0

class Interrupted(BaseException):
    """SIGTERM or Ctrl-C during a deploy: unwind, restore what was switched, unlock."""


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class HostRun:
    host: Host
    ex: Executor
    paths: hoststate.Paths
    containers: list[Container]
    previous: Container | None
    reuse: Container | None = None  # rollback fast path: a retained container to start again
    new_name: str = ""
    switched: bool = False
    outcome: str = ""
    reason: str = ""
    steps: list[Step] = field(default_factory=list)
    health: dict[str, Any] | None = None
    restore_health: dict[str, Any] | None = None
    log_tail: str = ""
    locked: bool = False
    restored_name: str = ""  # the container that runs the previous version after a restore


Reporter = Callable[[str], None]


def _print(line: str) -> None:
    say(line)


# ---------------------------------------------------------------- the deploy


class Deploy:
    """One deploy (or rollback) attempt across the selected hosts."""

    def __init__(self, cfg: Config, req: Request, report: Reporter = _print,
                 environ: dict[str, str] | None = None,
                 executors: dict[str, Executor] | None = None,
                 resolve: Callable[[Config, Request], Target] = resolve_target) -> None:
        self.cfg = cfg
        self._resolve = resolve
        self.req = req
        self.report = report
        self.environ = dict(os.environ if environ is None else environ)
        self.id = new_deploy_id()
        self.started = now()
        self.t0 = time.monotonic()
        self.runs: list[HostRun] = []
        self.target: Target | None = None
        self.migration: dict[str, Any] | None = None
        self.secret_values: list[Secret] = list(cfg.secrets())
        self.who = who(cfg)
        self.origin = origin()
        self.hosts: list[Host] = []
        self._given = dict(executors or {})  # open connections to reuse, by host name
        self.finishing = False  # recording the outcome: signals wait
        self.late_signal: int | None = None

    # -- entry point
    def run(self) -> dict[str, Any]:
        """Run the whole attempt; return the summary record (its outcome says how it went).

        A failure in preflight raises (nothing changed anywhere); the local record of it is
        written first and attached to the exception as `.record`. Once hosts are locked,
        every path, an unexpected error included, ends in one outcome, a record on every
        host reached and locally, a notification and released locks.
        """
        with _sigterm_as_interrupt(self):
            try:
                self._preflight()
            except (PlainsailError, Interrupted) as exc:
                outcome = INTERRUPTED if isinstance(exc, Interrupted) else ABORTED
                summary = self._summary(outcome, _one_line(exc), preflight=True)
                append_local(self.cfg, summary)
                self._close()
                if isinstance(exc, Interrupted):
                    err = DeployError("interrupted before any host changed")
                    err.record = summary
                    raise err from None
                exc.record = summary
                raise
            if self.req.dry_run:
                self._dry_run()
                self._close()
                return self._summary("dry-run", "nothing was changed")
            if all(r.outcome == UNCHANGED for r in self.runs):
                tag = self.target.tag if self.target else ""
                summary = (self._summary(RECOVERED, f"{tag} already runs on every host; the "
                                         "interrupted attempt had not switched any")
                           if self.req.kind == "recover" else
                           self._summary(UNCHANGED, f"{tag} already runs on every host; use "
                                         "--force to redeploy"))
                append_local(self.cfg, summary)
                self._close()
                return summary
            try:
                outcome, reason = self._execute()
            except Interrupted:
                outcome, reason = self._unwind("interrupted by a signal", INTERRUPTED)
            except Exception as exc:  # a bug: still restore, record, notify and unlock
                from plainsail.crash import write_crash_log

                path = write_crash_log(exc)
                outcome, reason = self._unwind(
                    f"plainsail hit an unexpected {type(exc).__name__} (a bug; details for a "
                    f"bug report in {path})", ABORTED)
            finally:
                self.finishing = True
                self._unlock_all()
            summary = self._finish(outcome, reason)
            self._close()
            return summary

    # -- preflight
    def _preflight(self) -> None:
        cfg = self.cfg
        self.hosts = select_hosts(cfg, self.req.hosts)
        missing = missing_secrets(cfg, self.environ)
        if missing:
            raise PlainsailError(
                f"app.secrets {', '.join(missing)} not set or empty in this environment; "
                "export them (in CI: from a protected environment's secrets; a secret the "
                "environment lacks arrives empty) and retry"
            )
        self.env = app_env(cfg, self.environ)
        self.secret_values += [Secret(self.env[n]) for n in cfg.app.secrets]
        self.env_content = hoststate.env_file_content(self.env)
        self.fingerprint = fingerprint(self.env_content, run_options(cfg))
        self._step_report("preflight", "verifying the image")
        self.target = self._resolve(cfg, self.req)
        self._step_report("preflight", f"image {self.target.tag} pinned to "
                          f"{self.target.digest}" + (" (signature verified)"
                                                     if self.target.verified else ""))
        for host in self.hosts:
            ex = self._given.pop(host.name, None) or executor_for(
                host, ssh_options(cfg), self.secret_values)
            ex.secrets = list(self.secret_values)
            try:
                custom = None if cfg.app.network in BUILTIN_NETWORKS else cfg.app.network
                found = hoststate.survey(ex, cfg.host_dir, cfg.service, custom)
                if not found.network_ok:
                    raise PlainsailError(
                        f"{host.name}: app.network {cfg.app.network!r} does not exist there; "
                        f"create it (docker network create {cfg.app.network}) or fix "
                        "app.network")
                paths, version, containers = found.paths, found.docker_version, found.containers
            except PlainsailError:
                ex.close()
                raise
            run = HostRun(host, ex, paths, containers, current(containers))
            self.runs.append(run)
            prev = run.previous
            if (prev and prev.digest == self.target.digest and prev.tag == self.target.tag
                    and not self.req.force):
                run.outcome = UNCHANGED
            if self.req.kind in ("rollback", "recover"):
                run.reuse = next((c for c in containers if c.digest == self.target.digest
                                  and c.fingerprint == self.fingerprint and not c.running), None)
            self._step_report(host.name, f"reachable, Docker {version}, running: "
                              f"{prev.tag if prev else 'nothing'}")

    # -- dry run
    def _dry_run(self) -> None:
        assert self.target
        for i, run in enumerate(self.runs):
            p = run.paths
            name = container_name(self.cfg.service, self.target.tag)
            lines = [f"# lock {p.lock}"]
            if not run.reuse:
                lines.append(run.ex.display(docker.pull(self.target.pinned)))
            lines.append(run.ex.display(write_file_argv(p.env, "600")) +
                         "  # stdin: the env file, secrets included (not shown)")
            if i == 0 and self.cfg.migrate and not self.req.skip_migrations:
                lines.append(run.ex.display(migrate_argv(self.cfg, self.target, p.env, self.id)))
            if run.previous:
                lines.append(run.ex.display(docker.stop(run.previous.name,
                                                        self.cfg.app.stop_timeout)))
            if run.reuse:
                lines.append(run.ex.display(docker.start(run.reuse.name)))
            else:
                lines.append(run.ex.display(app_run_argv(self.cfg, self.target, name, p.env,
                                                         self.id, self.fingerprint)))
            lines.append(f"# health gate: GET {self.cfg.health.path} until "
                         f"{self.cfg.health.status}, {self.cfg.health.attempts} attempts")
            self.report(f"[{run.host.name}] would run:")
            for line in lines:
                self.report(f"  {line}")

    # -- the changing part
    def _execute(self) -> tuple[str, str]:
        assert self.target
        target = self.target
        # Hosts already running this exact image are left alone (they are locked all the
        # same, so nobody changes them under this deploy).
        active = [r for r in self.runs if r.outcome != UNCHANGED]
        try:
            for run in self.runs:
                self._lock(run, with_env=run in active)
            for run in active:
                if not run.reuse:
                    self._step(run, "pull", partial(
                        run.ex.run, docker.pull(target.pinned), timeout=PULL_TIMEOUT,
                        what="docker pull"))
        except PlainsailError as exc:
            reason = f"{_one_line(exc)}; nothing was switched, the running version is untouched"
            for run in self.runs:
                run.outcome, run.reason = ABORTED, reason
            return ABORTED, reason
        if self.cfg.migrate and not self.req.skip_migrations:
            ok, reason = self._migrate(active[0])
            if not ok:
                for run in self.runs:
                    run.outcome, run.reason = FAILED_MIGRATION, reason
                return FAILED_MIGRATION, reason
        for i, run in enumerate(active):
            gha_group(f"{run.host.name}: switch to {target.tag}")
            try:
                ok = self._switch(run)
            except PlainsailError as exc:
                failed = run.steps[-1].name if run.steps else "switch"
                run.reason = f"{failed} failed: {_one_line(exc)}"
                self._restore(run, f"{failed} failed", failed_new=True)
                ok = False
            finally:
                gha_endgroup()
            if not ok:
                if run.outcome not in (RESTORED, RESTORE_FAILED, LEFT_STOPPED):
                    raise AssertionError(f"switch of {run.host.name} ended without an outcome")
                for other in active[:i]:
                    other.reason = f"{run.host.name} failed its health gate"
                    self._restore(other, other.reason, failed_new=True)
                for other in active[i + 1:]:
                    other.outcome = ABORTED
                    other.reason = f"not touched: {run.host.name} failed its health gate"
                return run.outcome, run.reason
        for run in active:
            run.outcome = SUCCEEDED
        # Pruning never undoes a healthy deploy: a failure there is only reported.
        for run in active:
            try:
                self._step(run, "prune", partial(self._prune, run))
            except Exception as exc:  # noqa: BLE001 - reported, the deploy stands
                warn(f"{run.host.name}: removing old containers failed "
                     f"({type(exc).__name__}: {_one_line(exc)}); the deploy is unaffected")
        if self.req.kind == "recover":
            for run in active:
                run.outcome = RECOVERED
            return RECOVERED, f"{target.tag}, the last known-good version, is healthy again"
        return SUCCEEDED, f"{target.tag} is healthy on every host"

    def _lock(self, run: HostRun, with_env: bool) -> None:
        """Take the host's deploy lock and, for a host that changes, write its env file in
        the same round trip."""
        assert self.target
        info = hoststate.LockInfo(
            deploy_id=self.id, holder=f"{self.who}@{socket.gethostname()}",
            machine=socket.gethostname(), pid=os.getpid(), started=now(),
            tag=self.target.tag, origin=self.origin, kind=self.req.kind,
        )
        try:
            if with_env:
                self._step(run, "lock+env", partial(
                    hoststate.lock_and_write_env, run.ex, run.paths, info, self.env))
            else:
                self._step(run, "lock", partial(hoststate.acquire, run.ex, run.paths, info))
        except hoststate.EnvFileError:
            run.locked = True
            raise
        except LockError:
            run.outcome = ABORTED
            raise
        run.locked = True

    def _unlock_all(self) -> None:
        for run in self.runs:
            if run.locked:
                try:
                    hoststate.release(run.ex, run.paths, self.id)
                    run.locked = False
                except Exception as exc:  # noqa: BLE001 - the outcome must still be recorded
                    error(f"{run.host.name}: could not release the deploy lock "
                          f"{run.paths.lock} ({type(exc).__name__}: {_one_line(exc)}); "
                          "check the host, then run: plainsail lock release")

    def _migrate(self, run: HostRun) -> tuple[bool, str]:
        assert self.target and self.cfg.migrate
        argv = migrate_argv(self.cfg, self.target, run.paths.env, self.id)
        name = argv[argv.index("--name") + 1]
        start = time.monotonic()
        self._step_report(run.host.name, f"migrate: {' '.join(self.cfg.migrate.command)}")
        try:
            res = run.ex.run(argv, timeout=self.cfg.migrate.timeout, check=False,
                             what="migrations")
            code: int | None = res.returncode
            tail = res.tail()
        except RemoteError as exc:  # timeout
            code, tail = None, exc.output_tail
            with suppress(PlainsailError):
                run.ex.run(docker.rm([name], force=True), check=False, timeout=STEP_TIMEOUT)
        seconds = time.monotonic() - start
        self.migration = {"host": run.host.name, "exit_code": code,
                          "output_tail": tail, "seconds": round(seconds, 3)}
        ok = code == 0
        run.steps.append(Step("migrate", round(seconds, 3), ok))
        if ok:
            self._step_report(run.host.name, f"migrate: ok ({seconds:.1f}s)")
            return True, ""
        why = (f"timed out after {self.cfg.migrate.timeout:g}s" if code is None
               else f"exit code {code}")
        last = tail_text(tail, 1) or "no output"
        reason = (f"migrations failed ({why}): {last}; the deploy stopped before touching the "
                  "running app, which keeps serving the old schema")
        self._step_report(run.host.name, f"migrate: FAILED ({why})")
        return False, reason

    def _switch(self, run: HostRun) -> bool:
        assert self.target
        cfg, ex = self.cfg, run.ex
        name = container_name(cfg.service, self.target.tag)
        run.switched = True  # from here on, the way back is _restore
        if run.previous:
            self._step(run, "stop-old", lambda: ex.run(
                docker.stop(run.previous.name, cfg.app.stop_timeout),  # type: ignore[union-attr]
                timeout=cfg.app.stop_timeout + STEP_TIMEOUT, what="docker stop"))
        if run.reuse:
            run.new_name = run.reuse.name
            self._step(run, "start-retained", lambda: ex.run(
                docker.start(run.new_name), timeout=STEP_TIMEOUT, what="docker start"))
        else:
            # A container of the same name (a retained or --force'd one) steps aside.
            clash = next((c for c in run.containers if c.name == name), None)
            if clash:
                alias = f"{name}-{clash.deploy_id[-6:] or 'old'}-{self.id[-6:]}"
                self._step(run, "rename-old", lambda: ex.run(
                    docker.rename(name, alias), timeout=STEP_TIMEOUT, what="docker rename"))
                run.containers = [replace(c, name=alias) if c is clash else c
                                  for c in run.containers]
                if run.previous and run.previous.name == name:
                    run.previous = replace(run.previous, name=alias)
            run.new_name = name
            argv = app_run_argv(cfg, self.target, name, run.paths.env, self.id, self.fingerprint)
            self._step(run, "start-new", lambda: ex.run(argv, timeout=STEP_TIMEOUT,
                                                         what="docker run"))
        verdict = self._gate(run, run.new_name)
        run.health = verdict.to_json()
        if verdict.healthy:
            self._step_report(run.host.name, f"healthy: {verdict.reason} "
                              f"({verdict.seconds:.1f}s)")
            return True
        run.log_tail = self._log_tail(run, run.new_name)
        run.reason = f"health gate failed: {verdict.reason}"
        self._step_report(run.host.name, f"UNHEALTHY: {verdict.reason}")
        if cfg.on_failure == "stop":
            run.outcome = LEFT_STOPPED
            run.reason += ("; on_failure is stop: the failed version is left as it is for a "
                           "human, the previous container is stopped")
            return False
        self._restore(run, "its health gate failed", failed_new=True)
        return False

    def _gate(self, run: HostRun, name: str) -> health.Verdict:
        target = health.app_address(run.ex, self.cfg, name)
        start = time.monotonic()

        def progress(a: health.Attempt) -> None:
            state = a.status if a.status is not None else a.error
            log.debug("[%s]   health attempt %d: %s", run.host.name, a.n, state)

        verdict = health.gate(run.ex, self.cfg.health, target, name, self.secret_values,
                              progress=progress)
        run.steps.append(Step(f"health:{name}", round(time.monotonic() - start, 3),
                              verdict.healthy, verdict.reason))
        return verdict

    def _restore(self, run: HostRun, why: str, failed_new: bool = False) -> None:
        """Stop the new container and start the previous version again, then gate it.

        The previous container is started as it was when its environment and options are
        today's; otherwise (a rotated secret, a changed option) a new container of the
        previous digest is created with today's environment, the rule rollback follows.
        """
        ex = run.ex
        if not run.switched:
            return
        if run.new_name:
            with suppress(PlainsailError):
                ex.run(docker.stop(run.new_name, self.cfg.app.stop_timeout),
                       timeout=self.cfg.app.stop_timeout + STEP_TIMEOUT, check=False)
            if failed_new and not run.reuse:
                # Its log tail is in the record; a failed version is no rollback target.
                with suppress(PlainsailError):
                    ex.run(docker.rm([run.new_name], force=True), check=False,
                           timeout=STEP_TIMEOUT)
        prev = run.previous
        if prev is None:
            run.outcome = RESTORE_FAILED
            run.reason = (f"{run.reason or why}; there is no previous version to restore "
                          "(first deploy): the service is DOWN on this host. Fix forward "
                          "and deploy again")
            return
        # The retained container as it was, unless its environment or options are not
        # today's: then first a container of the previous digest with today's environment
        # (a rotated secret), and the retained one only if that fails (a wrong new secret).
        ways = ["today", "retained"] if prev.fingerprint != self.fingerprint else ["retained"]
        tried: list[str] = []
        for way in ways:
            if way == "today":
                name = f"{container_name(self.cfg.service, prev.tag)}-{self.id[-6:]}"
                target = Target(self.cfg.image, prev.tag, prev.digest, False)
                argv = app_run_argv(self.cfg, target, name, run.paths.env, self.id,
                                    self.fingerprint)
                action: Callable[[], object] = partial(
                    ex.run, argv, timeout=STEP_TIMEOUT, what="docker run")
                how = " with today's environment"
            else:
                name = prev.name
                action = partial(ex.run, docker.start(prev.name), timeout=STEP_TIMEOUT,
                                 what="docker start")
                how = " with its previous environment" if tried else ""
            try:
                self._step(run, "restore" if way == "retained" else "restore-today", action)
            except PlainsailError as exc:
                tried.append(f"restarting {prev.tag}{how} failed: {_one_line(exc)}")
                continue
            verdict = self._gate(run, name)
            run.restore_health = verdict.to_json()
            if verdict.healthy:
                run.outcome = RESTORED
                run.restored_name = name
                run.reason = (f"{run.reason or why}; restored {prev.tag}{how}, which is "
                              "healthy again" + (f" ({'; '.join(tried)})" if tried else ""))
                self._step_report(run.host.name, f"restored {prev.tag}{how}: healthy")
                return
            said = _last_line(self._log_tail(run, name))
            tried.append(f"{prev.tag}{how} failed its health gate too ({verdict.reason}); "
                         + (f"its log ends with: {said}" if said else "its log is empty"))
            self._step_report(run.host.name, f"restore of {prev.tag}{how} UNHEALTHY too")
            if way == ways[-1]:
                break  # left running, unhealthy, for a human to inspect
            with suppress(PlainsailError):
                ex.run(docker.stop(name, self.cfg.app.stop_timeout),
                       timeout=self.cfg.app.stop_timeout + STEP_TIMEOUT, check=False)
            if way == "today":
                with suppress(PlainsailError):
                    ex.run(docker.rm([name], force=True), check=False, timeout=STEP_TIMEOUT)
        run.outcome = RESTORE_FAILED
        run.reason = (f"{run.reason or why}; " + "; ".join(tried)
                      + ". The service is DOWN on this host: fix forward")

    def _unwind(self, why: str, outcome: str) -> tuple[str, str]:
        """After a signal or an unexpected error: put the previous version back wherever the
        switch had begun and not finished; return the attempt's outcome and reason."""
        for run in self.runs:
            if run.outcome in (SUCCEEDED, UNCHANGED, RECOVERED, RESTORED, RESTORE_FAILED,
                               LEFT_STOPPED):
                continue
            run.reason = run.reason or why
            if run.switched:
                with suppress(PlainsailError, Interrupted):
                    self._restore(run, why, failed_new=True)
            if outcome == INTERRUPTED and run.outcome != RESTORE_FAILED:
                run.outcome = INTERRUPTED
            elif run.outcome not in (RESTORED, RESTORE_FAILED):
                run.outcome = ABORTED if not run.switched else RESTORE_FAILED
        outcomes = {r.outcome for r in self.runs}
        if outcome != INTERRUPTED:
            outcome = next((o for o in (RESTORE_FAILED, RESTORED) if o in outcomes), outcome)
        return outcome, why

    def _prune(self, run: HostRun) -> None:
        """Keep the running container and the newest `retain` others; remove the rest."""
        # The containers seen in preflight (all stopped now but the new one): no re-listing.
        containers = run.containers
        assert self.target
        # A rollback target is another version: copies of the running digest (left by
        # --force) and older copies of one digest would only fill the `retain` slots.
        seen = {self.target.digest}
        targets: list[Container] = []
        doomed: list[Container] = []
        for c in containers:
            if c.name == run.new_name:
                continue
            (doomed if c.digest in seen else targets).append(c)
            seen.add(c.digest)
        doomed += targets[self.cfg.retain:]
        if not doomed:
            return
        run.ex.run(docker.rm([c.name for c in doomed], force=True), timeout=STEP_TIMEOUT,
                   what="remove old containers")
        in_use = {self.target.digest} | {c.digest for c in containers if c not in doomed}
        images = sorted({f"{self.cfg.image}@{c.digest}" for c in doomed
                         if c.digest and c.digest not in in_use})
        if images:
            run.ex.run(docker.rmi(images), check=False, timeout=STEP_TIMEOUT)

    def _log_tail(self, run: HostRun, name: str) -> str:
        res = run.ex.run(docker.logs(name, 40), check=False, timeout=STEP_TIMEOUT)
        return res.tail(40)

    # -- bookkeeping
    def _step(self, run: HostRun, name: str, action: Callable[[], object]) -> None:
        start = time.monotonic()
        try:
            action()
        except PlainsailError as exc:
            run.steps.append(Step(name, round(time.monotonic() - start, 3), False,
                                  _one_line(exc)))
            self._step_report(run.host.name, f"{name}: FAILED")
            raise
        seconds = time.monotonic() - start
        run.steps.append(Step(name, round(seconds, 3), True))
        self._step_report(run.host.name, f"{name}: ok ({seconds:.1f}s)")

    def _step_report(self, where: str, text: str) -> None:
        self.report(f"[{where}] {text}")

    def _record(self, run: HostRun | None, outcome: str, reason: str) -> dict[str, Any]:
        t = self.target
        rec: dict[str, Any] = {
            "id": self.id,
            "kind": self.req.kind,
            "drill": self.req.drill,
            "service": self.cfg.service,
            "image": self.cfg.image,
            "tag": t.tag if t else None,
            "digest": t.digest if t else None,
            "verified": t.verified if t else False,
            "signed_by": t.signed_by if t else None,
            "who": self.who,
            "origin": self.origin,
            "started": self.started,
            "ended": now(),
            "seconds": round(time.monotonic() - self.t0, 3),
            "outcome": outcome,
            "reason": reason,
            "skip_migrations": self.req.skip_migrations,
            "requested": self.req.ref,
        }
        if self.req.kind == "rollback":
            rec["rollback_from"] = self.req.rollback_from
            rec["rollback_to"] = t.tag if t else None
        if self.req.kind == "recover":
            rec["recovered_from"] = self.req.rollback_from
        if run is not None:
            rec.update({
                "host": run.host.name,
                "previous_tag": run.previous.tag if run.previous else None,
                "previous_digest": run.previous.digest if run.previous else None,
                "container": run.new_name or None,
                "reused_container": bool(run.reuse),
                "steps": [s.__dict__ for s in run.steps],
                "health": run.health,
                "restore_health": run.restore_health,
                "log_tail": run.log_tail,
            })
        if self.migration:
            rec["migration"] = self.migration
        return redact_free_text(rec, self.secret_values)

    def _summary(self, outcome: str, reason: str, preflight: bool = False) -> dict[str, Any]:
        rec = self._record(None, outcome, reason)
        rec["hosts"] = [h.name for h in self.hosts] or list(self.req.hosts)
        rec["preflight"] = preflight
        rec["per_host"] = [
            {"host": r.host.name, "outcome": r.outcome or outcome, "reason": r.reason,
             "previous_tag": r.previous.tag if r.previous else None}
            for r in self.runs
        ]
        return redact_free_text(rec, self.secret_values)

    def _finish(self, outcome: str, reason: str) -> dict[str, Any]:
        self.finishing = True
        unrecorded: list[str] = []
        for run in self.runs:
            if not run.outcome:
                run.outcome = outcome
                run.reason = run.reason or reason
            record = self._record(run, run.outcome, run.reason or reason)
            try:
                hoststate.append_history(run.ex, run.paths, record)
            except (PlainsailError, Interrupted, Exception) as exc:
                unrecorded.append(run.host.name)
                error(f"{run.host.name}: the record of this attempt could not be stored on the "
                      f"host ({type(exc).__name__}: {_one_line(exc)}); rollback reads those "
                      f"records, so fix the host's state folder {run.paths.root}. The record "
                      "is kept locally in .plainsail/history.jsonl")
        summary = self._summary(outcome, reason)
        if unrecorded:
            summary["unrecorded_hosts"] = unrecorded
        append_local(self.cfg, summary)
        try:
            for w in notify.send(self.cfg.notify, summary):
                warn(w)
        except Exception as exc:  # noqa: BLE001 - a notification never changes the outcome
            warn(f"notifications failed ({type(exc).__name__}); the {self.req.kind} is "
                 "unaffected")
        if outcome not in (SUCCEEDED, RECOVERED):
            gha_error(f"{self.req.kind} of {summary.get('tag')} {outcome}: {reason}")
        return summary

    def _close(self) -> None:
        for run in self.runs:
            run.ex.close()
        for ex in self._given.values():
            ex.close()
        self._given.clear()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else text


@contextmanager
def _sigterm_as_interrupt(attempt: Deploy) -> Iterator[None]:
    """SIGTERM and Ctrl-C unwind the deploy (restore, record, unlock) instead of killing it.
    While the outcome is being recorded (`attempt.finishing`), a signal is noted and the
    bookkeeping, which takes well under a second, completes."""
    def handler(signum: int, frame: object) -> None:
        if attempt.finishing:
            attempt.late_signal = signum
            return
        raise Interrupted()

    try:
        old_term = signal.signal(signal.SIGTERM, handler)
        old_int = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def deploy(cfg: Config, req: Request, report: Reporter = _print) -> dict[str, Any]:
    return Deploy(cfg, req, report).run()
