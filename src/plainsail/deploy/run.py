"""A deploy (or rollback, or recovery) on hosts: preflight, fan-out and aggregation.

`Deploy` does three things and hands everything else to the module named for it:

1. Preflight, nothing changes anywhere: secrets present, the image verified and pinned to
   a digest (`plan.resolve_target`), every host connected and surveyed at once, the hosts
   already on the target re-checked (resume, not redo), the schema gate, the proxy's
   preflight, then every host's plan decided (`plan.host_plan`, what `--dry-run` shows).
   A failure ends the attempt `aborted` with its record kept locally
   (`preflight.stopped_in_preflight`).
2. Fan-out: each phase of the plans (`plan.PHASES`: lock, prepare, migrate, switch,
   prune, finish) on the hosts at once, at most `rollout.max_parallel`, each host's steps
   walked by `runner.HostRunner`; the steps themselves are `switch.Switcher` and
   `hoststeps.HostSteps`. Migrations run once, before any switch; the switch goes in
   batches (`rollout.Rollout`), which also puts the previous version back after a signal
   or a bug. SIGTERM and Ctrl-C unwind instead of killing (`signals.Signals`).
3. Aggregation: one outcome for the attempt from the hosts' outcomes, a record per host
   and a summary naming every host (`attemptrecord`), the local history, notifications,
   every lock released and every connection closed.

Rollback (`plainsail.deploy.rollback`) and recovery run this same code with migrations
skipped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from plainsail.backup import host as backup_host
from plainsail.backup import policy as backup_policy
from plainsail.backup.host import BackupError
from plainsail.config import weak
from plainsail.config.model import Config
from plainsail.deploy import attemptrecord, fanout, health, notify, schemagate
from plainsail.deploy import settings as settingslib
from plainsail.deploy.history import append_local
from plainsail.deploy.hoststeps import HostSteps, MigrationFailed
from plainsail.deploy.outcomes import (
    ABORTED,
    FAILED_MIGRATION,
    INTERRUPTED,
    RECOVERED,
    SUCCEEDED,
    UNCHANGED,
)
from plainsail.deploy.plan import (
    Request,
    Target,
    app_env,
    host_plan,
    missing_secrets,
    published_port,
    resolve_target,
    run_options,
    select_hosts,
    ssh_options,
)
from plainsail.deploy.preflight import stopped_in_preflight
from plainsail.deploy.records import new_deploy_id, now, origin, who
from plainsail.deploy.rollout import Rollout
from plainsail.deploy.runner import HostRunner
from plainsail.deploy.signals import Interrupted, Signals
from plainsail.deploy.switch import UNJUDGED, HostRun, Reporter, Step, Switcher
from plainsail.environment import in_ci
from plainsail.errors import (
    PlainsailError,
    one_line,
)
from plainsail.hosts import state as hoststate
from plainsail.hosts.addresses import Host
from plainsail.hosts.containers import Container, current, fingerprint
from plainsail.hosts.executor import Executor, executor_for
from plainsail.progress import NULL, Progress, reporter
from plainsail.secret import Secret

log = logging.getLogger("plainsail.deploy.run")

BUILTIN_NETWORKS = ("bridge", "host", "none")

__all__ = ["Deploy", "HostRun", "Interrupted", "Reporter", "Step", "deploy"]


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
        self.sig = Signals()  # what SIGTERM and Ctrl-C do, now (plainsail.deploy.signals)
        self.unreached: dict[str, str] = {}  # preflight failed: each host, and why
        self.prune: list[HostRun] = []  # switched and healthy: old containers go

    def _fan(self, runs: list[Any], fn: Callable[[Any], object],
             stoppable: bool = True) -> list[BaseException | None]:
        """fn on every host of `runs`, at most rollout.max_parallel at once; what each raised.
        A signal meanwhile is raised here, once every host's step in flight has returned
        (unless `stoppable` is False: a restore runs to its end, then the unwind goes on)."""
        many = len(runs) > 1 and self.cfg.rollout.max_parallel > 1
        try:
            with self.sig.fanning(many, stoppable):
                errors = fanout.each(runs, fn, self.cfg.rollout.max_parallel,
                                     keep_going=not stoppable)
        finally:
            self.out.flush()  # a phase ended on these hosts: per-host groups may show
        if stoppable:
            self.sig.raise_if_stopped()
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
        with self.sig.handled():
            try:
                self._preflight()
            except (PlainsailError, Interrupted) as exc:
                stopped_in_preflight(self.cfg, exc, partial(self._summary, preflight=True),
                                     self._close, "any host changed")
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
                    self.sig.finishing = True
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
                outcome, reason = self.rollout.unwind("interrupted by a signal", INTERRUPTED)
            except Exception as exc:  # a bug: still restore, record, notify and unlock
                from plainsail.crash import write_crash_log

                path = write_crash_log(exc)
                outcome, reason = self.rollout.unwind(
                    f"plainsail hit an unexpected {type(exc).__name__} (a bug; details for a "
                    f"bug report in {path})", ABORTED)
            except BaseException:  # SystemExit and the like: at least release the locks
                self._unlock_all()
                self._close()
                raise
            self.sig.finishing = True
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
        port = published_port(cfg)

        def note(host: Host) -> Callable[[BaseException, float], None]:
            return lambda exc, delay: self._step_report(
                host.name, f"connecting failed ({one_line(exc)}); trying again in {delay:g}s")

        def look(host: Host) -> None:
            ex = execs[host.name]
            ex.secrets = list(self.secret_values)
            survey = fanout.with_retry(lambda: hoststate.survey(
                ex, cfg.host_dir, cfg.service, custom, timeout=cfg.timeouts.query,
                port=port), note=note(host))
            if not survey.network_ok:
                raise PlainsailError(
                    f"{host.name}: app.network {cfg.app.network!r} does not exist there; "
                    f"create it (docker network create {cfg.app.network}) or fix "
                    "app.network")
            taken = port and hoststate.port_problem(
                survey.port, port, (c.id for c in survey.containers if c.running),
                host_network=cfg.app.network == "host")
            if taken:
                key = "app.port" if cfg.app.network == "host" else "app.publish"
                raise PlainsailError(
                    f"{host.name}: {key} {port}: {taken}; the new container could not "
                    f"{'listen on' if key == 'app.port' else 'publish'} it. Free the port "
                    f"there, or choose another {key}")
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
                           whole=self.sig.whole, settings=self.settings_label,
                           checkpoint=self.sig.checkpoint, kind=self.req.kind)
        active = [r for r in self.runs if r.outcome != UNCHANGED]
        migrate = bool(self.cfg.migrate) and not self.req.skip_migrations
        self.backup_why = backup_policy.reason(self.cfg, self.gate, migrate and bool(active))
        self.backup_id = backup_host.new_id() if self.backup_why else ""
        self.hs = HostSteps(self.cfg, self.target, self.id, self.lock_info, self.env, self.sw,
                            self.backup_why, self.backup_id, complain=self.out.error)
        self.runner = HostRunner({**self.sw.actions(), **self.hs.actions()},
                                 on_step=lambda run, step: self.out.step(run.host.name,
                                                                         step.name))
        self.rollout = Rollout(self.cfg, self.target, self.sw, self.runner, self._fan,
                               self._step_report, self.runs)
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
        # (the schema gate's summary was said in preflight)
        for run in self.runs:
            self.out.say("would run:", run.host.name)
            for line in run.plan.lines(run.ex.display):
                self.out.say(line)

    # -- the changing part
    def _execute(self) -> tuple[str, str]:
        assert self.target
        target = self.target
        # Hosts already running this exact image are left alone (they are locked all the
        # same, so nobody changes them under this deploy).
        active = [r for r in self.runs if r.outcome != UNCHANGED]

        def ready(run: HostRun) -> None:
            """The lock and env file, then the image (pull, or send) and, behind the proxy,
            the proxy's boot (it creates the network the migration joins): on each host as
            soon as its own lock is taken (neither changes what serves, so no host waits
            for the others' locks)."""
            if self._walk("lock", run) and run in active:
                self._walk("prepare", run)

        failed = self._failures(self.runs, self._fan(self.runs, ready))
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
        ended = self.rollout.run(active)
        if ended is not None:
            return ended
        for run in active:
            run.outcome = SUCCEEDED
        # Pruning never undoes a healthy deploy: each host prunes as its records are made
        # (`_finish`), and a failure there is only reported.
        self.sig.finishing = True
        self.prune = active
        if self.req.kind == "recover":
            for run in active:
                run.outcome = RECOVERED
            return RECOVERED, f"{target.tag}, the last known-good version, is healthy again"
        changed = next((r.settings_changed for r in active if r.settings_changed), "")
        return SUCCEEDED, f"{target.tag} is healthy on every host" + (
            f" (settings changed: {changed})" if changed else "")

    def _unlock_all(self) -> None:
        if self.hs is not None:
            for run in self.runs:
                self.hs.unlock(run)

    def _step_report(self, where: str, text: str) -> None:
        self.out.say(text, where)

    def _record(self, run: HostRun | None, outcome: str, reason: str) -> dict[str, Any]:
        return attemptrecord.record(self, run, outcome, reason)

    def _summary(self, outcome: str, reason: str, preflight: bool = False) -> dict[str, Any]:
        return attemptrecord.summary(self, outcome, reason, preflight)

    def _finish(self, outcome: str, reason: str) -> dict[str, Any]:
        self.sig.finishing = True
        assert self.hs is not None
        for run in self.runs:
            if not run.outcome:
                run.outcome = outcome
                run.reason = run.reason or reason

        def close_out(run: HostRun) -> None:
            """After a healthy switch the old containers pruned, then the host's record and
            its unlock (the next deploy sees this one). None of them raises."""
            if run in self.prune:
                try:
                    self._walk("prune", run)
                except Exception as exc:  # noqa: BLE001 - never undoes a healthy deploy
                    self.out.warn(f"{run.host.name}: removing old containers failed "
                                  f"({type(exc).__name__}: {one_line(exc)}); the deploy is "
                                  "unaffected")
            run.record = self._record(run, run.outcome, run.reason or reason)
            self._walk("finish", run)

        # Every host at once; a signal now waits until they are done.
        done = self._fan(self.runs, close_out, stoppable=False)
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
        self.sig.finishing = False  # recorded and unlocked: a signal now ends the notifying
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
            self.sig.finishing = True
        return summary

    def _close(self) -> None:
        """Close every host's connection, at once (each `ssh -O exit` is a round trip)."""
        execs = [run.ex for run in self.runs] + list(self._given.values())
        fanout.each(execs, lambda ex: ex.close(), self.cfg.rollout.max_parallel,
                    keep_going=True)
        self._given.clear()




def deploy(cfg: Config, req: Request, report: Reporter = NULL,
           progress: Progress = NULL) -> dict[str, Any]:
    return Deploy(cfg, req, report, progress=progress).run()
