"""The switch on one host: stop the old version, start the new one, gate it, and the way
back (restore) when anything after the stop fails; prune after a healthy verdict.

`Deploy` (plainsail.deploy.run) decides the plan and the order of hosts; a `Switcher` runs the
switch steps of one host's plan and keeps that host's account (`HostRun`) of what it did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from plainsail.config.model import Config
from plainsail.deploy import health, trafficgate
from plainsail.deploy.hostregistry import pull_repository
from plainsail.deploy.outcomes import (
    LEFT_STOPPED,
    OLD_KEPT,
    RESTORE_FAILED,
    RESTORED,
    TRAFFIC_RESTORED,
)
from plainsail.deploy.plan import HostPlan, PlannedStep, Target, app_run_argv, container_name
from plainsail.deploy.runner import Action
from plainsail.errors import PlainsailError, RemoteError, one_line
from plainsail.hosts import docker
from plainsail.hosts import state as hoststate
from plainsail.hosts.addresses import Host
from plainsail.hosts.containers import Container
from plainsail.hosts.executor import Executor, error_line, telling_lines
from plainsail.progress import NULL, Progress
from plainsail.progress import Reporter as ProgressReporter
from plainsail.secret import Secret, redact

log = logging.getLogger("plainsail.deploy.run")

Reporter = ProgressReporter  # a reporter, or a function taking one line (the older form)
LOG_LINES_SHOWN = 10  # of a failed container's log, in the terminal (the record keeps 40)
UNJUDGED = {"rollback": "a rollback", "recover": "a recovery"}  # kinds traffic_gate lets by


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
    batch: int = 0  # the rollout batch this host switched in (1: the first); 0: none
    restored_name: str = ""  # the container that runs the previous version after a restore
    old_stopped: bool = False  # behind the proxy: the old version was drained and stopped
    in_flight_at_switch: int | None = None  # behind the proxy: requests in flight then
    maintenance: dict[str, Any] | None = None  # behind the proxy: maintenance at the deploy
    settings_changed: str = ""  # which settings differ from the running container's (names)
    traffic: dict[str, Any] | None = None  # traffic_gate: the window's figures and verdict
    fresh_traffic_log: bool = False  # traffic_gate: the proxy's log was turned on just now
    traffic_log_at: float = 0.0  # traffic_gate: when it was (time.monotonic())
    plan: HostPlan = field(default_factory=lambda: HostPlan("", []))
    cursor: int = 0  # the index in plan.steps after the last step walked
    walked: list[str] = field(default_factory=list)  # the plan's steps run, in order
    switch_at: float = 0.0  # traffic_gate: the host's clock when the route switched
    record: dict[str, Any] | None = None  # the attempt's record for this host, once made


class Switcher:
    """Runs the switch steps of host plans for one attempt."""

    def __init__(self, cfg: Config, target: Target, deploy_id: str, fingerprint: str,
                 secrets: list[Secret], out: Progress = NULL, proxy: Any = None,
                 whole: Callable[[], AbstractContextManager[None]] = nullcontext,
                 settings: str = "",
                 checkpoint: Callable[[], None] = lambda: None,
                 kind: str = "deploy") -> None:
        self.cfg = cfg
        # traffic_gate judges deploys; a rollback or recovery goes back to a version that
        # served before, at once (its whole route, no window, no canary share)
        self.unjudged = UNJUDGED.get(kind, "")
        # The attempt's reporter: every line, and the progress of the pull and the gate.
        self.out = self.progress = out
        self.settings = settings  # the label of containers made with today's settings
        # Asked before every step: raises when the deploy must stop (a signal arrived while
        # hosts were worked on in threads, where a signal cannot interrupt a step).
        self.checkpoint = checkpoint
        # Steps that create a container run whole: a signal waits for the host's answer,
        # so the unwind sees (and removes) what the command made, instead of racing a
        # `docker run` that carries on on the host after the deployer let go of it.
        self.whole = whole
        if proxy is None and cfg.proxy is not None:
            from plainsail import proxy as proxy_module

            proxy = proxy_module
        self.proxy: Any = proxy  # plainsail.proxy, or a stand-in with the same functions
        self.target = target
        self.id = deploy_id
        self.fingerprint = fingerprint
        self.secret_values = secrets

    def actions(self) -> dict[str, Action]:
        """The named actions of the steps this class runs: the pull, the proxy's boot, the
        switch (stop, start, gate, route) and the prune (see plainsail.deploy.runner)."""
        return {
            "pull": self.pull,
            "proxy-boot": lambda run, step: self.boot_proxy(run),
            "stop-old": self.stop_old,
            "rename-old": self.rename_old,
            "start-retained": self.start_new,
            "start-new": self.start_new,
            "gate": self.gate_new,
            "canary": self.canary,
            "route": self.route,
            "check-through": self.check_through,
            "traffic-gate": lambda run, step: self._watch(run, run.switch_at),
            "drain": self.drain,
            "stop-others": self.command,
            "prune": self.command,
            "prune-images": partial(self.command, check=False),
        }

    def command(self, run: HostRun, step: PlannedStep, check: bool = True) -> None:
        """A step that is its argv: run on the host, bounded by the step's timeout."""
        argv = step.argv
        assert argv is not None, step.name
        self.step(run, step.name, lambda: run.ex.run(argv, timeout=step.timeout,
                                                   what=step.what, check=check))

    def stop_old(self, run: HostRun, step: PlannedStep) -> None:
        """Stop the previous version (kept: the way back). Behind the proxy this comes
        last, once the route left it and its requests drained."""
        self.command(run, step)
        if self.cfg.proxy is not None:
            run.old_stopped = True

    def rename_old(self, run: HostRun, step: PlannedStep) -> None:
        """A same-named older container steps aside for the new one."""
        assert run.plan.rename is not None
        old, alias = run.plan.rename
        self.command(run, step)
        run.containers = [replace(c, name=alias) if c.name == old else c
                          for c in run.containers]
        if run.previous and run.previous.name == old:
            run.previous = replace(run.previous, name=alias)

    def start_new(self, run: HostRun, step: PlannedStep) -> None:
        """Create (or start the retained) container of the target version; it runs whole."""
        run.new_name = run.plan.new_name
        with self.whole():
            self.command(run, step)

    def gate_new(self, run: HostRun, step: PlannedStep) -> bool:
        """The new container's health gate. Unhealthy: the host stops here with its
        outcome (restored, left stopped, or the old version kept behind the proxy)."""
        verdict = self.gate(run, run.new_name)
        run.health = verdict.to_json()
        if verdict.healthy:
            self.say(run.host.name, f"healthy: {verdict.reason} ({verdict.seconds:.1f}s)")
            return True
        run.reason = self.unhealthy(run, verdict)
        if self.cfg.proxy is not None:
            self._unrouted_failure(run)
            return False
        if self.cfg.on_failure == "stop":
            run.outcome = LEFT_STOPPED
            run.reason += ("; on_failure is stop: the failed version is left as it is for a "
                           "human, the previous container is stopped")
            return False
        self.restore(run, "its health gate failed", failed_new=True)
        return False

    def gate(self, run: HostRun, name: str) -> health.Verdict:
        target = health.app_address(run.ex, self.cfg, name)
        start = time.monotonic()

        key, attempts = f"gate {run.host.name}", self.cfg.health.attempts

        def progress(a: health.Attempt) -> None:
            state = f"answered {a.status}" if a.status is not None else a.error
            log.debug("[%s]   health attempt %d: %s", run.host.name, a.n, state)
            self.progress.update(key, f"waiting for {self.cfg.health.path}: attempt "
                                 f"{a.n}/{attempts}, {state} ({a.seconds:.0f}s)")

        try:
            verdict = health.gate(run.ex, self.cfg.health, target, name, self.secret_values,
                                  progress=progress)
        finally:
            self.progress.done(key)
        run.steps.append(Step(f"health:{name}", round(time.monotonic() - start, 3),
                              verdict.healthy, verdict.reason))
        return verdict

    def restore(self, run: HostRun, why: str, failed_new: bool = False) -> None:
        """Stop the new container and start the previous version again, then gate it.

        The previous container is started as it was when its environment and options are
        today's; otherwise (a rotated secret, a changed option) a new container of the
        previous digest is created with today's environment, the rule rollback follows.
        """
        if self.cfg.proxy is not None:
            self._restore_proxied(run, why, failed_new)
            return
        if not run.switched:
            return
        self._remove_new(run, failed_new)
        self._start_previous(run, why)

    def _remove_new(self, run: HostRun, failed_new: bool) -> None:
        """Stop the new container; remove it when it failed (its log tail is in the record,
        and a failed version is no rollback target)."""
        if not run.new_name:
            return
        with suppress(PlainsailError):
            run.ex.run(docker.stop(run.new_name, self.cfg.app.stop_timeout),
                       timeout=self.cfg.app.stop_timeout + self.cfg.timeouts.command, check=False)
        if failed_new and not run.reuse:
            with suppress(PlainsailError):
                run.ex.run(docker.rm([run.new_name], force=True), check=False,
                           timeout=self.cfg.timeouts.command)

    def _start_previous(self, run: HostRun, why: str) -> None:
        """Start the previous version again and gate it: outcome RESTORED (its container
        in `run.restored_name`) or RESTORE_FAILED."""
        ex = run.ex
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
                target = Target(pull_repository(self.cfg), prev.tag, prev.digest, False)
                argv = app_run_argv(self.cfg, target, name, run.paths.env, self.id,
                                    self.fingerprint, self.settings)
                action: Callable[[], object] = partial(
                    ex.run, argv, timeout=self.cfg.timeouts.command, what="docker run")
                how = " with today's environment"
            else:
                name = prev.name
                action = partial(run_idempotent, ex, docker.start(prev.name),
                                 what="docker start", timeout=self.cfg.timeouts.command,
                                 warn=self.out.warn)
                how = " with its previous environment" if tried else ""
            try:
                self.step(run, "restore" if way == "retained" else "restore-today", action)
            except PlainsailError as exc:
                tried.append(f"restarting {prev.tag}{how} failed: {one_line(exc)}")
                continue
            verdict = self.gate(run, name)
            run.restore_health = verdict.to_json()
            if verdict.healthy:
                run.outcome = RESTORED
                run.restored_name = name
                run.reason = (f"{run.reason or why}; restored {prev.tag}{how}, which is "
                              "healthy again" + (f" ({'; '.join(tried)})" if tried else ""))
                self.say(run.host.name, f"restored {prev.tag}{how}: healthy")
                return
            said = _last_line(self.log_tail(run, name))
            tried.append(f"{prev.tag}{how} failed its health gate too ({verdict.reason}); "
                         + (f"its log ends with: {said}" if said else "its log is empty"))
            self.say(run.host.name, f"restore of {prev.tag}{how} UNHEALTHY too")
            if way == ways[-1]:
                break  # left running, unhealthy, for a human to inspect
            with suppress(PlainsailError):
                ex.run(docker.stop(name, self.cfg.app.stop_timeout),
                       timeout=self.cfg.app.stop_timeout + self.cfg.timeouts.command, check=False)
            if way == "today":
                with suppress(PlainsailError):
                    ex.run(docker.rm([name], force=True), check=False,
                           timeout=self.cfg.timeouts.command)
        run.outcome = RESTORE_FAILED
        run.reason = (f"{run.reason or why}; " + "; ".join(tried)
                      + ". The service is DOWN on this host: fix forward")

    # -- behind the proxy: start next to the old version, gate, switch the route, drain

    # -- behind the proxy: the new container starts next to the running one, unpublished,
    # and is gated at its own address; only a healthy one gets the route. Until the route
    # switches, a failure leaves the old version serving as if nothing happened.

    def _unrouted_failure(self, run: HostRun) -> None:
        """The new container failed its gate before any route pointed at it."""
        keep = self.cfg.on_failure == "stop"
        if not keep:
            self._remove_new(run, failed_new=True)
        run.reason += ("; the route never pointed at the new container" + (
                      "" if not keep else
                      f" ({run.new_name} is left running, unrouted, for a human)"))
        if run.previous is None:
            run.outcome = RESTORE_FAILED
            run.reason += "; nothing ran before (first deploy): the service is DOWN"
        else:
            run.outcome = OLD_KEPT
            run.reason += f"; {run.previous.tag} kept serving, never stopped"

    def canary(self, run: HostRun, step: PlannedStep) -> None:
        """traffic_gate.canary: a share of the route's requests to the new container."""
        gate = self.cfg.traffic_gate
        assert gate is not None and gate.canary is not None
        share = gate.canary
        run.switch_at = self._traffic_start(run)
        run.switched = True  # from here on, the way back is the restore (route back)
        switched: list[Any] = []
        self.step(run, step.name, lambda: switched.append(self._proxy_call(
            run, lambda: self.proxy.split(run.ex, self.cfg, run.new_name, share))))
        if switched:
            run.in_flight_at_switch = int(getattr(switched[0], "in_flight", 0) or 0)

    def route(self, run: HostRun, step: PlannedStep) -> None:
        """The whole route to the new container (after a canary and its traffic gate: the
        rest of it)."""
        after_canary = run.switched
        if not after_canary:
            if run.plan.step("traffic-gate") is not None:
                run.switch_at = self._traffic_start(run)
            run.switched = True  # from here on, the way back is the restore (route back)
        switched: list[Any] = []
        self.step(run, step.name, lambda: switched.append(self._proxy_call(
            run, lambda: self.proxy.route_to(run.ex, self.cfg, run.new_name))))
        if switched and not after_canary:
            run.in_flight_at_switch = int(getattr(switched[0], "in_flight", 0) or 0)

    def check_through(self, run: HostRun, step: PlannedStep) -> None:
        """One request through the proxy. With a canary its answer may come from either
        version: it proves the route answers; the health gate proved the new container
        does."""
        checked = None if run.plan.step("canary") is not None else run.new_name
        told: list[Any] = []
        self.step(run, step.name, lambda: told.append(
            self.proxy.check_through(run.ex, self.cfg, checked)))
        for line in (told[0] or []) if told else []:
            self.out.warn(line)
        if self.cfg.traffic_gate is not None and run.plan.step("traffic-gate") is None:
            run.traffic = {"verdict": trafficgate.NOT_JUDGED, "notes": [
                f"{self.unjudged} is not judged on traffic: the version it goes back to "
                "got the whole route at once" if self.unjudged else
                "first deploy: no old version to compare with, not judged"]}

    def drain(self, run: HostRun, step: PlannedStep) -> None:
        """Wait until the old version has no request in flight (bounded by proxy.drain)."""
        assert run.previous is not None
        old = run.previous.name
        self.step(run, step.name, lambda: self.proxy.drain(run.ex, self.cfg, old))


    # -- traffic_gate: watch the new version's real answers, then complete or route back

    def _traffic_start(self, run: HostRun) -> float:
        """Just before the route switches: the host's clock (the window's start). When
        the proxy's traffic log was turned on by this deploy, the old version has no
        baseline yet: watch it until the log covers one window (a host of a later batch,
        whose log was turned on with the first batch's, has one already)."""
        gate = self.cfg.traffic_gate
        assert gate is not None
        left = gate.window - (time.monotonic() - run.traffic_log_at)
        if run.fresh_traffic_log and left > 0:
            self.say(run.host.name, f"the proxy's traffic log is new: watching "
                     f"{run.previous.tag if run.previous else 'the old version'} for "
                     f"{left:.3g}s first (its baseline)")
            self._wait(left)
        return float(self.proxy.host_time(run.ex))

    def _wait(self, seconds: float) -> None:
        """Sleep through a window; a signal stops it (raised here on the main thread, or
        noted by the attempt while hosts are worked on in threads: the checkpoint)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
            self.checkpoint()

    def _watch(self, run: HostRun, switch_at: float) -> bool:
        """The window after the switch: the old container keeps running (neither drained
        nor stopped); then the new version's answers are judged against the old version's
        over the window before the switch. Whether the switch may complete; when not, the
        route is back on the old version (outcome TRAFFIC_RESTORED). A signal here
        unwinds like any other: the route goes back."""
        gate = self.cfg.traffic_gate
        prev = run.previous
        assert gate is not None and prev is not None
        from plainsail.proxy.routes import upstream_of

        old_up, new_up = upstream_of(self.cfg, prev.name), upstream_of(self.cfg, run.new_name)
        self.say(run.host.name, f"watching real traffic for {gate.window:g}s "
                 f"({prev.tag} keeps running)")
        start = time.monotonic()
        extended = False
        while True:
            self._wait(gate.window)
            end, samples = self._read_traffic(run, switch_at - gate.window)
            old = trafficgate.figures(samples, {old_up}, switch_at - gate.window, switch_at)
            new = trafficgate.figures(samples, {new_up}, switch_at, end)
            beside = trafficgate.figures(samples, {old_up}, switch_at, end)
            if new.requests >= gate.min_requests or extended:
                break
            extended = True
            self.say(run.host.name, f"{new.requests} request(s) so far, fewer than "
                     f"min_requests {gate.min_requests}: watching {gate.window:g}s more")
        verdict = trafficgate.judge(gate, old, new)
        notes = list(verdict.notes)
        if extended:
            notes.insert(0, f"the window was extended once by {gate.window:g}s for want of "
                         "traffic")
        run.traffic = {"verdict": verdict.verdict, "reasons": verdict.reasons,
                       "notes": notes, "extended": extended, "canary": gate.canary,
                       "new_share": round(100 * new.requests / (new.requests + beside.requests),
                                          2) if new.requests + beside.requests else None,
                       "old": {"tag": prev.tag, **old.to_json()},
                       "new": {"tag": self.target.tag, **new.to_json()}}
        run.steps.append(Step("traffic-gate", round(time.monotonic() - start, 3),
                              not verdict.failed, verdict.describe()))
        figures = f"new {new.describe()}; old {old.describe()}"
        if not verdict.failed:
            self.say(run.host.name, f"traffic gate {verdict.verdict}: {figures}")
            return True
        self.say(run.host.name, f"traffic gate FAILED: {verdict.describe()}")
        run.reason = f"traffic gate failed: {verdict.describe()} ({figures})"
        self._restore_proxied(run, "its traffic gate failed", failed_new=True)
        if run.outcome == RESTORED:
            run.outcome = TRAFFIC_RESTORED
        return False

    def _read_traffic(self, run: HostRun, since: float
                      ) -> tuple[float, list[trafficgate.Sample]]:
        """(the host's clock now, the proxy's log since `since`), as a step."""
        read: list[tuple[float, list[trafficgate.Sample]]] = []
        self.step(run, "traffic-read", lambda: read.append((
            float(self.proxy.host_time(run.ex)),
            self.proxy.read_traffic(run.ex, self.cfg, since))))
        return read[0]

    def boot_proxy(self, run: HostRun) -> None:
        """The plan's proxy-boot step: the host's proxy runs (booted, with its network, when
        absent); notes whether the service is in maintenance."""
        booted: list[Any] = []
        self.step(run, "proxy-boot",
                  lambda: booted.append(self.proxy.ensure_booted(run.ex, self.cfg)))
        message = getattr(booted[0], "maintenance", None) if booted else None
        run.maintenance = {"on": message is not None, "message": message}
        warning = getattr(booted[0], "warning", None) if booted else None
        if warning:
            self.say(run.host.name, "warning: " + warning)
        if self.cfg.traffic_gate is not None:
            changed: list[bool] = []
            self.step(run, "traffic-log", lambda: changed.append(
                bool(self.proxy.ensure_traffic_log(run.ex, self.cfg))))
            run.fresh_traffic_log = bool(changed and changed[0])
            run.traffic_log_at = time.monotonic()
            if self.cfg.traffic_gate.canary is not None and not self.unjudged:
                self.step(run, "proxy-version",
                          lambda: self.proxy.check_canary(run.ex, self.cfg))

    def _restore_proxied(self, run: HostRun, why: str, failed_new: bool) -> None:
        """Route back to the previous version (started and gated again if it was already
        stopped), then remove the new container."""
        if not run.switched:
            # The route never moved: the old version kept serving; only clean up.
            self._remove_new(run, failed_new)
            if run.outcome not in (RESTORED, RESTORE_FAILED, OLD_KEPT, LEFT_STOPPED):
                run.outcome = OLD_KEPT if run.previous else RESTORE_FAILED
                run.reason = run.reason or why
            return
        prev = run.previous
        if prev is None:
            run.outcome = RESTORE_FAILED
            run.reason = (f"{run.reason or why}; there is no previous version to route back "
                          "to (first deploy): fix forward and deploy again")
            return
        if run.old_stopped:
            self._start_previous(run, why)
            if run.outcome != RESTORED:
                return
            name = run.restored_name
        else:
            name = prev.name
        try:
            self.step(run, "route-back", lambda: self._proxy_call(
                run, lambda: self.proxy.route_to(run.ex, self.cfg, name)))
        except PlainsailError as exc:
            # Whether the route moved is unknown: both containers stay running, so it
            # points at one that serves, never at a removed one.
            run.outcome = RESTORE_FAILED
            run.reason = (f"{run.reason or why}; routing back to {prev.tag} failed: "
                          f"{one_line(exc)}; both {prev.name} and {run.new_name} are left "
                          "running: see plainsail proxy status, then deploy again")
            return
        # The new container's requests in flight finish before it stops.
        with suppress(PlainsailError):
            self.proxy.drain(run.ex, self.cfg, run.new_name)
        self._remove_new(run, failed_new)
        run.outcome = RESTORED
        run.restored_name = name
        run.reason = (f"{run.reason or why}; the route points at {prev.tag} again"
                      + (", started again and healthy" if run.old_stopped else
                         ", which never stopped"))
        self.say(run.host.name, f"routed back to {prev.tag}")

    def _proxy_call(self, run: HostRun, call: Callable[[], Any]) -> Any:
        """A route change, which may safely run twice. When it fails because the proxy
        stopped, lost its admin socket or was removed since the proxy-boot step, boot the
        proxy again (idempotent; it comes back with the routes it had saved) and try once
        more, so that neither the switch nor the way back stops half-done."""
        try:
            return call()
        except PlainsailError as exc:
            self.say(run.host.name, f"the proxy failed ({one_line(exc)}); booting it again "
                     "and trying once more")
            booted = self.proxy.ensure_booted(run.ex, self.cfg)
            if getattr(booted, "action", "") not in ("", "none"):
                self.say(run.host.name, f"proxy {booted.action} again")
            return call()

    def pull(self, run: HostRun, step: PlannedStep) -> None:
        """docker pull of the pinned image, its layers counted as progress."""
        argv = step.argv
        assert argv is not None
        key, layers = f"pull {run.host.name}", set()

        def pulled(line: str) -> None:  # "0a1b2c3d4e5f: Pull complete", "... Already exists"
            layer, _, status = line.strip().partition(": ")
            if status in ("Pull complete", "Already exists"):
                layers.add(layer)
                self.progress.update(key, f"pulling {self.target.tag}: {len(layers)} "
                                     "layer(s) done")

        self.progress.update(key, f"pulling {self.target.tag}")
        try:
            self.step(run, step.name, lambda: run.ex.run(argv, timeout=step.timeout,
                                                       what=step.what, on_line=pulled))
        finally:
            self.progress.done(key)

    def unhealthy(self, run: HostRun, verdict: health.Verdict) -> str:
        """The new container failed its gate: show the evidence where the person is
        looking (the verdict, with the last answer's body, and the container's last log
        lines, redacted), keep its log tail for the record; the reason to record."""
        run.log_tail = redact(self.log_tail(run, run.new_name), self.secret_values)
        self.say(run.host.name, f"UNHEALTHY: {verdict.reason}")
        lines = telling_lines(run.log_tail)[-LOG_LINES_SHOWN:]
        if lines:
            self.say(run.host.name, f"the last {len(lines)} line(s) of {run.new_name}'s log:")
            for line in lines:
                self.out.say(f"  | {line[:300]}")
        else:
            self.say(run.host.name, f"{run.new_name} wrote nothing to its log")
        last = _last_line(run.log_tail)
        return f"health gate failed: {verdict.reason}" + (
            f"; its log ends with: {last}" if last else "")

    def log_tail(self, run: HostRun, name: str) -> str:
        res = run.ex.run(docker.logs(name, 40), check=False, timeout=self.cfg.timeouts.command)
        return res.tail(40)

    # -- bookkeeping
    def step(self, run: HostRun, name: str, action: Callable[[], object]) -> None:
        self.checkpoint()
        start = time.monotonic()
        try:
            action()
        except PlainsailError as exc:
            run.steps.append(Step(name, round(time.monotonic() - start, 3), False,
                                  one_line(exc)))
            self.say(run.host.name, f"{name}: FAILED")
            raise
        seconds = time.monotonic() - start
        run.steps.append(Step(name, round(seconds, 3), True))
        self.say(run.host.name, f"{name}: ok ({seconds:.1f}s)")

    def say(self, where: str, text: str) -> None:
        self.out.say(text, where)


def run_idempotent(ex: Executor, argv: list[str], what: str, timeout: float,
                   warn: Callable[[str], None]) -> object:
    """Run a command that may safely run twice; when the SSH connection dropped (exit 255)
    try once more over a new connection, since the way back must not give up on a blip
    (and `warn` tells the person)."""
    try:
        return ex.run(argv, timeout=timeout, what=what)
    except RemoteError as exc:
        if exc.returncode != 255 or ex.host.is_local:
            raise
        warn(f"{ex.host.name}: the connection dropped during {what}; trying once more")
        return ex.run(argv, timeout=timeout, what=what)


def _last_line(text: str) -> str:
    return error_line(text)[:300]

