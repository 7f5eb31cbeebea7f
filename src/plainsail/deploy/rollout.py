"""The rolling switch and the way back after a signal or a bug.

`Rollout.run` switches the hosts in the order of `hosts:`, in batches (rollout: canary,
batch, pause), the hosts of a batch at once. A failure stops the rollout: the hosts not
reached are untouched; with on_failure restore the hosts switched in this attempt go back
to their previous version (at once), with stop they stay as they are. `Rollout.unwind`
puts the previous version back wherever a switch had begun and not finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from plainsail.config.model import Config
from plainsail.deploy.outcomes import (
    ABORTED,
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
from plainsail.deploy.plan import Target
from plainsail.deploy.runner import HostRunner
from plainsail.deploy.signals import Interrupted
from plainsail.deploy.switch import HostRun, Switcher
from plainsail.errors import PlainsailError, one_line

# fn on every host of the list, at once (bounded); what each raised. A restore is not
# stoppable: a signal meanwhile waits until it ended.
Fan = Callable[..., list[BaseException | None]]

# The outcomes a host's switch may end in when its new version is not healthy.
NOT_HEALTHY = (RESTORED, RESTORE_FAILED, LEFT_STOPPED, OLD_KEPT, TRAFFIC_RESTORED)


class Rollout:
    """The switch of one attempt's hosts (see the module's doc)."""

    def __init__(self, cfg: Config, target: Target, sw: Switcher, runner: HostRunner,
                 fan: Fan, say: Callable[[str, str], None], runs: list[HostRun]) -> None:
        self.cfg, self.target, self.sw, self.runner = cfg, target, sw, runner
        self.fan, self.say, self.runs = fan, say, runs

    def run(self, active: list[HostRun]) -> tuple[str, str] | None:
        """Switch `active`; the attempt's (outcome, reason) on a failure, None when every
        host switched and is healthy."""
        rollout = self.cfg.rollout
        sizes = rollout.batches(len(active))
        switched: list[HostRun] = []
        healthy: dict[str, bool] = {}
        at = 0
        for number, size in enumerate(sizes, 1):
            batch = active[at:at + size]
            at += size
            if number > 1 and rollout.pause:
                self.say("rollout", f"pause {rollout.pause:g}s before batch {number}")
                time.sleep(rollout.pause)
            for run in batch:
                run.batch = number
            if len(sizes) > 1:
                self.say("rollout", f"batch {number} of {len(sizes)}: "
                         + ", ".join(r.host.name for r in batch))
            errors = self.fan(batch, lambda run: healthy.__setitem__(
                run.host.name, self.switch_one(run)))
            for exc in errors:
                if exc is not None:  # a signal or a bug: the unwind restores what switched
                    raise Interrupted() if isinstance(exc, Interrupted) else exc
            switched += [r for r in batch if healthy[r.host.name]]
            bad = [r for r in batch if not healthy[r.host.name]]
            if not bad:
                if self.cfg.traffic_gate is not None and number < len(sizes):
                    self.say("rollout", f"batch {number} judged on real traffic ("
                             + verdicts(batch) + f"): batch {number + 1} next")
                continue
            return self._stopped(active, at, number, len(sizes), switched, bad)
        return None

    def _stopped(self, active: list[HostRun], at: int, number: int, batches: int,
                 switched: list[HostRun], bad: list[HostRun]) -> tuple[str, str]:
        """Batch `number` failed on `bad`: restore or leave the hosts switched, name the
        hosts not reached; the attempt's outcome and reason."""
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
            self.fan(switched, lambda r: self.sw.restore(r, r.reason, failed_new=True),
                     stoppable=False)
        for other in active[at:]:
            other.outcome = ABORTED
            other.reason = f"not touched: {why}"
        first = bad[0]
        reason = first.reason
        if len(self.runs) > 1:  # which hosts were judged what, and which not reached
            reason = ("" if len(bad) == 1 else f"{why}; ") + (
                f"{first.host.name} (batch {number} of {batches}): {reason}") + (
                f"; not touched: {', '.join(r.host.name for r in active[at:])}"
                if active[at:] else "")
        if self.cfg.on_failure == "stop" and switched:
            reason += (f"; on_failure is stop: {', '.join(r.host.name for r in switched)} "
                       f"left on {self.target.tag}")
        return first.outcome, reason

    def switch_one(self, run: HostRun) -> bool:
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
        if not ok and run.outcome not in NOT_HEALTHY:
            raise AssertionError(f"switch of {run.host.name} ended without an outcome")
        return ok

    def unwind(self, why: str, outcome: str) -> tuple[str, str]:
        """After a signal or an unexpected error: put the previous version back wherever the
        switch had begun and not finished; return the attempt's outcome and reason."""
        todo = [run for run in self.runs if run.outcome not in (
            SUCCEEDED, UNCHANGED, RECOVERED, *NOT_HEALTHY)]
        for run in todo:  # a host whose switch had not begun says so
            run.reason = run.reason or (why if run.switched or run.new_name
                                        else f"not touched: {why}")
        # Every host whose switch had begun goes back at once; each restore runs to its end.
        self.fan([r for r in todo if r.switched or (self.cfg.proxy is not None
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


def verdicts(runs: list[HostRun]) -> str:
    """Each host's traffic gate verdict, for a progress line: `web-1 passed, web-2 ...`."""
    return ", ".join(f"{r.host.name} {(r.traffic or {}).get('verdict', 'not-judged')}"
                     for r in runs)


__all__ = ["Fan", "Rollout", "verdicts"]
