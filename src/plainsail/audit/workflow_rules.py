"""The workflow rules (all errors): what an image reference, a push, a deploy, a gate and
a migration look like in real workflows, and the checks built on them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from plainsail.audit.rules import Finding
from plainsail.audit.shell import Command, option_values, positional
from plainsail.audit.workflow import Job, Step, Workflow, action_name
from plainsail.audit.yamldoc import YMap, get, key_line, scalar_lines, text_of

MUTABLE_TAGS = {
    "latest", "main", "master", "develop", "development", "dev", "staging", "stage", "prod",
    "production", "stable", "edge", "nightly", "trunk", "release", "test", "qa", "current",
    "live", "beta", "canary", "next", "preview", "unstable",
}
_BRANCH_REFS = ("github.ref_name", "GITHUB_REF_NAME", "github.head_ref", "GITHUB_HEAD_REF",
                "github.base_ref", "GITHUB_BASE_REF", "default_branch", "github.ref }}",
                "GITHUB_REF}", "$GITHUB_REF\"", "branch")
_CONTENT = re.compile(
    r"github\.sha|GITHUB_SHA|rev-parse|git\s+describe|head_commit\.id|head\.sha|head_sha|"
    r"github\.event\.after|digest|[A-Za-z_]*(?:SHA|sha|COMMIT|commit|REVISION|revision)"
    r"[A-Za-z_0-9]*|type=sha|type=semver|event=tag"
)
_REPO_NAME = re.compile(r"github\.repository|GITHUB_REPOSITORY|repository\.name|"
                        r"repository_owner|IMAGE_NAME|IMAGE|APP_NAME|REPO", re.I)
_VAR = re.compile(r"\$\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\$\{([A-Za-z_][A-Za-z0-9_]*)\}"
                  r"|\$([A-Za-z_][A-Za-z0-9_]*)")
_HEX = re.compile(r"[0-9a-f]{7,40}")

DOCKER_LIKE = {"docker", "podman", "nerdctl"}
_RUN_FLAGS = {"-d", "-i", "-t", "-P", "-q", "--rm", "--detach", "--init", "--privileged",
              "--read-only", "--tty", "--interactive", "--publish-all", "--no-healthcheck",
              "--oom-kill-disable", "--disable-content-trust", "--quiet", "--help", "--sig-proxy",
              "--with-registry-auth", "--force", "--no-resolve-image"}
SIGN_ACTIONS = ("sigstore/cosign-installer", "actions/attest-build-provenance", "actions/attest",
                "actions/attest-sbom", "notaryproject/notation-action",
                "slsa-framework/slsa-github-generator")
_SIGN_CMD = re.compile(r"\b(cosign\s+(sign|attest)|notation\s+sign|plainsail\s+sign|"
                       r"docker\s+trust\s+sign|DOCKER_CONTENT_TRUST=1|gh\s+attestation\s+sign)")
DEPLOY_ACTIONS = {
    "aws-actions/amazon-ecs-deploy-task-definition": "image",
    "google-github-actions/deploy-cloudrun": "image",
    "azure/webapps-deploy": "images",
    "azure/container-apps-deploy-action": "imagetodeploy",
    "azure/k8s-deploy": "images",
    "deliverybot/helm": "",
    "superfly/flyctl-actions": "",
    "easingthemes/ssh-deploy": "",
    "appleboy/scp-action": "",
    "burnett01/rsync-deployments": "",
}
IMAGE_INPUT_ACTIONS = ("aws-actions/amazon-ecs-render-task-definition",
                       "google-github-actions/deploy-cloudrun", "azure/webapps-deploy",
                       "azure/container-apps-deploy-action", "azure/k8s-deploy")
LIVENESS_PATHS = {"", "/", "/ping", "/healthz", "/livez", "/alive", "/liveness", "/live",
                  "/health/live", "/health/liveness", "/heartbeat", "/_ping", "/api/ping"}
_MIGRATE = re.compile(
    r"\bmigrat|alembic\s+upgrade|db:migrate|prisma\s+migrate|flyway|liquibase|"
    r"knex\s+migrate|goose\s+.*\bup\b|dbmate\s+up|sqlx\s+migrate|atlas\s+migrate|"
    r"ecto\.migrate|diesel\s+migration|db-migrate|typeorm\s+migration:run|rake\s+db:", re.I)
_NEUTRAL_ERRORS = re.compile(r"\|\|\s*(true|:|echo\b|exit\s+0|printf\b)")


# ---------------------------------------------------------------- small classifiers


def resolve(text: str, scope: dict[str, str], depth: int = 0) -> str:
    if depth > 4:
        return text

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in scope and scope[name] != m.group(0):
            return resolve(scope[name], scope, depth + 1)
        return m.group(0)

    return _VAR.sub(sub, text)


@dataclass
class ImageRef:
    step: Step
    line: int
    text: str  # as written
    status: str  # digest, content, mutable, fixed, unknown
    why: str = ""


def _hide_exprs(text: str) -> tuple[str, list[str]]:
    found: list[str] = []

    def keep(m: re.Match[str]) -> str:
        found.append(m.group(0))
        return f"\x00{len(found) - 1}\x00"

    return re.sub(r"\$\{\{.*?\}\}|\$\([^)]*\)|\$\{[^}]*\}", keep, text), found


def _show(text: str, found: list[str]) -> str:
    for i, value in enumerate(found):
        text = text.replace(f"\x00{i}\x00", value)
    return text


class Context:
    """Follows step and job outputs to where a tag comes from."""

    def __init__(self, wf: Workflow) -> None:
        self.wf = wf

    def expr_status(self, expr: str, job: Job | None, depth: int = 0) -> str:
        """content, mutable or unknown for the text of one value."""
        if depth > 5:
            return "unknown"
        for m in re.finditer(r"steps\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)", expr):
            if job is not None:
                step = next((s for s in job.steps if s.id == m.group(1)), None)
                if step is not None:
                    return self.step_output_status(step, job, depth)
        for m in re.finditer(r"needs\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)", expr):
            source = self.wf.job(m.group(1))
            outputs = get(source.data, "outputs") if source else None
            value = get(outputs, m.group(2))
            if value is not None:
                return self.expr_status(str(value), source, depth + 1)
            return "unknown"
        if _CONTENT.search(expr):
            return "content"
        if any(b in expr for b in _BRANCH_REFS[:7]) or "github.ref" in expr:
            return "mutable" if self.wf.branch_triggered() else "unknown"
        return "unknown"

    def step_output_status(self, step: Step, job: Job, depth: int) -> str:
        if step.action.startswith("docker/metadata-action"):
            tags = str(get(step.with_, "tags") or "")
            if not tags.strip():
                return "mutable"  # the defaults: branch, tag and pull request names
            return "content" if _CONTENT.search(tags) else "mutable"
        text = step.text()
        if _CONTENT.search(text):
            return "content"
        return "unknown"

    def classify(self, text: str, scope: dict[str, str], job: Job | None,
                 tag_only: bool = False) -> tuple[str, str]:
        """(status, why) for an image reference (or just a tag)."""
        resolved = resolve(text.strip().strip("'\""), scope)
        hidden, found = _hide_exprs(resolved)
        if re.fullmatch(r"\x00\d+\x00|\$[A-Za-z_][A-Za-z0-9_]*", hidden.strip()):
            status = self.expr_status(resolved, job)  # the whole reference is one value
            return status, (f"{resolved} is a branch name" if status == "mutable" else "")
        if tag_only:
            tag = hidden
        else:
            if "@" in hidden:
                return "digest", ""
            last = hidden.rsplit("/", 1)[-1]
            if ":" not in last:
                unresolved = [found[int(i)] for i in re.findall(r"\x00(\d+)\x00", last)]
                if "$" in last.replace("\x00", "") or any(
                        not _REPO_NAME.search(u) for u in unresolved):
                    return "unknown", ""
                return "mutable", "no tag (so :latest)"
            tag = last.split(":", 1)[1]
        shown = _show(tag, found)
        if "\x00" in tag or "$" in tag:
            status = self.expr_status(shown, job)
            return status, (f"tag {shown} is a branch name" if status == "mutable" else "")
        if tag.lower() in MUTABLE_TAGS:
            return "mutable", f"tag {tag!r}"
        if _HEX.fullmatch(tag):
            return "content", ""
        return "fixed", f"fixed tag {tag!r}"


# ---------------------------------------------------------------- command classifiers


def _docker_sub(cmd: Command) -> tuple[str, list[str]]:
    """('run', args) for `docker run`, ('compose up', args) for compose, ..."""
    argv = cmd.argv
    if not argv:
        return "", []
    name = cmd.name
    if name == "docker-compose":
        return ("compose " + argv[1], argv[2:]) if len(argv) > 1 else ("compose", [])
    if name not in DOCKER_LIKE or len(argv) < 2:
        return "", []
    args = argv[1:]
    while args and args[0].startswith("-"):  # global options such as -H, --context
        args = args[2:] if args[0] in ("-H", "--host", "--context", "-c", "--config") \
            else args[1:]
    if not args:
        return "", []
    if args[0] in ("compose", "buildx", "image", "container", "service", "stack", "trust"):
        rest = [a for a in args[1:] if not a.startswith("-")]
        if args[0] == "compose":
            rest = positional(args[1:], {"--compatibility", "--dry-run"})
        sub = f"{args[0]} {rest[0]}" if rest else args[0]
        sub = sub.replace("container ", "").replace("image ", "")
        idx = args.index(rest[0]) + 1 if rest else len(args)
        return sub, args[idx:]
    return args[0], args[1:]


_KUBE_FLAGS = {"--wait", "--atomic", "--install", "-i", "--force", "--dry-run", "--debug",
               "--all", "--recursive", "-R", "--overwrite", "--record"}


def verbs(cmd: Command) -> list[str]:
    """The first words of a kubectl/helm/az/gcloud command line, global options skipped."""
    return positional(cmd.argv[1:], _KUBE_FLAGS)


def image_uses(cmd: Command) -> list[tuple[str, bool]]:
    """Image references a deploy command starts or pulls: (text, is_tag_only)."""
    sub, args = _docker_sub(cmd)
    if sub in ("pull",):
        pos = positional(args, _RUN_FLAGS | {"-a", "--all-tags"})
        return [(pos[0], False)] if pos else []
    if sub in ("run", "create", "service create"):
        pos = positional(args, _RUN_FLAGS)
        return [(pos[0], False)] if pos else []
    if sub == "service update":
        return [(v, False) for v in option_values(args, ("--image",))]
    name = cmd.name
    argv = cmd.argv
    if name in ("kubectl", "oc") and verbs(cmd)[:2] == ["set", "image"]:
        return [(a.split("=", 1)[1], False) for a in verbs(cmd)[3:]
                if "=" in a and not a.startswith("-")]
    if name in ("kubectl", "oc") and verbs(cmd)[:1] in (["run"], ["create"]):
        return [(v, False) for v in option_values(argv, ("--image",))]
    if name in ("helm",) and verbs(cmd)[:1] in (["upgrade"], ["install"]):
        out: list[tuple[str, bool]] = []
        for v in option_values(argv, ("--set", "--set-string")):
            for part in v.split(","):
                key, _, value = part.partition("=")
                if key.endswith(".tag") or key == "tag":
                    out.append((value, True))
                elif key.endswith("image") and value:
                    out.append((value, False))
        return out
    if name == "gcloud" and "deploy" in argv:
        return [(v, False) for v in option_values(argv, ("--image", "--image-url"))]
    if name == "az":
        return [(v, False) for v in option_values(
            argv, ("--image", "--docker-custom-image-name", "--container-image-name"))]
    if name in ("flyctl", "fly") and "deploy" in argv:
        return [(v, False) for v in option_values(argv, ("--image", "-i"))]
    if name == "kustomize" and "image" in argv:
        return [(a.split("=", 1)[1], False) for a in argv if "=" in a and not a.startswith("-")]
    return []


def pushed_refs(cmd: Command) -> list[str] | None:
    """The references a command pushes ([] when it pushes tags we cannot see), or None."""
    sub, args = _docker_sub(cmd)
    if sub == "push":
        if "-a" in args or "--all-tags" in args:
            return []
        return positional(args, {"-q", "--quiet", "--disable-content-trust"})[:1]
    if sub in ("build", "buildx build") and ("--push" in args or "type=registry" in " ".join(
            args) or "push=true" in " ".join(args)):
        return option_values(args, ("-t", "--tag"))
    if sub in ("buildx bake",) and "--push" in args:
        return []
    if sub == "compose push":
        return []
    name, argv = cmd.name, cmd.argv
    if name in ("podman", "buildah") and len(argv) > 1 and argv[1] == "push":
        return argv[2:3]
    if name == "plainsail" and "build" in argv[1:2]:
        return ["$(git rev-parse HEAD)"]  # tags with the commit SHA, always
    if name == "gcloud" and "builds" in argv and "submit" in argv:
        return option_values(argv, ("--tag", "-t"))
    if name == "ko" and len(argv) > 1 and argv[1] in ("build", "publish", "apply", "resolve"):
        return ["@digest"]
    if name in ("pack",) and "--publish" in argv:
        return positional(argv[2:], {"--publish", "--trust-builder", "--clear-cache"})[:1]
    if name in ("executor", "/kaniko/executor"):
        return option_values(argv, ("--destination", "-d"))
    return None


def action_pushes(step: Step) -> list[str] | None:
    a = step.action
    if a.startswith(("docker/build-push-action", "redhat-actions/push-to-registry",
                     "mr-smithers-excellent/docker-build-push")):
        push = str(get(step.with_, "push") or "").strip().lower()
        outputs = str(get(step.with_, "outputs") or "")
        if a.startswith("docker/build-push-action") and push in ("", "false") \
                and "type=registry" not in outputs and "push=true" not in outputs:
            return None
        tags = str(get(step.with_, "tags") or "")
        refs = [t.strip() for t in re.split(r"[\n,]", tags) if t.strip()]
        if a.startswith("redhat-actions/push-to-registry"):
            image = str(get(step.with_, "image") or "")
            refs = [f"{image}:{t}" for t in (str(get(step.with_, "tags") or "latest")).split()]
        return refs
    return None


def is_build(cmd: Command, step: Step) -> bool:
    sub, args = _docker_sub(cmd)
    if sub in ("compose up", "stack deploy") and "--build" in args:
        return True
    return sub in ("build", "buildx build", "buildx bake", "compose build") or (
        cmd.name == "plainsail" and cmd.argv[1:2] == ["build"])


_START_SUBS = {"run", "create", "start", "service update", "service create", "stack deploy",
               "compose up", "compose restart", "compose start"}


def is_start(cmd: Command) -> bool:
    """A command that starts (a new version of) the app."""
    sub, args = _docker_sub(cmd)
    if sub in _START_SUBS:
        return not (sub == "run" and "--rm" in args)
    name, argv = cmd.name, cmd.argv
    words = verbs(cmd)
    first = set(words[:1])
    if name in ("kubectl", "oc") and first & {"apply", "create", "replace", "set", "rollout",
                                              "patch", "run"}:
        return words[:2] not in (["rollout", "status"], ["rollout", "history"])
    if name in ("helm", "helmfile") and first & {"upgrade", "install", "apply", "sync"}:
        return True
    verbs_ = set(argv[1:3])
    if name == "plainsail" and verbs_ & {"deploy", "rollback"}:
        return True
    if name in ("kamal", "flyctl", "fly", "nomad") and verbs_ & {"deploy", "run"}:
        return True
    if name == "gcloud" and "deploy" in argv:
        return True
    if name == "az" and ("containerapp" in argv or "webapp" in argv) and \
            verbs_ & {"containerapp", "webapp"} and ({"update", "up", "set", "create"}
                                                    & set(argv)):
        return True
    if name == "aws" and "ecs" in argv and "update-service" in argv:
        return True
    if name in ("ecs-deploy", "argocd", "skaffold", "docker-compose-deploy") and (
            name != "argocd" or "sync" in argv):
        return True
    if name == "systemctl" and verbs_ & {"restart", "start", "reload"}:
        return True
    if name in ("pm2",) and verbs_ & {"restart", "reload", "start"}:
        return True
    return False


def is_ssh(cmd: Command) -> bool:
    return cmd.name in ("ssh", "scp", "rsync", "sshpass")


def is_migrate(cmd: Command) -> bool:
    text = cmd.text()
    return bool(_MIGRATE.search(text)) and not text.startswith(("echo", "printf", "ls",
                                                                 "cat", "mkdir", "cp"))


@dataclass
class Gate:
    line: int
    step: Step
    http: bool
    path: str = ""
    body_checked: bool = False


def gate_of(cmd: Command, step: Step) -> Gate | None:
    """A command that fails the job when the new version is unhealthy."""
    name, argv, text = cmd.name, cmd.argv, cmd.text()
    sub, args = _docker_sub(cmd)
    if name in ("kubectl", "oc") and (verbs(cmd)[:2] == ["rollout", "status"]
                                      or verbs(cmd)[:1] == ["wait"]):
        return Gate(cmd.line, step, False)
    if name in ("kubectl",) and "argo" in argv[1:2] and "status" in argv:
        return Gate(cmd.line, step, False)
    if name == "helm" and ({"--wait", "--atomic"} & set(argv) or "--wait=true" in argv):
        return Gate(cmd.line, step, False)
    if sub == "compose up" and ("--wait" in args or "--wait=true" in args):
        return Gate(cmd.line, step, False)
    if sub in ("service update", "service create") and not ({"-d", "--detach"} & set(args)
                                                             or "--detach=true" in args):
        return Gate(cmd.line, step, False)
    if sub == "inspect" and "Health" in text:
        return Gate(cmd.line, step, False)
    if name == "plainsail" and set(argv[1:2]) & {"deploy", "rollback", "recover"}:
        return Gate(cmd.line, step, False)
    if name in ("kamal", "flyctl", "fly") and "deploy" in argv:
        return Gate(cmd.line, step, False)
    if name == "gcloud" and "run" in argv and "deploy" in argv and "--no-wait" not in argv \
            and "--async" not in argv:
        return Gate(cmd.line, step, False)
    if name == "aws" and "wait" in argv:
        return Gate(cmd.line, step, False)
    if name == "argocd" and "wait" in argv:
        return Gate(cmd.line, step, False)
    if name in ("curl", "wget", "http", "https", "httpie"):
        fails = name != "curl" or any(
            a in ("-f", "--fail", "--fail-with-body") or (a.startswith("-") and not
                                                           a.startswith("--") and "f" in a)
            for a in argv[1:]) or "http_code" in text or cmd.after == "|"
        if not fails:
            return None
        urls = [a for a in argv[1:] if "://" in a or a.startswith(("localhost", "127.0.0.1"))]
        path = _url_path(urls[0]) if urls else ""
        return Gate(cmd.line, step, True, path, cmd.after == "|")
    return None


def _url_path(url: str) -> str:
    hidden, _ = _hide_exprs(url)
    if "://" not in hidden:
        hidden = "http://" + hidden
    try:
        path = urlsplit(hidden).path
    except ValueError:
        return "/unknown"
    if "\x00" in path or "$" in path:
        return "/unknown"
    return path.rstrip("/") or "/"


def action_gate(step: Step) -> Gate | None:
    a = step.action
    if "health" in a or "url-health-check" in a or "http-request" in a:
        url = str(get(step.with_, "url") or "")
        checked = any(k in step.with_ for k in ("expected-body", "body", "contains",
                                                "expectedBody"))
        return Gate(step.line, step, True, _url_path(url) if url else "/unknown", checked)
    if a.startswith("aws-actions/amazon-ecs-deploy-task-definition") and str(
            get(step.with_, "wait-for-service-stability") or "").lower() == "true":
        return Gate(step.line, step, False)
    if a.startswith(("google-github-actions/deploy-cloudrun", "azure/k8s-deploy",
                     "superfly/flyctl-actions")):
        return Gate(step.line, step, False)
    if a.startswith("deliverybot/helm") or a.endswith("/helm"):
        return Gate(step.line, step, False) if "wait" in step.text() or "atomic" in \
            step.text() else None
    return None


# ---------------------------------------------------------------- what a job does


@dataclass
class JobFacts:
    job: Job
    deploys: list[tuple[Step, int]]  # steps that deploy something (any kind), with a line
    starts: list[tuple[Step, int, int]]  # (step, line, order): new versions started
    images: list[ImageRef]
    pushes: list[tuple[Step, int, list[str]]]
    builds: bool
    gates: list[Gate]
    migrations: list[tuple[Step, Command, int]]
    ssh: bool


def _order(step: Step, i: int) -> int:
    return step.index * 10000 + i


def facts(job: Job, ctx: Context) -> JobFacts:
    f = JobFacts(job, [], [], [], [], False, [], [], False)
    deployish = _deployish_name(job)
    for step in job.steps:
        for i, (cmd, scope) in enumerate(step.commands):
            remote = cmd.remote or step.scripted
            if is_ssh(cmd) or step.scripted:
                f.ssh = True
            refs = pushed_refs(cmd)
            if refs is not None:
                f.pushes.append((step, cmd.line, refs))
            if is_build(cmd, step):
                f.builds = True
            if is_start(cmd) and (remote or deployish or cmd.name not in DOCKER_LIKE):
                f.starts.append((step, cmd.line, _order(step, i)))
                f.deploys.append((step, cmd.line))
            if is_migrate(cmd):
                f.migrations.append((step, cmd, _order(step, i)))
            if remote or deployish or cmd.name not in DOCKER_LIKE:
                for text, tag_only in image_uses(cmd):
                    status, why = ctx.classify(text, scope, job, tag_only)
                    f.images.append(ImageRef(step, cmd.line, text, status, why))
            gate = gate_of(cmd, step)
            if gate is not None:
                f.gates.append(gate)
        if step.action:
            refs = action_pushes(step)
            if refs is not None:
                f.pushes.append((step, step.line, refs))
                f.builds = True
            repo = "/".join(step.action.split("/")[:2])
            if repo in DEPLOY_ACTIONS or step.scripted:
                f.deploys.append((step, step.line))
                if repo not in ("easingthemes/ssh-deploy", "appleboy/scp-action",
                                "burnett01/rsync-deployments") and not step.scripted:
                    f.starts.append((step, step.line, _order(step, 0)))
            if step.scripted or repo in ("easingthemes/ssh-deploy", "appleboy/scp-action"):
                f.ssh = True
            if step.action.startswith(IMAGE_INPUT_ACTIONS):
                for key, value in step.with_.items():
                    if "image" in key.lower() and value is not None:
                        for n, text in scalar_lines(value):
                            for part in text.split(","):
                                if part:
                                    status, why = ctx.classify(part, {}, job)
                                    f.images.append(ImageRef(step, n, part, status, why))
            gate = action_gate(step)
            if gate is not None:
                f.gates.append(gate)
    return f


def _deployish_name(job: Job) -> bool:
    words = f"{job.id} {get(job.data, 'name') or ''} {text_of(get(job.data, 'environment'))}"
    return bool(re.search(r"deploy|release|rollout|prod|staging|ship", words, re.I))


def uses_secrets(job: Job) -> bool:
    text = job.text()
    names = re.findall(r"secrets\.([A-Za-z0-9_]+)|secrets\[\s*'([^']+)'", text)
    if any((a or b) != "GITHUB_TOKEN" for a, b in names):
        return True
    return str(get(job.data, "secrets") or "") == "inherit"


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
    via_run = "workflow_run" in wf.triggers
    if not builders and not via_run:
        return
    for jid, f in all_facts.items():
        if jid in builders or not (f.starts or f.images):
            continue
        if not any(s for s, _, _ in f.starts) and not f.images:
            continue
        fixed = [r for r in f.images if r.status in ("fixed", "mutable")]
        if f.builds:
            msg = f"job {jid} rebuilds the image instead of deploying what the build pushed"
        elif f.images and len(fixed) == len(f.images):
            msg = (f"job {jid} deploys {fixed[0].text}, a fixed reference, not the tag the "
                   "build job produced")
        elif not _handoff_markers(f.job.text()):
            msg = (f"job {jid} does not receive the tag or digest from the build job "
                   "(no needs.<job>.outputs, no artifact), so it deploys whatever it "
                   "resolves itself")
        else:
            continue
        yield Finding("no-tag-handoff", wf.path, f.job.line, msg)


def _unsigned(wf: Workflow, all_facts: dict[str, JobFacts]) -> Iterator[Finding]:
    pushes = [(f.job, p) for f in all_facts.values() for p in f.pushes]
    if not pushes:
        return
    texts = [wf.text] + [s.text() for j in wf.jobs for s in j.steps]
    texts += _called_workflow_texts(wf)
    for j in wf.jobs:
        for s in j.steps:
            if s.action.startswith(SIGN_ACTIONS):
                return
    if any(_SIGN_CMD.search(t) for t in texts):
        return
    job, (step, line, _) = pushes[0]
    yield Finding("unsigned-image", step.path, line,
                  f"job {job.id} pushes an image that nothing in this workflow signs or "
                  "attests, so a deploy cannot prove where it came from")


def _called_workflow_texts(wf: Workflow) -> list[str]:
    out: list[str] = []
    if wf.root is None:
        return out
    for j in wf.jobs:
        if j.uses.startswith("./"):
            p = wf.root / j.uses[2:].split("@")[0]
            try:
                out.append(p.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                pass
    return out


def _secrets_without_environment(wf: Workflow,
                                 all_facts: dict[str, JobFacts]) -> Iterator[Finding]:
    for jid, f in all_facts.items():
        if f.job.uses or f.job.has_environment():
            continue
        if not (f.deploys or f.starts or (f.ssh and _deployish_name(f.job))):
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


def _untrusted_trigger(wf: Workflow) -> Iterator[Finding]:
    triggers = {t for t in wf.triggers if t in ("pull_request_target", "workflow_run")}
    if not triggers:
        return
    for job in wf.jobs:
        if not uses_secrets(job):
            continue
        guard = f"{get(job.data, 'if') or ''}"
        if _GUARD.search(guard):
            continue
        for step in job.steps:
            untrusted = False
            if step.action.startswith("actions/checkout"):
                ref = f"{get(step.with_, 'ref') or ''} {get(step.with_, 'repository') or ''}"
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
        last_start = max(o for _, _, o in f.starts)
        gates = [g for g in f.gates
                 if g.step.index * 10000 >= (last_start // 10000) * 10000 or not g.http]
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
        if any(c.name == "plainsail" and c.argv[1:2] == ["deploy"]
               for s in f.job.steps for c, _ in s.commands):
            continue  # plainsail deploy runs migrate.command before the switch
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
            t = p.read_text(encoding="utf-8", errors="replace")[:200_000]
        except OSError:
            continue
        if re.search(r"migrat", t, re.I) and re.search(
                r"initContainers|helm\.sh/hook|argocd\.argoproj\.io/hook", t):
            return True
    return False
