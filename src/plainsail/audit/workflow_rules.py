"""The workflow rules (all errors). Each reads the model of what every step does
(plainsail.audit.model), not the workflow's raw text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from plainsail.audit.actions import action_name
from plainsail.audit.model import (
    LIVENESS_PATHS,
    Context,
    JobFacts,
    _deployish_name,
    facts,
    uses_secrets,
)
from plainsail.audit.rules import Finding
from plainsail.audit.workflow import Job, Step, Workflow
from plainsail.audit.yamldoc import YMap, get, key_line, scalar_lines

_NEUTRAL_ERRORS = re.compile(r"\|\|\s*(true|:|echo\b|exit\s+0|printf\b)")

# ---------------------------------------------------------------- the rules


def check(wf: Workflow, migrations_exist: bool, gated_elsewhere: bool) -> Iterator[Finding]:
    ctx = Context(wf)
    all_facts = {j.id: facts(j, ctx) for j in wf.jobs}
    yield from _mutable_tag_deploy(all_facts)
    yield from _mutable_tag_push(all_facts, ctx)
    yield from _no_tag_handoff(wf, all_facts)
    yield from _unsigned(wf, all_facts)
    yield from _secrets_without_environment(wf, all_facts)
    yield from _untrusted_trigger(wf)
    yield from _health(wf, all_facts)
    yield from _migrations(wf, all_facts, migrations_exist, gated_elsewhere)
    if migrations_exist:
        yield from _shallow_checkout(wf)
    for job in wf.jobs:
        yield from long_lived_credentials(job, wf)


def step_rules(job: Job, ctx: Context) -> Iterator[Finding]:
    """The rules that judge single steps, for composite actions audited on their own."""
    f = facts(job, ctx)
    yield from _mutable_tag_deploy({job.id: f})
    yield from long_lived_credentials(job, None)


def _mutable_tag_deploy(all_facts: dict[str, JobFacts]) -> Iterator[Finding]:
    for f in all_facts.values():
        if not f.deploys and not f.job.has_environment() and not _deployish_name(f.job):
            continue
        for ref in f.images:
            if ref.status == "mutable":
                yield Finding("mutable-tag-deploy", ref.step.path, ref.line,
                              f"job {f.job.id} deploys {ref.text} by a mutable reference "
                              f"({ref.why}); what runs can change without a deploy")


def _mutable_tag_push(all_facts: dict[str, JobFacts], ctx: Context) -> Iterator[Finding]:
    for f in all_facts.values():
        if not f.pushes:
            continue
        statuses: list[str] = []
        shown: list[str] = []
        for step, _, refs in f.pushes:
            if not refs:
                statuses.append("unknown")
            for r in refs:
                scope = dict(step.commands[0][1]) if step.commands else {}
                status, _ = ctx.classify(r, scope, f.job)
                statuses.append(status)
                shown.append(r)
        if not any(s in ("content", "unknown", "digest") for s in statuses):
            step, line, _ = f.pushes[0]
            yield Finding("mutable-tag-push", step.path, line,
                          f"job {f.job.id} pushes only {', '.join(shown) or 'mutable tags'}; "
                          "no tag names the commit, so no deploy can name this build")


def _handoff_markers(text: str) -> bool:
    return bool(re.search(r"needs\.[A-Za-z0-9_-]+\.outputs|download-artifact|github\.sha|"
                          r"GITHUB_SHA|head_sha|github\.event\.after|inputs\.|"
                          r"github\.event\.client_payload|head_commit\.id", text))


def _no_tag_handoff(wf: Workflow, all_facts: dict[str, JobFacts]) -> Iterator[Finding]:
    builders = {jid for jid, f in all_facts.items() if f.pushes}
    handed = bool(builders) or "workflow_run" in wf.triggers
    for jid, f in all_facts.items():
        # a builder is handed nothing, unless it needs another builder and builds again
        rebuilds = bool(f.starts and f.builds and set(f.job.needs) & builders)
        if (jid in builders and not rebuilds) or not (f.starts or f.images):
            continue
        # with a build in the file, a mutable tag is also not what it handed over; without
        # one, mutable-tag-deploy already says so
        kinds = ("fixed", "mutable") if handed else ("fixed",)
        fixed = [r for r in f.images if r.status in kinds]
        if f.builds and f.starts:
            msg = (f"job {jid} rebuilds the image at deploy time instead of deploying what a "
                   "build pushed and tested")
        elif f.images and len(fixed) == len(f.images):
            msg = (f"job {jid} deploys {fixed[0].text}, a fixed reference, not the tag a "
                   "build produced")
        elif _handoff_markers(f.job.text()):
            continue
        elif f.restarts:
            msg = (f"job {jid} restarts what is running, so it deploys whatever the tag "
                   "points at now, not a build it was handed")
        elif handed:
            msg = (f"job {jid} does not receive the tag or digest from the build job "
                   "(no needs.<job>.outputs, no artifact), so it deploys whatever it "
                   "resolves itself")
        else:
            continue
        yield Finding("no-tag-handoff", wf.path, f.job.line, msg)


def _unsigned(wf: Workflow, all_facts: dict[str, JobFacts]) -> Iterator[Finding]:
    pushes = [(f.job, p) for f in all_facts.values() for p in f.pushes]
    if not pushes or any(f.signs for f in all_facts.values()):
        return
    job, (step, line, _) = pushes[0]
    yield Finding("unsigned-image", step.path, line,
                  f"job {job.id} pushes an image that nothing in this workflow signs or "
                  "attests, so a deploy cannot prove where it came from")


def _secrets_without_environment(wf: Workflow,
                                 all_facts: dict[str, JobFacts]) -> Iterator[Finding]:
    for jid, f in all_facts.items():
        if f.job.uses or f.job.has_environment():
            continue
        # a job named for deploying hands the deploy on (a dispatch, a script); "release"
        # alone names package and binary releases too
        named = re.search(r"deploy|rollout|prod|staging",
                          f"{f.job.id} {get(f.job.data, 'name') or ''}", re.I)
        if not (f.deploys or f.starts or named):
            continue
        if uses_secrets(f.job):
            yield Finding("secrets-without-environment", wf.path, f.job.line,
                          f"job {jid} deploys with secrets but declares no environment, so "
                          "no protection rule (reviewers, branches) guards those secrets")


_UNTRUSTED_CHECKOUT = re.compile(
    r"pull_request\.head\.(sha|ref)|github\.head_ref|refs/pull/|github\.event\.number|"
    r"pull_request\.number|workflow_run\.head_sha|workflow_run\.head_branch|"
    r"workflow_run\.head_commit")
_GUARD = re.compile(
    r"head\.repo\.full_name\s*==|head_repository\.full_name\s*==|"
    r"workflow_run\.event\s*==\s*'push'|workflow_run\.event\s*!=\s*'pull_request'|"
    r"head\.repo\.fork\s*==\s*false|head_repository\.fork\s*==\s*false")


_REF_SOURCES = re.compile(r"needs\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)|"
                          r"env\.([A-Za-z_][A-Za-z0-9_]*)|"
                          r"steps\.([A-Za-z0-9_-]+)\.outputs\.[A-Za-z0-9_-]+")


def _expand(wf: Workflow, job: Job, text: str, depth: int = 0) -> str:
    """`text` with the values its expressions come from appended: job outputs of the jobs
    it needs, env values (workflow, job, step), and the steps whose outputs it names."""
    if depth > 4:
        return text
    extra: list[str] = []
    for m in _REF_SOURCES.finditer(text):
        if m.group(1):
            source = wf.job(m.group(1))
            value = get(get(source.data, "outputs"), m.group(2)) if source else None
            if source is not None and value is not None:
                extra.append(_expand(wf, source, str(value), depth + 1))
        elif m.group(3):
            for scope in [get(wf.data, "env"), get(job.data, "env"),
                          *(get(s.data, "env") for s in job.steps)]:
                value = get(scope, m.group(3))
                if value is not None:
                    extra.append(_expand(wf, job, str(value), depth + 1))
        elif m.group(4):
            step = next((s for s in job.steps if s.id == m.group(4)), None)
            if step is not None:
                extra.append(step.text())
    return " ".join([text, *extra])


def _writable_token(wf: Workflow, job: Job) -> bool:
    """Whether the job's GITHUB_TOKEN may write: no `permissions:` narrows it (the job's
    own block wins over the workflow's), or one grants write."""
    perms = get(job.data, "permissions")
    if perms is None:
        perms = get(wf.data, "permissions")
    if perms is None:
        return True  # the repository's default, which the workflow does not narrow
    if isinstance(perms, dict):
        return any(str(v).strip() == "write" for v in perms.values())
    return str(perms).strip() == "write-all"


def _untrusted_trigger(wf: Workflow) -> Iterator[Finding]:
    triggers = {t for t in wf.triggers if t in ("pull_request_target", "workflow_run")}
    if not triggers:
        return
    for job in wf.jobs:
        if not uses_secrets(job) and not (
                "pull_request_target" in triggers and _writable_token(wf, job)):
            continue
        guard = f"{get(job.data, 'if') or ''}"
        if _GUARD.search(guard):
            continue
        for step in job.steps:
            untrusted = False
            if step.action.startswith("actions/checkout"):
                ref = _expand(wf, job, f"{get(step.with_, 'ref') or ''} "
                                       f"{get(step.with_, 'repository') or ''}")
                untrusted = bool(_UNTRUSTED_CHECKOUT.search(ref))
                if "workflow_run" in triggers and not ref.strip():
                    untrusted = False  # the default branch: trusted
            elif "download-artifact" in step.action:
                untrusted = "workflow_run" in triggers and (
                    "run-id" in step.with_ or "run_id" in step.with_
                    or "dawidd6" in step.action)
            elif step.commands and "gh pr checkout" in step.text():
                untrusted = True
            if untrusted and not _GUARD.search(str(get(step.data, "if") or "")):
                trig = "/".join(sorted(triggers))
                yield Finding("untrusted-trigger-with-secrets", step.path, step.line,
                              f"job {job.id} runs on {trig}, fetches code or artifacts "
                              "from the triggering pull request here, and holds secrets")
                break


def _health(wf: Workflow, all_facts: dict[str, JobFacts]) -> Iterator[Finding]:
    for jid, f in all_facts.items():
        if not f.starts:
            continue
        first_start = min(o for _, _, o in f.starts)
        gates = [g for g in f.gates if g.order >= first_start]
        for dep in wf.dependents(f.job):
            gates += all_facts[dep.id].gates
        step, line, _ = max(f.starts, key=lambda s: s[2])
        if not gates:
            yield Finding("no-health-gate", step.path, line,
                          f"job {jid} starts the new version and ends without checking that "
                          "it is healthy; a broken release stays up and the job is green")
            continue
        strong = [g for g in gates if not g.http or g.body_checked
                  or g.path.lower() not in LIVENESS_PATHS]
        if not strong:
            g = gates[0]
            yield Finding("liveness-only-health-check", g.step.path, g.line,
                          f"job {jid} only checks {g.path or '/'}, a liveness endpoint that "
                          "answers while the database or other dependencies are down")


def _migrations(wf: Workflow, all_facts: dict[str, JobFacts], exist: bool,
                gated_elsewhere: bool) -> Iterator[Finding]:
    for jid, f in all_facts.items():
        if not f.starts:
            continue
        if any(c.name == "plainsail" and c.argv[1:2] in (["deploy"], ["rollback"], ["recover"])
               for s in f.job.steps for c, _ in s.commands):
            # plainsail deploy runs migrate.command before the switch; rollback and recover
            # put back a version the schema already serves (migrations are forward-only)
            continue
        if not f.migrations:
            if exist and not gated_elsewhere:
                step, line, _ = min(f.starts, key=lambda s: s[2])
                yield Finding("migrations-not-gated", step.path, line,
                              f"job {jid} deploys, but nothing runs the repository's "
                              "migrations before the new version starts")
            continue
        first_start = min(o for _, _, o in f.starts)
        for step, cmd, order in f.migrations:
            problem = ""
            if order > first_start and not any(
                    o > order for _, _, o in f.starts):
                problem = "runs migrations only after the new version started"
            elif step.continue_on_error():
                problem = "marks the migration step continue-on-error"
            elif cmd.after == "||" or _NEUTRAL_ERRORS.search(_line_text(step, cmd.line)):
                problem = "ignores the migration's failure (|| ...)"
            elif not step.errexit and any(o > order for _, _, o in f.starts):
                problem = ("runs migrations in a script without `set -e`, so the new version "
                           "starts even when they fail")
            elif cmd.after == ";" and cmd.remote:
                problem = "separates the migration from the next command with ';'"
            if problem:
                yield Finding("migrations-not-gated", step.path, cmd.line,
                              f"job {jid} {problem}")
                break


def _shallow_checkout(wf: Workflow) -> Iterator[Finding]:
    """plainsail's schema gate reads the migrations of the running version's commit from
    git; actions/checkout fetches one commit unless `fetch-depth: 0`."""
    for job in wf.jobs:
        gated = [c for s in job.steps for c, _ in s.commands
                 if c.name == "plainsail" and c.argv[1:2] in (["deploy"], ["rollback"])]
        if not gated:
            continue
        for step in job.steps:
            if step.action != "actions/checkout":
                continue
            depth = str(get(step.with_, "fetch-depth") or "1").strip()
            if depth != "0" and "${{" not in depth:
                line = step.with_.key_lines.get("fetch-depth", step.line) \
                    if "fetch-depth" in step.with_ else step.line
                yield Finding("shallow-checkout-deploy", step.path, line,
                              f"job {job.id} runs plainsail {gated[0].argv[1]} from a "
                              f"checkout of depth {depth}: the schema gate cannot find the "
                              "running version's commit and the deploy stops in CI")


def _line_text(step: Step, line: int) -> str:
    for key in ("run", "with"):
        value = get(step.data, key)
        if isinstance(value, YMap):
            for v in value.values():
                for n, t in scalar_lines(v):
                    if n == line:
                        return t
        for n, t in scalar_lines(value):
            if n == line:
                return t
    return ""


_STATIC_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS_JSON",
               "GOOGLE_CREDENTIALS", "GCP_SA_KEY", "AZURE_CLIENT_SECRET", "ARM_CLIENT_SECRET")


def long_lived_credentials(job: Job, wf: Workflow | None) -> Iterator[Finding]:
    seen: set[int] = set()

    def env_findings(env: object, path: str) -> Iterator[Finding]:
        if isinstance(env, YMap):
            for key, value in env.items():
                if key in _STATIC_ENV and "secrets." in str(value):
                    line = key_line(env, key)
                    if line not in seen:
                        seen.add(line)
                        yield Finding("long-lived-cloud-credentials", path, line,
                                      f"{key} comes from a stored secret: a static cloud key")

    if wf is not None and job is wf.jobs[0]:
        yield from env_findings(get(wf.data, "env"), wf.path)
    yield from env_findings(get(job.data, "env"), wf.path if wf else "")
    for step in job.steps:
        yield from env_findings(get(step.data, "env"), step.path)
        a = step.action
        keys: tuple[str, ...] = ()
        if a.startswith("aws-actions/configure-aws-credentials"):
            keys = ("aws-access-key-id", "aws-secret-access-key")
        elif a.startswith("google-github-actions/auth") or "setup-gcloud" in a:
            keys = ("credentials_json", "service_account_key")
        elif a.startswith("azure/login"):
            keys = ("creds",)
        for k in keys:
            if k in step.with_:
                yield Finding("long-lived-cloud-credentials", step.path,
                              key_line(step.with_, k),
                              f"{action_name(step.uses)} gets `{k}`: a long-lived key that "
                              "works from anywhere until someone rotates it")
                break
        for cmd, _ in step.commands:
            t = cmd.text()
            if ("activate-service-account" in t and "--key-file" in t) or (
                    cmd.name == "az" and "login" in cmd.argv and "--service-principal" in t
                    and "--federated-token" not in t) or (
                    cmd.name == "aws" and "configure" in cmd.argv
                    and "aws_secret_access_key" in t):
                yield Finding("long-lived-cloud-credentials", step.path, cmd.line,
                              f"`{cmd.name} {' '.join(cmd.argv[1:3])}` logs in with a "
                              "static key")


def migrations_gated_in_manifests(root: Path) -> bool:
    """Kubernetes manifests or Helm charts that run migrations before the app (a Job hook
    or an init container)."""
    skip = {".git", "node_modules", ".venv", "venv", "vendor", ".github"}
    count = 0
    for p in root.rglob("*.y*ml"):
        if skip & set(p.parts) or count > 400:
            continue
        count += 1
        try:
            with p.open("rb") as f:  # the start of each file only, however large
                t = f.read(200_000).decode("utf-8", errors="replace")
        except OSError:
            continue
        if re.search(r"migrat", t, re.I) and re.search(
                r"initContainers|helm\.sh/hook|argocd\.argoproj\.io/hook", t):
            return True
    return False
