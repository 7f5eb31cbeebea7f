"""A GitHub Actions workflow as the rules see it: jobs, their steps (local composite
actions inlined), each step's shell commands with line numbers, and the variables in scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plainsail.audit import actions, yamldoc
from plainsail.audit.actions import action_name
from plainsail.audit.shell import Command, assignment, commands_of
from plainsail.audit.yamldoc import YMap, get, line_of, scalar_lines, text_of

_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)


@dataclass
class Step:
    path: str
    line: int
    index: int
    data: YMap
    uses: str = ""
    id: str = ""
    commands: list[tuple[Command, dict[str, str]]] = field(default_factory=list)
    scripted: bool = False  # commands come from an ssh action's script (no errexit)
    errexit: bool = True

    @property
    def with_(self) -> YMap:
        w = get(self.data, "with")
        return w if isinstance(w, YMap) else YMap()

    @property
    def action(self) -> str:
        return action_name(self.uses) if self.uses else ""

    def continue_on_error(self) -> bool:
        return str(get(self.data, "continue-on-error") or "").lower() == "true"

    def text(self) -> str:
        return text_of(self.data)


@dataclass
class Job:
    id: str
    line: int
    data: YMap
    steps: list[Step] = field(default_factory=list)
    callee: Workflow | None = None  # the local reusable workflow it calls (uses: ./...)

    @property
    def uses(self) -> str:
        u = get(self.data, "uses")
        return str(u) if u else ""

    @property
    def needs(self) -> list[str]:
        n = get(self.data, "needs")
        if isinstance(n, list):
            return [str(x) for x in n]
        return [str(n)] if n else []

    def text(self) -> str:
        return text_of(self.data) + "\n" + "\n".join(s.text() for s in self.steps)

    def has_environment(self) -> bool:
        env = get(self.data, "environment")
        return env is not None and not getattr(env, "is_null", False)


@dataclass
class Workflow:
    path: str
    data: YMap
    jobs: list[Job]
    root: Path | None
    text: str

    @property
    def triggers(self) -> dict[str, Any]:
        on = get(self.data, "on")
        if isinstance(on, dict):
            return dict(on)
        if isinstance(on, list):
            return {str(t): None for t in on}
        return {str(on): None} if on else {}

    def branch_triggered(self) -> bool:
        """Whether github.ref_name can be a branch name in this workflow."""
        for name, spec in self.triggers.items():
            if name == "push" and isinstance(spec, dict) and "tags" in spec \
                    and "branches" not in spec:
                continue
            if name in ("release", "workflow_call"):
                continue
            return True
        return False

    def job(self, job_id: str) -> Job | None:
        return next((j for j in self.jobs if j.id == job_id), None)

    def dependents(self, job: Job) -> list[Job]:
        """Jobs that need `job`, directly or not."""
        out: list[Job] = []
        frontier = {job.id}
        changed = True
        while changed:
            changed = False
            for j in self.jobs:
                if j not in out and frontier & set(j.needs):
                    out.append(j)
                    frontier.add(j.id)
                    changed = True
        return out


def _literal_env(mapping: Any) -> dict[str, str]:
    if not isinstance(mapping, dict):
        return {}
    return {str(k): str(v) for k, v in mapping.items() if v is not None}


def _step_commands(step: Step, scope: dict[str, str]) -> None:
    lines: list[tuple[int, str]] = []
    run = get(step.data, "run")
    if run is not None:
        lines = scalar_lines(run)
        shell = str(get(step.data, "shell") or "bash")
        step.errexit = not shell.startswith(("sh", "pwsh", "powershell", "cmd", "python"))
    elif step.uses:
        spec = actions.spec_of(step.uses)
        if spec is not None and spec.scripts:
            for key in spec.scripts:
                lines += scalar_lines(get(step.with_, key))
            step.scripted = bool(lines) or spec.kind == actions.SSH
            step.errexit = bool(spec.errexit_input) and str(
                get(step.with_, spec.errexit_input) or "").lower() == "true"
        elif spec is not None and spec.kind == actions.TOOL:
            for key in ("args", "command", "cmd"):
                value = get(step.with_, key)
                if value is not None:
                    lines = [(n, f"{spec.tool} {t}") for n, t in scalar_lines(value)]
                    break
    cmds = commands_of(lines)
    for cmd in cmds:
        if cmd.name == "set" and not cmd.remote:
            flags = "".join(a for a in cmd.argv[1:] if a.startswith(("-", "+")))
            if re.search(r"\+[a-z]*e", flags) or "+o errexit" in cmd.text():
                step.errexit = False
            elif re.search(r"-[a-z]*e", flags) or "-o errexit" in cmd.text():
                step.errexit = True
        elif cmd.name == "set" and step.scripted and re.search(r"-[a-z]*e", cmd.text()):
            step.errexit = True
    current = dict(scope)
    for cmd in cmds:
        current.update(assignment(cmd))
        step.commands.append((cmd, dict(current)))


def _composite_steps(uses: str, root: Path | None, depth: int) -> tuple[str, Any] | None:
    if root is None or not uses.startswith("./") or depth > 3:
        return None
    base = (root / uses[2:]).resolve()
    for name in ("action.yml", "action.yaml"):
        f = base / name
        if f.is_file():
            try:
                data = yamldoc.load(yamldoc.read(f))
            except (OSError, UnicodeDecodeError, yamldoc.YamlError):
                return None
            runs = get(data, "runs")
            if str(get(runs, "using") or "") == "composite":
                try:
                    rel = f.relative_to(root.resolve()).as_posix()
                except ValueError:
                    rel = f.as_posix()
                return rel, get(runs, "steps")
    return None


def _steps(raw: Any, path: str, scope: dict[str, str], root: Path | None,
           depth: int = 0) -> list[Step]:
    out: list[Step] = []
    if not isinstance(raw, list):
        return out
    for item in raw:
        if not isinstance(item, YMap):
            continue
        step = Step(path, line_of(item), len(out), item, str(get(item, "uses") or ""),
                    str(get(item, "id") or ""))
        _step_commands(step, {**scope, **_literal_env(get(item, "env"))})
        out.append(step)
        inlined = _composite_steps(step.uses, root, depth)
        if inlined:
            inner = _steps(inlined[1], inlined[0], scope, root, depth + 1)
            for s in inner:
                s.index = len(out)
                out.append(s)
    return out


def _callee(uses: str, root: Path | None, depth: int) -> Workflow | None:
    """The local reusable workflow a job calls (`uses: ./.github/workflows/x.yml`)."""
    if root is None or not uses.startswith("./") or depth > 3:
        return None
    f = (root / uses[2:].split("@", 1)[0]).resolve()
    try:
        rel = f.relative_to(root.resolve()).as_posix()
        return parse(rel, yamldoc.read(f), root, depth + 1)
    except (OSError, UnicodeDecodeError, ValueError, yamldoc.YamlError):
        return None


def parse(path: str, text: str, root: Path | None, depth: int = 0) -> Workflow | None:
    """A workflow, or None when the file is not one (no `jobs`)."""
    data = yamldoc.load(text)
    if not isinstance(data, YMap) or not isinstance(get(data, "jobs"), YMap):
        return None
    wf_env = _literal_env(get(data, "env"))
    jobs: list[Job] = []
    for job_id, job_data in data["jobs"].items():
        if not isinstance(job_data, YMap):
            continue
        scope = {**wf_env, **_literal_env(get(job_data, "env"))}
        job = Job(job_id, data["jobs"].key_lines.get(job_id, job_data.line), job_data)
        job.steps = _steps(get(job_data, "steps"), path, scope, root)
        job.callee = _callee(job.uses, root, depth)
        jobs.append(job)
    return Workflow(path, data, jobs, root, text)


def composite(path: str, text: str, root: Path | None) -> Job | None:
    """A composite action's steps as one pseudo-job (for the rules about single steps)."""
    data = yamldoc.load(text)
    runs = get(data, "runs")
    if str(get(runs, "using") or "") != "composite":
        return None
    job = Job("(composite action)", line_of(runs), YMap())
    job.steps = _steps(get(runs, "steps"), path, {}, root)
    return job


def expressions(text: str) -> list[str]:
    return [m.group(1) for m in _EXPR.finditer(text)]
