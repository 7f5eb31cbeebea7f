"""One loop runs the plan: a host's steps, walked in the plan's order, each by its name.

A host's plan (`plainsail.deploy.plan.host_plan`, what `--dry-run` shows) is a list of
steps, each with an argv or a named action, a timeout and its undo. `HostRunner.walk` runs
the steps of one phase (`plan.PHASES`: lock, prepare, migrate, switch, prune, finish) on
one host, in order, through the action registered for each step's name, and returns
whether the host got through them all; when it did not, the action that stopped it has
set the host's outcome (`HostRun.outcome`, `HostRun.reason`). The deploy (`Deploy`) only
decides which hosts walk which phase, and when: every phase on every host at once, the
switch in batches, migrations on one host before any switch.

A step whose name has no action raises `UnknownStep`, before any step of the plan runs
(`check`) and again if one is reached; a phase is never walked backwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from plainsail.deploy.plan import PHASES, HostPlan, PlannedStep

if TYPE_CHECKING:
    from plainsail.deploy.switch import HostRun

# An action runs one step on one host; it returns False when the host must not go on
# (its outcome is set), anything else when it may. Errors are raised as they are.
Action = Callable[["HostRun", PlannedStep], object]


class UnknownStep(LookupError):
    """A plan names a step that no action runs: a bug in plainsail, never a user's error."""


class HostRunner:
    """Walks hosts' plans with one table of actions (step name -> action)."""

    def __init__(self, actions: Mapping[str, Action],
                 on_step: Callable[[HostRun, PlannedStep], None] = lambda run, step: None
                 ) -> None:
        self.actions = dict(actions)
        self.on_step = on_step  # told before each step runs (a live view shows it)

    def check(self, plan: HostPlan) -> None:
        """Raise UnknownStep for a step no action runs, or a plan whose phases are out of
        order; called on every host's plan before anything changes."""
        last = 0
        for step in plan.steps:
            if step.name not in self.actions or step.phase not in PHASES:
                raise UnknownStep(f"{plan.host}: the plan's step {step.name!r} has no action")
            at = PHASES.index(step.phase)
            if at < last:
                raise UnknownStep(f"{plan.host}: the plan's step {step.name!r} ({step.phase}) "
                                  f"comes after a step of the {PHASES[last]} phase")
            last = at

    def walk(self, run: HostRun, phase: str) -> bool:
        """Run the steps of `phase` of the host's plan, in order, from where the host is.
        False when an action stopped the host (the rest of the phase is not run)."""
        if phase not in PHASES:
            raise UnknownStep(f"no phase {phase!r}")
        self.check(run.plan)  # a plan with a step no action runs is not walked at all
        steps = run.plan.steps
        for at, step in enumerate(steps):
            if step.phase != phase:
                continue
            if at < run.cursor:
                raise AssertionError(f"{run.host.name}: step {step.name} walked twice")
            action = self.actions.get(step.name)
            if action is None:
                raise UnknownStep(f"{run.host.name}: the plan's step {step.name!r} has no "
                                  "action")
            run.cursor = at + 1
            run.walked.append(step.name)
            self.on_step(run, step)
            if action(run, step) is False:
                return False
        return True
