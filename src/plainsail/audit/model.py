"""The model of what each step of a workflow does: the images it builds, pushes and
deploys, the versions it starts, the health gates, migrations and signatures it runs.

It is fed by the shell parser (plainsail.audit.shell), the table of well-known actions
(plainsail.audit.actions), local composite actions and reusable workflows (inlined by
plainsail.audit.workflow) and the compose files a command names. The rules
(plainsail.audit.workflow_rules) read only this model.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from plainsail.audit import actions, yamldoc
from plainsail.audit.shell import Command, option_values, positional
from plainsail.audit.workflow import Job, Step, Workflow
from plainsail.audit.yamldoc import YMap, get, scalar_lines, text_of

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
_SIGN_CMD = re.compile(r"\b(cosign\s+(sign|attest)|notation\s+sign|plainsail\s+sign|"
                       r"docker\s+trust\s+sign|gh\s+attestation\s+sign)")
LIVENESS_PATHS = {"", "/", "/ping", "/healthz", "/livez", "/alive", "/liveness", "/live",
                  "/health/live", "/health/liveness", "/heartbeat", "/_ping", "/api/ping"}
_MIGRATE = re.compile(
    r"\bmigrat|alembic\s+upgrade|db:migrate|prisma\s+migrate|flyway|liquibase|"
    r"knex\s+migrate|goose\s+.*\bup\b|dbmate\s+up|sqlx\s+migrate|atlas\s+migrate|"
    r"ecto\.migrate|diesel\s+migration|db-migrate|typeorm\s+migration:run|rake\s+db:", re.I)


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
    if name not in DOCKER_LIKE | {"docker-compose"} or len(argv) < 2:
        return "", []
    args = ["compose", *argv[1:]] if name == "docker-compose" else argv[1:]
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
    if name == "az" and argv[1:3] == ["acr", "build"] and "--no-push" not in argv:
        return option_values(argv, ("--image", "-t"))
    if name == "ko" and len(argv) > 1 and argv[1] in ("build", "publish", "apply", "resolve"):
        return ["@digest"]
    if name in ("pack",) and "--publish" in argv:
        return positional(argv[2:], {"--publish", "--trust-builder", "--clear-cache"})[:1]
    if name in ("executor", "/kaniko/executor"):
        return option_values(argv, ("--destination", "-d"))
    if name == "sbt" and any(a.lower().replace(":", "/") == "docker/publish"
                             for a in argv[1:]):
        return []  # sbt-native-packager: tags come from the build definition
    if name in ("mvn", "mvnw", "gradle", "gradlew") and any(
            a.endswith(("jib:build", "jib")) for a in argv[1:]):
        return option_values(argv, ("-Dimage", "--image"))
    return None


def _tag_list(value: object) -> list[str]:
    return [t.strip() for t in re.split(r"[\n,]", str(value or "")) if t.strip()]


def action_pushes(step: Step) -> list[str] | None:
    """The references a build-and-push action pushes ([] when they cannot be told), or
    None when the step pushes nothing."""
    spec = actions.spec_of(step.uses)
    if spec is None or spec.kind != actions.PUBLISH:
        return None
    w = {k: str(v) for k, v in step.with_.items()}
    if not actions.pushes(step.uses, w):
        return None
    repo = actions.repo_of(step.uses)
    if repo == "docker/build-push-action" and actions.major_version(step.uses) == 1:
        image = "/".join(x for x in (w.get("registry", ""), w.get("repository", "")) if x)
        refs = [f"{image}:{t}" for t in _tag_list(w.get("tags"))]
        if w.get("tag_with_sha", "").lower() == "true":
            refs.append(f"{image}:sha-${{{{ github.sha }}}}")
        if w.get("tag_with_ref", "").lower() == "true":
            refs.append(f"{image}:${{{{ github.ref_name }}}}")
        return refs or [f"{image}:latest"]
    if repo == "elgohr/publish-docker-github-action":
        image = w.get("name", "image")
        refs = [f"{image}:{t}" for t in _tag_list(w.get("tags") or "latest")]
        if w.get("snapshot", "").lower() == "true":
            refs.append(f"{image}:${{{{ github.sha }}}}")
        if w.get("tag_semver", "").lower() == "true":
            refs.append(f"{image}:${{{{ github.sha }}}}")  # a release's version
        return refs
    if repo == "kciter/aws-ecr-action":
        return [f"{w.get('repo', 'image')}:{t}" for t in _tag_list(w.get("tags") or "latest")]
    if repo in ("redhat-actions/push-to-registry", "aevea/action-kaniko",
                "whoan/docker-build-with-cache-action", "vaultvulp/gp-docker-action",
                "jerray/publish-docker-action"):
        image = w.get("image") or w.get("image_name") or w.get("image-name") \
            or w.get("name") or "image"
        tags = w.get("tags") or w.get("tag") or w.get("image_tag") or w.get("image-tag") \
            or "latest"
        return [f"{image}:{t}" for t in re.split(r"[\s,]+", tags.strip()) if t]
    if repo in ("docker/build-push-action", "int128/kaniko-action") or repo.endswith(
            "/build-push-action"):
        return _tag_list(w.get("tags"))
    return []


def is_build(cmd: Command, step: Step) -> bool:
    sub, args = _docker_sub(cmd)
    if sub in ("compose up", "stack deploy") and "--build" in args:
        return True
    if cmd.name in ("flyctl", "fly") and "deploy" in cmd.argv[1:2] and not option_values(
            cmd.argv, ("--image", "-i")):
        return True  # fly deploy without an image builds one (locally or remotely) now
    return sub in ("build", "buildx build", "buildx bake", "compose build") or (
        cmd.name == "plainsail" and cmd.argv[1:2] == ["build"])


# make targets that, by their name, start the app (what a Makefile runs is not read)
_MAKE_STARTS = {"up", "deploy", "start", "restart", "release", "rollout", "redeploy"}
_MAKE_GATES = re.compile(r"health|smoke|ready|readiness|verify")
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
    if name in ("kubectl", "oc") and any(a.startswith("--dry-run") for a in argv):
        return False
    if name == "make" and set(positional(argv[1:], set())) & _MAKE_STARTS:
        return True
    if name in ("kubectl", "oc") and first == {"run"} and "--rm" in argv:
        return False  # a throwaway pod (a smoke test), not the app
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
    if name == "heroku" and "container:release" in argv:
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
    order: int = 0  # where it runs in the job (step index * 10000 + command index)


def gate_of(cmd: Command, step: Step, tested: Collection[str] = ()) -> Gate | None:
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
        return _http_gate(cmd, step, tested)
    if name == "make" and any(_MAKE_GATES.search(t) for t in positional(argv[1:], set())):
        return Gate(cmd.line, step, False)
    if name in ("kubectl", "oc") and "--" in argv and verbs(cmd)[:1] in (["run"], ["exec"]):
        inner = Command(cmd.line, argv[argv.index("--") + 1:], after=cmd.after)
        return gate_of(inner, step, tested)
    return None


_SHELL_NAMES = {"sh", "bash", "zsh", "dash", "sudo", "python", "python3", "node", "tar",
                "gunzip", "apt-key", "gpg", "tee", "install"}


def _http_gate(cmd: Command, step: Step, tested: Collection[str]) -> Gate | None:
    """An HTTP request that fails the job when the answer is bad: curl -f (or a status or
    body check of what it returned). A download (piped into a shell, saved with -o/-O)
    is not a gate."""
    name, argv, text = cmd.name, cmd.argv, cmd.text()
    if cmd.piped_to in _SHELL_NAMES:
        return None
    outputs = option_values(argv, ("-o", "--output", "-O", "--output-document"))
    if any(o not in ("/dev/null", "-") for o in outputs) or "-O" in argv \
            or "--remote-name" in argv:
        return None
    checked = bool(cmd.captured and cmd.captured in tested) or cmd.piped_to in (
        "grep", "jq", "egrep", "fgrep")
    fails = name != "curl" or checked or any(
        a in ("-f", "--fail", "--fail-with-body") or (a.startswith("-") and not
                                                       a.startswith("--") and "f" in a)
        for a in argv[1:]) or ("http_code" in text and bool(cmd.captured))
    if not fails:
        return None
    urls = [a for a in argv[1:] if "://" in a or a.startswith(("localhost", "127.0.0.1"))]
    path = _url_path(urls[0]) if urls else ""
    return Gate(cmd.line, step, True, path, checked)


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


_POLL = re.compile(r"\b(while|for)\b|setTimeout|retr(y|ies)|attempt", re.I)
_FAILS = re.compile(r"\bthrow\b|core\.setFailed|process\.exit\(\s*1", re.I)


def action_gate(step: Step) -> Gate | None:
    spec = actions.spec_of(step.uses)
    if spec is None:
        return None
    w = step.with_
    if spec.kind == actions.GATE:
        url = str(get(w, "url") or "")
        checked = any(k in w for k in ("expected-body", "body", "contains", "expectedBody"))
        return Gate(step.line, step, True, _url_path(url) if url else "/unknown", checked)
    if spec.kind == actions.SCRIPT:
        # github-script that polls until the new version is ready, and fails otherwise
        script = str(get(w, "script") or "")
        if _POLL.search(script) and _FAILS.search(script):
            return Gate(step.line, step, False)
        return None
    if spec.kind == actions.DEPLOY and (spec.waits or (
            spec.gate_when and str(get(w, spec.gate_when) or "").strip().lower()
            not in ("", "false"))):
        return Gate(step.line, step, False)
    if spec.kind == actions.DEPLOY and actions.repo_of(step.uses) == "deliverybot/helm":
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
    signs: list[tuple[Step, int]] = field(default_factory=list)
    restarts: list[tuple[Step, int]] = field(default_factory=list)  # redeploy same tag
    build_lines: list[tuple[Step, int]] = field(default_factory=list)


def _order(step: Step, i: int) -> int:
    return step.index * 10000 + i


def compose_file(step: Step, cmd: Command, root: Path | None) -> YMap | None:
    """The compose file a `docker compose [-f FILE] ...` command names, from the repository
    (the same path relative to the root, or the default names)."""
    if root is None:
        return None
    _, args = _docker_sub(cmd)
    argv = cmd.argv
    names = option_values(argv, ("-f", "--file")) or ["compose.yaml", "compose.yml",
                                                      "docker-compose.yml",
                                                      "docker-compose.yaml"]
    for name in names:
        if "$" in name:
            continue
        for base in (root, root / (str(get(step.data, "working-directory") or "."))):
            p = base / name
            try:
                if p.is_file():
                    data = yamldoc.load(yamldoc.read(p))
                    return data if isinstance(data, YMap) else None
            except (OSError, UnicodeDecodeError, yamldoc.YamlError):
                return None
    return None


def _compose_images(data: YMap) -> tuple[list[str], bool]:
    """The images a compose file's services run, and whether a service is only built
    (`build:` and no `image:`, so `up` builds it on the host)."""
    services = get(data, "services")
    images: list[str] = []
    built = False
    if isinstance(services, YMap):
        for svc in services.values():
            if isinstance(svc, YMap):
                if get(svc, "image"):
                    images.append(str(get(svc, "image")))
                elif get(svc, "build") is not None:
                    built = True
    return images, built


_LOCAL_REGISTRY = re.compile(r"^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?/")


def _local_only(refs: list[str]) -> bool:
    """Pushes that only reach a registry on the runner itself (a build step's service
    container), which publish nothing."""
    return bool(refs) and all(_LOCAL_REGISTRY.match(r.strip()) for r in refs)


def _starts_by_action(step: Step, spec: actions.ActionSpec) -> bool:
    return spec.kind == actions.DEPLOY and spec.starts


def facts(job: Job, ctx: Context) -> JobFacts:
    f = JobFacts(job, [], [], [], [], False, [], [], False)
    deployish = _deployish_name(job)
    pulls: list[ImageRef] = []
    pulled = False  # a `compose pull` ran: the next `compose up` runs what the tags name
    cache_from: set[str] = set()
    for step in job.steps:
        tested = {w.lstrip("$").strip("{}\"") for c, _ in step.commands
                  if c.name in ("test", "[", "[[") or c.condition for w in c.argv}
        for i, (cmd, scope) in enumerate(step.commands):
            remote = cmd.remote or step.scripted
            if cmd.substituted and not cmd.captured and cmd.name in DOCKER_LIKE:
                continue  # $(docker ps -q ...) lists; it changes nothing
            if is_ssh(cmd) or step.scripted:
                f.ssh = True
            refs = pushed_refs(cmd)
            if refs is not None and not _local_only(refs):
                f.pushes.append((step, cmd.line, refs))
            if is_build(cmd, step):
                f.builds = True
                f.build_lines.append((step, cmd.line))
                cache_from.update(option_values(cmd.argv, ("--cache-from",)))
            sub, args = _docker_sub(cmd)
            pulled = pulled or sub == "compose pull"
            heroku = sub == "push" and any(resolve(a, scope).startswith(
                "registry.heroku.com/") for a in args)  # a push there stages the release
            if (is_start(cmd) or heroku) and (remote or deployish
                                              or cmd.name not in DOCKER_LIKE):
                f.starts.append((step, cmd.line, _order(step, i)))
                f.deploys.append((step, cmd.line))
                if cmd.name in ("kubectl", "oc") and verbs(cmd)[:2] == ["rollout", "restart"] \
                        or sub == "compose up" and pulled:
                    f.restarts.append((step, cmd.line))  # runs whatever the tags name now
                if sub.startswith("compose "):
                    data = compose_file(step, cmd, ctx.wf.root)
                    if data is not None:
                        images, built = _compose_images(data)
                        for text in images:
                            status, why = ctx.classify(text, scope, job)
                            f.images.append(ImageRef(step, cmd.line, text, status, why))
                        if built and "--no-build" not in args and sub == "compose up" \
                                or "--build" in args:
                            f.builds = True
                            f.build_lines.append((step, cmd.line))
            if is_migrate(cmd):
                f.migrations.append((step, cmd, _order(step, i)))
            if _SIGN_CMD.search(cmd.text()) or (cmd.name == "cosign" and cmd.argv[1:2] in (
                    ["sign"], ["attest"])):
                f.signs.append((step, cmd.line))
            if remote or deployish or cmd.name not in DOCKER_LIKE:
                for text, tag_only in image_uses(cmd):
                    status, why = ctx.classify(text, scope, job, tag_only)
                    ref = ImageRef(step, cmd.line, text, status, why)
                    (pulls if sub == "pull" else f.images).append(ref)
            gate = gate_of(cmd, step, tested)
            if gate is not None and (not cmd.substituted or cmd.captured):
                gate.order = _order(step, i)
                f.gates.append(gate)
        spec = actions.spec_of(step.uses)
        if spec is not None:
            refs = action_pushes(step)
            if refs is not None and not _local_only(refs):
                f.pushes.append((step, step.line, refs))
            if refs is not None or (spec.builds_input and get(step.with_, spec.builds_input)):
                f.builds = True  # built here, or by the platform from source at deploy time
                f.build_lines.append((step, step.line))
            if spec.kind == actions.SIGN:
                f.signs.append((step, step.line))
            if spec.kind in (actions.DEPLOY, actions.COPY) or step.scripted:
                f.deploys.append((step, step.line))
                if _starts_by_action(step, spec):
                    f.starts.append((step, step.line, _order(step, 0)))
            if step.scripted or spec.kind in (actions.COPY, actions.SSH):
                f.ssh = True
            for key in spec.image_inputs:
                value = get(step.with_, key)
                for n, text in scalar_lines(value):
                    for part in text.split(","):
                        if part.strip():
                            status, why = ctx.classify(part, {}, job)
                            f.images.append(ImageRef(step, n, part.strip(), status, why))
            gate = action_gate(step)
            if gate is not None:
                gate.order = _order(step, 10**4 - 1)
                f.gates.append(gate)
    if job.callee is not None:
        _merge_callee(f, job.callee)
    # a pulled image is deployed only when the job starts something; a pull that warms a
    # build cache (--cache-from) deploys nothing
    if f.starts:
        f.images.extend(p for p in pulls if resolve(p.text, {}) not in cache_from
                        and p.text not in cache_from)
    return f


def _merge_callee(f: JobFacts, callee: Workflow) -> None:
    """What the jobs of a called local workflow do, as done by the calling job."""
    inner = Context(callee)
    for job in callee.jobs:
        g = facts(job, inner)
        f.deploys += g.deploys
        f.starts += g.starts
        f.images += g.images
        f.pushes += g.pushes
        f.builds = f.builds or g.builds
        f.gates += g.gates
        f.migrations += g.migrations
        f.ssh = f.ssh or g.ssh
        f.signs += g.signs
        f.restarts += g.restarts
        f.build_lines += g.build_lines


def _deployish_name(job: Job) -> bool:
    words = f"{job.id} {get(job.data, 'name') or ''} {text_of(get(job.data, 'environment'))}"
    return bool(re.search(r"deploy|release|rollout|prod|staging|ship", words, re.I))


def uses_secrets(job: Job) -> bool:
    text = job.text()
    names = re.findall(r"secrets\.([A-Za-z0-9_]+)|secrets\[\s*'([^']+)'", text)
    if any((a or b) != "GITHUB_TOKEN" for a, b in names):
        return True
    return str(get(job.data, "secrets") or "") == "inherit"
