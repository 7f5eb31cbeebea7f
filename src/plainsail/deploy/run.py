"""The deploy stage: the seed's sequence, per host, with loud failures and a record.

1. Preflight (nothing changes anywhere): secrets present, image verified and pinned to a
   digest, every host reachable with Docker. A failure is recorded locally only.
2. Lock the service on every host.
3. Pull `image@digest` and write the env file (mode 0600) on every host; behind the proxy,
   boot the host's proxy (which creates its network) if it does not run.
4. With a `backup` block and migrations pending, back up the database first
   (`plainsail.backup`; a failure aborts before any migration). Run the migrations once,
   in a temporary container of the new image (first host). A failure or timeout aborts:
   the old container was never touched and keeps serving.
5. Per host: stop the old container (kept: the instant way back), start the new one.
6. Health gate. Unhealthy: restore the previous container (on_failure: restore) or leave
   the failed state for a human (on_failure: stop); hosts already switched are restored.
7. Healthy everywhere: prune old containers beyond `retain`, record, notify, unlock.

Rollback (`plainsail.deploy.rollback`) runs this same code with migrations skipped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

from plainsail.backup import host as backup_host
from plainsail.backup import policy as backup_policy
from plainsail.backup.host import BackupError
from plainsail.config import weak
from plainsail.config.model import Config
from plainsail.deploy import fanout, health, notify, schemagate
from plainsail.deploy import settings as settingslib
from plainsail.deploy.history import append_local
from plainsail.deploy.hoststeps import HostSteps, MigrationFailed
from plainsail.deploy.outcomes import (
    ABORTED,
    FAILED_MIGRATION,
    INTERRUPTED,
    LEFT_STOPPED,
    OLD_KEPT,
    RECOVERED,
    RESTORE_FAILED,
    RESTORED,
    SUCCEEDED,
    TRAFFIC_RESTORED,
    UNCHANGED,
)
from plainsail.deploy.plan import (
    Request,
    Target,
    app_env,
    host_plan,
    missing_secrets,
    resolve_target,
    run_options,
    select_hosts,
    ssh_options,
)
from plainsail.deploy.records import new_deploy_id, now, origin, redact_free_text, who
from plainsail.deploy.runner import HostRunner
from plainsail.deploy.switch import UNJUDGED, HostRun, Reporter, Step, Switcher
from plainsail.environment import in_ci
from plainsail.errors import (
    DeployInterrupted,
    PlainsailError,
    one_line,
)
from plainsail.hosts import state as hoststate
from plainsail.hosts.addresses import Host
from plainsail.hosts.containers import Container, current, fingerprint
from plainsail.hosts.executor import Executor, executor_for
from plainsail.interrupts import handled_by
from plainsail.progress import NULL, Progress, reporter
from plainsail.secret import Secret

log = logging.getLogger("plainsail.deploy.run")

BUILTIN_NETWORKS = ("bridge", "host", "none")

__all__ = ["Deploy", "HostRun", "Interrupted", "Reporter", "Step", "deploy"]


class Interrupted(BaseException):
    """SIGTERM or Ctrl-C during a deploy: unwind, restore what was switched, unlock."""




# ---------------------------------------------------------------- the deploy


class Deploy:
    """One deploy (or rollback) attempt across the selected hosts."""

    def __init__(self, cfg: Config, req: Request, report: Reporter = NULL,
                 environ: dict[str, str] | None = None,
                 executors: dict[str, Executor] | None = None,
                 resolve: Callable[[Config, Request], Target] = resolve_target,
                 proxy: Any = None, progress: Progress = NULL) -> None:
        self.cfg = cfg
        # The one reporter: every line, warning and per-host event; long steps' progress.
        self.out = reporter(report, progress)
        self.progress = self.out
        self._proxy = proxy  # a stand-in for plainsail.proxy (tests); None: the real one
        self._resolve = resolve
        self.req = req
        self.environ = dict(os.environ if environ is None else environ)
        self.id = new_deploy_id()
        self.started = now()
        self.t0 = time.monotonic()
        self.runs: list[HostRun] = []
        self.target: Target | None = None
        self.gate: schemagate.Gate | None = None
        self.hs: HostSteps | None = None  # the steps around the switch, once planned
        self.backup_why: str | None = None
        self.backup_id = ""
        self.secret_values: list[Secret] = list(cfg.secrets())
        self.who = who(cfg)
        self.origin = origin()
        self.hosts: list[Host] = []
        self._given = dict(executors or {})  # open connections to reuse, by host name
        self.finishing = False  # recording the outcome: signals wait
        self.late_signal: int | None = None
        self.holding = False  # a step that must finish whole is running: a signal waits
        self.held_signal: int | None = None
        # Hosts are being worked on in threads: a signal is noted, each host stops at its
        # next step boundary, and the attempt unwinds once the steps in flight returned.
        self.fanout = False
        self.stop_signal: int | None = None
        self.stoppable = True  # False while restoring: a signal must not cut the way back
        self.unreached: dict[str, str] = {}  # preflight failed: each host, and why

    def _checkpoint(self) -> None:
        """Between two steps of a host worked on in a thread: stop if a signal came."""
        if self.stop_signal is not None and self.stoppable:
            raise Interrupted()

    def _fan(self, runs: list[Any], fn: Callable[[Any], object],
             stoppable: bool = True) -> list[BaseException | None]:
        """fn on every host of `runs`, at most rollout.max_parallel at once; what each raised.
        A signal meanwhile is raised here, once every host's step in flight has returned
        (unless `stoppable` is False: a restore runs to its end, then the unwind goes on)."""
        many = len(runs) > 1 and self.cfg.rollout.max_parallel > 1
        self.fanout, self.stoppable = many, stoppable
        try:
            errors = fanout.each(runs, fn, self.cfg.rollout.max_parallel,
                                 keep_going=not stoppable)
        finally:
            self.fanout, self.stoppable = False, True
            self.out.flush()  # a phase ended on these hosts: per-host groups may show
        if self.stop_signal is not None and stoppable:
            self.stop_signal = None
            raise Interrupted()
        return errors

    def _failures(self, runs: list[HostRun], errors: list[BaseException | None]
                  ) -> list[tuple[HostRun, PlainsailError]]:
        """The hosts whose step failed the expected way; a signal or a bug is raised."""
        out = []
        for run, exc in zip(runs, errors, strict=True):
            if exc is None:
                continue
            if isinstance(exc, Interrupted):
                raise Interrupted()
            if not isinstance(exc, PlainsailError):
                raise exc
            out.append((run, exc))
        return out

    @contextmanager
    def _whole(self) -> Iterator[None]:
        """A step a signal must not cut in two (a `docker run` creating the new container):
        SIGTERM or Ctrl-C during it waits for the host's answer (the step's own timeout
        bounds it), then unwinds as usual."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            if self.held_signal is not None:
                self.held_signal = None
                raise Interrupted()

    # -- entry point
    def run(self) -> dict[str, Any]:
        """Run the whole attempt; return the summary record (its outcome says how it went).

        A failure in preflight raises (nothing changed anywhere); the local record of it is
        written first and attached to the exception as `.record`. Once hosts are locked,
        every path, an unexpected error included, ends in one outcome, a record on every
        host reached and locally, a notification and released locks.
        """
        try:
            return self._run()
        finally:
            self.out.flush()  # what a grouping renderer still holds

    def _run(self) -> dict[str, Any]:
        with _sigterm_as_interrupt(self):
            try:
                self._preflight()
            except (PlainsailError, Interrupted) as exc:
                outcome = INTERRUPTED if isinstance(exc, Interrupted) else ABORTED
                summary = self._summary(outcome, one_line(exc), preflight=True)
                append_local(self.cfg, summary)
                self._close()
                if isinstance(exc, Interrupted):
                    err = DeployInterrupted("interrupted before any host changed")
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
                if self.req.kind == "recover":
                    # Nothing to switch back, but every host records that it was checked.
                    reason = (f"{tag}, the last known-good version, already runs on every "
                              "host; the interrupted attempt had not switched any")
                    for run in self.runs:
                        run.outcome, run.reason = RECOVERED, reason
                    self.finishing = True
                    summary = self._finish(RECOVERED, reason)
                    self._close()
                    return summary
                summary = self._summary(UNCHANGED, f"{tag} already runs on every host, with "
                                        "the same settings and environment; use --force to "
                                        "redeploy")
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
            except BaseException:  # SystemExit and the like: at least release the locks
                self._unlock_all()
                self._close()
                raise
            self.finishing = True
            try:
                summary = self._finish(outcome, reason)
            finally:
                self._unlock_all()  # already done by _finish, unless it failed
                self._close()
            return summary

    # -- preflight
    def _preflight(self) -> None:
        cfg = self.cfg
        self.hosts = select_hosts(cfg, self.req.hosts)
        missing = missing_secrets(cfg, self.environ)
        if missing:
            raise PlainsailError(
                f"app.secrets {', '.join(missing)} not set or empty (or only white space) in "
                "this environment; "
                "export them (in CI: from a protected environment's secrets; a secret the "
                "environment lacks arrives empty) and retry"
            )
        self.env = app_env(cfg, self.environ)
        self.secret_values += [Secret(self.env[n]) for n in cfg.app.secrets]
        weak.declare(cfg)
        for line in weak.warnings(cfg, {n: self.env[n] for n in cfg.app.secrets}):
            self.out.warn(line)
        self.env_content = hoststate.env_file_content(self.env)
        self.fingerprint = fingerprint(self.env_content, run_options(cfg))
        self.settings_label = settingslib.label(self.env, cfg)
        self._step_report("preflight", "verifying the image")
        self.target = self._resolve(cfg, self.req)
        for line in self.target.warnings:
            self.out.warn(line)
        self._step_report("preflight", f"image {self.target.tag} pinned to "
                          f"{self.target.digest}" + (" (signature verified)"
                                                     if self.target.verified else ""))
        found = self._survey_all()
        for host in self.hosts:
            ex, survey = found[host.name]
            paths, version, containers = survey.paths, survey.docker_version, survey.containers
            run = HostRun(host, ex, paths, containers, current(containers))
            self.runs.append(run)
            prev = run.previous
            same_image = bool(prev and prev.digest == self.target.digest
                              and prev.tag == self.target.tag)
            if prev and prev.fingerprint != self.fingerprint:
                # Unchanged means the same image AND the same settings and environment.
                run.settings_changed = self._what_changed(prev)
                self._step_report(host.name, f"settings changed since {prev.tag} started: "
                                  f"{run.settings_changed}" + (
                                      f"; {prev.tag} is redeployed in a new container"
                                      if same_image else ""))
            elif same_image and not self.req.force:
                run.outcome = UNCHANGED
            if self.req.kind in ("rollback", "recover"):
                run.reuse = next((c for c in containers if c.digest == self.target.digest
                                  and c.fingerprint == self.fingerprint and not c.running), None)
            self._step_report(host.name, f"reachable, Docker {version}, running: "
                              f"{prev.tag if prev else 'nothing'}")
        # Resume, not redo: a host already on the target is skipped only while it serves.
        self._fan([r for r in self.runs if r.outcome == UNCHANGED], self._recheck_unchanged)
        self._schema_gate()
        if cfg.proxy is not None:
            # A proxy with other host-level settings is refused before any change.
            px = self._proxy_api()
            refused = self._failures(self.runs, self._fan(
                self.runs, lambda run: px.preflight(run.ex, cfg)))
            if refused:
                raise refused[0][1]
        self._plan()

    def _what_changed(self, prev: Container) -> str:
        """Which settings differ from those the running container started with: names,
        never values."""
        names = settingslib.changed(prev.settings, self.env, self.cfg)
        if names is None:
            return ("its settings or environment (the running container predates the record "
                    "of which)")
        return settingslib.describe(names, self.cfg) or "its container options"

    def _recheck_unchanged(self, run: HostRun) -> None:
        """One health probe of a host that already runs the target: an earlier attempt may
        have left it there failed (on_failure: stop), and then it switches again."""
        prev = run.previous
        assert prev is not None
        try:
            address = health.app_address(run.ex, self.cfg, prev.name)
            verdict = health.gate(run.ex, replace(self.cfg.health, attempts=1), address,
                                  prev.name, self.secret_values)
            ok, why = verdict.healthy, verdict.reason
        except PlainsailError as exc:
            ok, why = False, one_line(exc)
        if not ok:
            run.outcome = ""
            self._step_report(run.host.name, f"runs {prev.tag} already, but it does not pass "
                              f"its health check ({why}): deploying it again")

    def _survey_all(self) -> dict[str, tuple[Executor, hoststate.Survey]]:
        """Connect to every host at once (at most rollout.max_parallel; a connection that
        drops or times out while being set up is tried again) and survey it. Any host
        failing aborts the attempt before anything changed, naming every failing host."""
        cfg = self.cfg
        # Behind the proxy the app joins the proxy's network, created at its boot.
        custom = None if cfg.proxy or cfg.app.network in BUILTIN_NETWORKS else cfg.app.network
        execs = {h.name: self._given.pop(h.name) if h.name in self._given else executor_for(
            h, ssh_options(cfg), self.secret_values) for h in self.hosts}
        found: dict[str, tuple[Executor, hoststate.Survey]] = {}

        def note(host: Host) -> Callable[[BaseException, float], None]:
            return lambda exc, delay: self._step_report(
                host.name, f"connecting failed ({one_line(exc)}); trying again in {delay:g}s")

        def look(host: Host) -> None:
            ex = execs[host.name]
            ex.secrets = list(self.secret_values)
            survey = fanout.with_retry(lambda: hoststate.survey(
                ex, cfg.host_dir, cfg.service, custom, timeout=cfg.timeouts.query),
                note=note(host))
            if not survey.network_ok:
                raise PlainsailError(
                    f"{host.name}: app.network {cfg.app.network!r} does not exist there; "
                    f"create it (docker network create {cfg.app.network}) or fix "
                    "app.network")
            found[host.name] = (ex, survey)

        try:
            errors = self._fan(self.hosts, look)
        except BaseException:
            for ex in execs.values():
                ex.close()
            raise
        failed = [(h, e) for h, e in zip(self.hosts, errors, strict=True) if e is not None]
        if not failed:
            return found
        for ex in execs.values():
            ex.close()
        for _, e in failed:
            if isinstance(e, Interrupted) or not isinstance(e, PlainsailError):
                raise e
        why = {h.name: one_line(e) for h, e in failed}
        self.unreached = {h.name: why.get(h.name, "not changed: another host failed its "
                                          "preflight") for h in self.hosts}
        if len(failed) == 1:
            raise failed[0][1]
        raise PlainsailError(
            f"preflight failed on {len(failed)} of {len(self.hosts)} hosts, nothing was "
            "changed on any: " + "; ".join(why.values())) from failed[0][1]

    def _schema_gate(self) -> None:
        """The seed's rule, enforced: refuse (nothing changed yet) when the migrations
        between the running version and the target break the older of the two, unless
        --allow-breaking-migrations. A gate that cannot run says why and lets the attempt
        go on."""
        assert self.target
        t = self.target
        running = [schemagate.Version(r.previous.tag, r.previous.digest, r.previous.revision)
                   for r in self.runs if r.previous]
        # A retained container of the target (a rollback) carries its image's revision.
        known = next((c.revision for r in self.runs for c in r.containers
                      if c.digest == t.digest and c.revision), "")
        self.gate = gate = schemagate.check(
            self.cfg, kind=self.req.kind, target=schemagate.Version(t.tag, t.digest, known),
            running=running, allow=self.req.allow_breaking_migrations, environ=self.environ)
        if not gate.ran:
            if (gate.shallow and in_ci(self.environ)
                    and not self.req.allow_shallow_clone):
                raise schemagate.SchemaGateError(gate.shallow_refusal())
            self.out.warn(gate.summary())
            return
        for h in gate.findings:
            self._step_report("schema-gate", f"{h.file}:{h.line}: {h.rule}: {h.message}")
        if gate.refuses:
            raise schemagate.SchemaGateError(gate.refusal())
        if gate.findings:
            self.out.warn(gate.summary())
        else:
            self._step_report("schema-gate", gate.summary())

    def _proxy_api(self) -> Any:
        if self._proxy is None:
            from plainsail import proxy

            return proxy
        return self._proxy

    def _plan(self) -> None:
        """Decide every host's steps (argv lists included) before anything changes."""
        assert self.target
        self.lock_info = hoststate.LockInfo(
            deploy_id=self.id, holder=f"{self.who}@{socket.gethostname()}",
            machine=socket.gethostname(), pid=os.getpid(), started=now(),
            tag=self.target.tag, origin=self.origin, kind=self.req.kind,
        )
        self.sw = Switcher(self.cfg, self.target, self.id, self.fingerprint,
                           self.secret_values, self.out, proxy=self._proxy,
                           whole=self._whole, settings=self.settings_label,
                           checkpoint=self._checkpoint, kind=self.req.kind)
        active = [r for r in self.runs if r.outcome != UNCHANGED]
        migrate = bool(self.cfg.migrate) and not self.req.skip_migrations
        self.backup_why = backup_policy.reason(self.cfg, self.gate, migrate and bool(active))
        self.backup_id = backup_host.new_id() if self.backup_why else ""
        self.hs = HostSteps(self.cfg, self.target, self.id, self.lock_info, self.env, self.sw,
                            self.backup_why, self.backup_id, complain=self.out.error)
        self.runner = HostRunner({**self.sw.actions(), **self.hs.actions()},
                                 on_step=lambda run, step: self.out.step(run.host.name,
                                                                         step.name))
        for run in self.runs:
            run.plan = host_plan(
                self.cfg, self.target, self.id, self.fingerprint, run.paths, run.containers,
                run.previous, run.reuse, self.lock_info, unchanged=run not in active,
                migrate_here=migrate and bool(active) and run is active[0],
                settings=self.settings_label, backup=self.backup_why,
                backup_id=self.backup_id, judge_traffic=self.req.kind not in UNJUDGED)
            run.plan.host = run.host.name
            self.runner.check(run.plan)

    def _walk(self, phase: str, run: HostRun) -> bool:
        """The steps of one phase of the host's plan (plainsail.deploy.runner)."""
        return self.runner.walk(run, phase)

    # -- dry run
    def _dry_run(self) -> None:
        """Show each host's plan: the same steps, in the same order, the deploy runs."""
        if self.gate is not None:
            self.out.say(self.gate.summary())
        for run in self.runs:
            self.out.say("would run:", run.host.name)
            for step in run.plan.steps:
                shown = (run.ex.display(step.argv) if step.argv is not None
                         else f"# {step.what}")
                notes = [f"stdin: {step.stdin}"] if step.stdin else []
                notes += [f"on failure: {step.undo}"] if step.undo else []
                self.out.say(f"  {step.name}: {shown}" + (f"  # {'; '.join(notes)}"
                                                          if notes else ""))

    # -- the changing part
    def _execute(self) -> tuple[str, str]:
        assert self.target
        target = self.target
        # Hosts already running this exact image are left alone (they are locked all the
        # same, so nobody changes them under this deploy).
        active = [r for r in self.runs if r.outcome != UNCHANGED]
        # Every host at once: the lock and env file, then the image (pull, or send) and,
        # behind the proxy, the proxy's boot (it creates the network the migration joins).
        failed = self._failures(self.runs, self._fan(self.runs, partial(self._walk, "lock")))
        if not failed:
            failed = self._failures(active, self._fan(active, partial(self._walk, "prepare")))
        if failed:
            reason = (f"{'; '.join(one_line(exc) for _, exc in failed)}; nothing was "
                      "switched, the running version is untouched")
            for run in self.runs:
                run.outcome, run.reason = ABORTED, reason
            return ABORTED, reason
        # The backup and the migrations: once, on the first host that changes.
        try:
            if active:
                self._walk("migrate", active[0])
        except BackupError as err:
            reason = (f"{one_line(err)}; the migrations did not run and nothing was "
                      "switched, the running version is untouched")
            for run in self.runs:
                run.outcome, run.reason = ABORTED, reason
            return ABORTED, reason
        except MigrationFailed as err:
            for run in self.runs:
                run.outcome, run.reason = FAILED_MIGRATION, str(err)
            return FAILED_MIGRATION, str(err)
        ended = self._rollout(active)
        if ended is not None:
            return ended
        for run in active:
            run.outcome = SUCCEEDED
        # Pruning never undoes a healthy deploy: a failure there is only reported, and a
        # signal waits until it and the records are done (well under a second).
        self.finishing = True
        pruned = self._fan(active, partial(self._walk, "prune"), stoppable=False)
        for run, exc in zip(active, pruned, strict=True):
            if exc is not None:
                self.out.warn(f"{run.host.name}: removing old containers failed "
                     f"({type(exc).__name__}: {one_line(exc)}); the deploy is unaffected")
        if self.req.kind == "recover":
            for run in active:
                run.outcome = RECOVERED
            return RECOVERED, f"{target.tag}, the last known-good version, is healthy again"
        changed = next((r.settings_changed for r in active if r.settings_changed), "")
        return SUCCEEDED, f"{target.tag} is healthy on every host" + (
            f" (settings changed: {changed})" if changed else "")

    def _rollout(self, active: list[HostRun]) -> tuple[str, str] | None:
        """Switch the hosts in the order of `hosts:`, in batches (rollout: canary, batch,
        pause), the hosts of a batch at once. A failure stops the rollout: the hosts not
        reached are untouched; with on_failure restore the hosts switched in this attempt
        go back to their previous version (at once), with stop they stay as they are.
        Returns the attempt's (outcome, reason) on a failure, None when all switched."""
        assert self.target is not None
        rollout = self.cfg.rollout
        sizes = rollout.batches(len(active))
        switched: list[HostRun] = []
        healthy: dict[str, bool] = {}
        at = 0
        for number, size in enumerate(sizes, 1):
            batch = active[at:at + size]
            at += size
            if number > 1 and rollout.pause:
                self._step_report("rollout", f"pause {rollout.pause:g}s before batch {number}")
                time.sleep(rollout.pause)
            for run in batch:
                run.batch = number
            if len(sizes) > 1:
                self._step_report("rollout", f"batch {number} of {len(sizes)}: "
                                  + ", ".join(r.host.name for r in batch))
            errors = self._fan(batch, lambda run: healthy.__setitem__(
                run.host.name, self._switch_one(run)))
            for exc in errors:
                if exc is not None:  # a signal or a bug: the unwind restores what switched
                    raise Interrupted() if isinstance(exc, Interrupted) else exc
            switched += [r for r in batch if healthy[r.host.name]]
            bad = [r for r in batch if not healthy[r.host.name]]
            if not bad:
                if self.cfg.traffic_gate is not None and number < len(sizes):
                    self._step_report("rollout", f"batch {number} judged on real traffic ("
                                      + _verdicts(batch) + f"): batch {number + 1} next")
                continue
            names = ", ".join(r.host.name for r in bad)
            gate = ("traffic gate" if all(r.outcome == TRAFFIC_RESTORED for r in bad)
                    else "health gate")
            why = f"{names} failed {f'its {gate}' if len(bad) == 1 else f'their {gate}s'}"
            if self.cfg.on_failure == "stop":
                for other in switched:
                    other.outcome = SUCCEEDED
                    other.reason = (f"{why}; on_failure is stop: this host is left on "
                                    f"{self.target.tag}")
            else:
                for other in switched:
                    other.reason = why
                self._fan(switched, lambda r: self.sw.restore(r, r.reason, failed_new=True),
                          stoppable=False)
            for other in active[at:]:
                other.outcome = ABORTED
                other.reason = f"not touched: {why}"
            first = bad[0]
            reason = first.reason
            if len(self.runs) > 1:  # which hosts were judged what, and which not reached
                reason = ("" if len(bad) == 1 else f"{why}; ") + (
                    f"{first.host.name} (batch {number} of {len(sizes)}): {reason}") + (
                    f"; not touched: {', '.join(r.host.name for r in active[at:])}"
                    if active[at:] else "")
            if self.cfg.on_failure == "stop" and switched:
                reason += (f"; on_failure is stop: {', '.join(r.host.name for r in switched)} "
                           f"left on {self.target.tag}")
            return first.outcome, reason
        return None

    def _switch_one(self, run: HostRun) -> bool:
        """Switch one host; whether its new version is healthy (if not, the host is restored
        or left as on_failure says, and its outcome says which)."""
        if self.cfg.proxy is None:
            run.switched = True  # from the first step on, the way back is the restore
        try:
            ok = self.runner.walk(run, "switch")
        except PlainsailError as exc:
            failed = run.steps[-1].name if run.steps else "switch"
            run.reason = f"{failed} failed: {one_line(exc)}"
            self.sw.restore(run, f"{failed} failed", failed_new=True)
            ok = False
        if not ok and run.outcome not in (RESTORED, RESTORE_FAILED, LEFT_STOPPED, OLD_KEPT,
                                          TRAFFIC_RESTORED):
            raise AssertionError(f"switch of {run.host.name} ended without an outcome")
        return ok

    def _unlock_all(self) -> None:
        if self.hs is not None:
            for run in self.runs:
                self.hs.unlock(run)

    def _unwind(self, why: str, outcome: str) -> tuple[str, str]:
        """After a signal or an unexpected error: put the previous version back wherever the
        switch had begun and not finished; return the attempt's outcome and reason."""
        todo = [run for run in self.runs if run.outcome not in (
            SUCCEEDED, UNCHANGED, RECOVERED, RESTORED, RESTORE_FAILED, LEFT_STOPPED, OLD_KEPT,
            TRAFFIC_RESTORED)]
        for run in todo:  # a host whose switch had not begun says so
            run.reason = run.reason or (why if run.switched or run.new_name
                                        else f"not touched: {why}")
        # Every host whose switch had begun goes back at once; each restore runs to its end.
        self._fan([r for r in todo if r.switched or (self.cfg.proxy is not None
                                                     and r.new_name)],
                  lambda r: self.sw.restore(r, why, failed_new=True), stoppable=False)
        for run in todo:
            if outcome == INTERRUPTED and run.outcome != RESTORE_FAILED:
                run.outcome = INTERRUPTED
            elif run.outcome not in (RESTORED, RESTORE_FAILED):
                run.outcome = ABORTED if not run.switched else RESTORE_FAILED
        outcomes = {r.outcome for r in self.runs}
        if outcome != INTERRUPTED:
            outcome = next((o for o in (RESTORE_FAILED, RESTORED, TRAFFIC_RESTORED)
                            if o in outcomes), outcome)
        return outcome, why

    def _step_report(self, where: str, text: str) -> None:
        self.out.say(text, where)

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
            "allow_breaking_migrations": self.req.allow_breaking_migrations,
            "allow_shallow_clone": self.req.allow_shallow_clone,
            "schema_gate": self.gate.record() if self.gate else None,
            # The app's settings this attempt ran with (no secret values): what a rollback
            # to this release runs it with.
            "settings": settingslib.recorded(self.cfg),
        }
        if self.req.kind == "rollback":
            rec["rollback_from"] = self.req.rollback_from
            rec["rollback_to"] = t.tag if t else None
            rec["settings_from"] = self.req.settings_from
        if self.req.kind == "recover":
            rec["recovered_from"] = self.req.rollback_from
        if run is not None:
            rec.update({
                "host": run.host.name,
                "batch": run.batch or None,
                "previous_tag": run.previous.tag if run.previous else None,
                "previous_digest": run.previous.digest if run.previous else None,
                "container": run.new_name or None,
                "reused_container": bool(run.reuse),
                "steps": [s.__dict__ for s in run.steps],
                "health": run.health,
                "restore_health": run.restore_health,
                "log_tail": run.log_tail,
                "in_flight_at_switch": run.in_flight_at_switch,
                "traffic_gate": run.traffic,
                "maintenance": run.maintenance,
                "settings_changed": run.settings_changed or None,
            })
        if self.hs is not None and self.hs.migration:
            rec["migration"] = self.hs.migration
        if self.hs is not None and self.hs.backup:
            rec["backup"] = self.hs.backup
        return redact_free_text(rec, self.secret_values)

    def _summary(self, outcome: str, reason: str, preflight: bool = False) -> dict[str, Any]:
        rec = self._record(None, outcome, reason)
        rec["hosts"] = [h.name for h in self.hosts] or list(self.req.hosts)
        rec["preflight"] = preflight
        rec["per_host"] = [
            {"host": r.host.name, "outcome": r.outcome or outcome, "reason": r.reason,
             "previous_tag": r.previous.tag if r.previous else None,
             "settings_changed": r.settings_changed or None,
             "batch": r.batch or None,
             "traffic_gate": r.traffic,
             "steps": [{"name": s.name, "seconds": s.seconds, "ok": s.ok} for s in r.steps]}
            for r in self.runs
        ]
        if not self.runs:  # stopped in preflight: every host still named, and why
            unreached = self.unreached or {h.name: "not reached: the attempt stopped before "
                                           "connecting to the hosts" for h in self.hosts}
            rec["per_host"] = [{"host": name, "outcome": outcome, "reason": why,
                                "previous_tag": None, "batch": None, "steps": []}
                               for name, why in unreached.items()]
        return redact_free_text(rec, self.secret_values)

    def _finish(self, outcome: str, reason: str) -> dict[str, Any]:
        self.finishing = True
        assert self.hs is not None
        for run in self.runs:
            if not run.outcome:
                run.outcome = outcome
                run.reason = run.reason or reason
            run.record = self._record(run, run.outcome, run.reason or reason)
        # Every host at once: its record, then its unlock (the next deploy sees this one).
        # Neither raises; a signal now waits until they are done.
        done = self._fan(self.runs, partial(self._walk, "finish"), stoppable=False)
        for run in self.runs:
            self.out.host_done(run.host.name, run.outcome)
        for exc in done:
            if exc is not None:
                raise exc
        summary = self._summary(outcome, reason)
        if self.hs.unrecorded:
            summary["unrecorded_hosts"] = [r.host.name for r in self.runs
                                           if r.host.name in self.hs.unrecorded]
        append_local(self.cfg, summary)
        self.finishing = False  # recorded and unlocked: a signal now ends the notifying
        try:
            for w in notify.send(self.cfg.notify, summary):
                self.out.warn(w)
        except Interrupted:
            self.out.warn(f"notifications cut short by a signal; the {self.req.kind} is "
                          f"recorded as {outcome}")
        except Exception as exc:  # noqa: BLE001 - a notification never changes the outcome
            self.out.warn(f"notifications failed ({type(exc).__name__}); the {self.req.kind} is "
                 "unaffected")
        finally:
            self.finishing = True
        return summary

    def _close(self) -> None:
        """Close every host's connection, at once (each `ssh -O exit` is a round trip)."""
        execs = [run.ex for run in self.runs] + list(self._given.values())
        fanout.each(execs, lambda ex: ex.close(), self.cfg.rollout.max_parallel,
                    keep_going=True)
        self._given.clear()




def _verdicts(runs: list[HostRun]) -> str:
    """Each host's traffic gate verdict, for a progress line: `web-1 passed, web-2 ...`."""
    return ", ".join(f"{r.host.name} {(r.traffic or {}).get('verdict', 'not-judged')}"
                     for r in runs)


@contextmanager
def _sigterm_as_interrupt(attempt: Deploy) -> Iterator[None]:
    """SIGTERM and Ctrl-C unwind the deploy (restore, record, unlock) instead of killing it.
    While the outcome is being recorded (`attempt.finishing`), a signal is noted and the
    bookkeeping, which takes well under a second, completes; during a step that must run
    whole (`attempt.holding`), the signal is raised when the step returns."""
    def handler(signum: int, frame: object) -> None:
        if attempt.finishing:
            attempt.late_signal = signum
            return
        if attempt.fanout:
            attempt.stop_signal = signum
            return
        if attempt.holding:
            attempt.held_signal = signum
            return
        raise Interrupted()

    with handled_by(handler):
        yield


def deploy(cfg: Config, req: Request, report: Reporter = NULL,
           progress: Progress = NULL) -> dict[str, Any]:
    return Deploy(cfg, req, report, progress=progress).run()
