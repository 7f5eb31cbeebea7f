"""`plainsail init`: plainsail.yml, ignore entries, signing keys and a deploy workflow for a
service's repository (a git work tree with a Dockerfile), from flags and what the
repository shows (the Dockerfile's EXPOSE, a migrations folder)."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from plainsail import __version__
from plainsail.errors import UsageError
from plainsail.repofiles import inside, write

WORKFLOW = Path(".github/workflows/deploy.yml")
CONFIG = Path("plainsail.yml")
KEY, PUB = "cosign.key", "cosign.pub"
IGNORED = (KEY, ".plainsail/")
DEFAULT_REPO = "plainsail/plainsail"
_SHA = re.compile(r"[0-9a-f]{40}")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class Options:
    service: str | None = None
    image: str | None = None
    hosts: list[str] = field(default_factory=list)
    port: int | None = None
    health_path: str = "/health"
    migrate_command: str | None = None
    ci: str = "github"
    force: bool = False
    install: str = "pip"  # pip or action
    plainsail_repo: str = DEFAULT_REPO
    plainsail_ref: str = f"v{__version__}"


@dataclass
class Result:
    root: Path
    written: list[str] = field(default_factory=list)
    appended: list[str] = field(default_factory=list)
    keys: str = ""  # "generated", "kept" or "" (not made: no COSIGN_PASSWORD)
    port: int = 8080
    port_detected: bool = False
    migrations: str | None = None
    migrate_command: list[str] | None = None
    next_steps: list[str] = field(default_factory=list)


def detect_port(dockerfile: Path) -> int | None:
    from plainsail.audit.files import MAX_DOCKERFILE
    from plainsail.inputs import TooLarge, read_bounded

    try:
        text = read_bounded(dockerfile, MAX_DOCKERFILE).decode("utf-8", errors="replace")
    except (OSError, TooLarge):
        return None
    m = re.search(r"^\s*EXPOSE\s+(\d+)", text, re.I | re.M)
    return int(m.group(1)) if m and 0 < int(m.group(1)) < 65536 else None


def default_migrate_command(root: Path, folder: Path) -> list[str]:
    rel = folder.relative_to(root).as_posix()
    if (root / "manage.py").is_file():
        return ["python", "manage.py", "migrate", "--noinput"]
    if (root / "alembic.ini").is_file() or rel.startswith("alembic"):
        return ["alembic", "upgrade", "head"]
    if rel == "db/migrate":
        return ["bin/rails", "db:migrate"]
    if rel.startswith("prisma"):
        return ["npx", "prisma", "migrate", "deploy"]
    return ["plainsail", "migrate"]


def _service_name(root: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", root.name.lower()).strip("-")
    return name or "app"


def _origin_image(root: Path) -> str | None:
    from plainsail.supply.git import git

    proc = git(["remote", "get-url", "origin"], root, check=False)
    m = re.search(r"github\.com[:/]([^/]+)/([^/]+?)(?:\.git)?/?$", proc.stdout.strip())
    return f"ghcr.io/{m.group(1).lower()}/{m.group(2).lower()}" if m else None


def _branch(root: Path) -> str:
    from plainsail.supply.git import git

    proc = git(["symbolic-ref", "--short", "HEAD"], root, check=False)
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and re.fullmatch(r"[A-Za-z0-9._/-]+", name) else "main"


def _validate(opts: Options, root: Path) -> tuple[str, str]:
    from plainsail.config.model import SERVICE_RE, check_repository
    from plainsail.hosts.addresses import parse_host

    service = opts.service or _service_name(root)
    if not SERVICE_RE.fullmatch(service):
        raise UsageError(f"--service {service!r}: use lowercase letters, digits and -")
    image = opts.image or _origin_image(root)
    if not image:
        raise UsageError("no --image given and origin is not a GitHub repository; pass "
                         "--image registry.example.com/team/" + service)
    problem = check_repository(image)
    if problem:
        raise UsageError(f"--image: {problem}")
    if not opts.hosts:
        raise UsageError("give at least one --host (ssh://user@host[:port], an ~/.ssh/config "
                         "alias, or local)")
    for h in opts.hosts:
        try:
            parse_host(h)
        except ValueError as exc:
            raise UsageError(f"--host {exc}") from None
    if opts.port is not None and not 0 < opts.port < 65536:
        raise UsageError(f"--port {opts.port}: must be between 1 and 65535")
    if not re.fullmatch(r"/\S*", opts.health_path):
        raise UsageError(f"--health-path {opts.health_path!r}: a URL path starting with /")
    if opts.ci != "github":
        raise UsageError(f"--ci {opts.ci!r}: only github is supported")
    if not _REPO.fullmatch(opts.plainsail_repo):
        raise UsageError(f"--plainsail-repo {opts.plainsail_repo!r}: write OWNER/NAME")
    if opts.install == "action" and not _SHA.fullmatch(opts.plainsail_ref):
        raise UsageError("--install action needs --plainsail-ref as a full 40-character "
                         "commit SHA: a workflow pins actions by commit")
    if not _REF.fullmatch(opts.plainsail_ref):
        raise UsageError(f"--plainsail-ref {opts.plainsail_ref!r} is not a git ref")
    return service, image


def _yaml_str(value: str) -> str:
    return json.dumps(value)


def render_config(service: str, image: str, hosts: list[str], port: int, health_path: str,
                  migrate: list[str] | None) -> str:
    host_lines = "\n".join(f"  - {_yaml_str(h)}" for h in hosts)
    out = f"""# plainsail.yml for {service}, written by plainsail init; docs/configuration.md
# explains every key. Check it with: plainsail config check
service: {service}
image: {_yaml_str(image)}   # repository only: plainsail tags with the git SHA

registry:                           # the build and the hosts log in with these
  username: ${{REGISTRY_USER:-}}
  password: ${{REGISTRY_PASSWORD:-}}

build:
  context: .
  dockerfile: Dockerfile

signing:
  key: {KEY}                  # made by plainsail keygen; never committed
  public_key: {PUB}           # committed: deploys refuse images it did not sign

hosts:
{host_lines}

ssh:                                # CI writes the key and known_hosts from secrets
  identity_file: ${{PLAINSAIL_SSH_KEY:-~/.ssh/id_ed25519}}
  known_hosts: ${{PLAINSAIL_KNOWN_HOSTS:-~/.ssh/known_hosts}}

app:
  port: {port}
  publish: {port}
  env: {{}}
  secrets: []                       # names of secrets read from the deployer's environment
"""
    if migrate:
        out += f"""
migrate:                            # before the new version starts; a failure aborts
  command: {json.dumps(migrate)}
  timeout: 5m
"""
    out += f"""
health:
  path: {_yaml_str(health_path)}               # must exercise real function, not /ping
  status: 200
  attempts: 30
  interval: 1s
  timeout: 2s

on_failure: restore
retain: 3

notify:
  - webhook: ${{DEPLOY_WEBHOOK_URL:-}}
"""
    return out


def render_workflow(service: str, branch: str, opts: Options, lint_dir: str | None) -> str:
    template = resources.files("plainsail.ci").joinpath("templates/github-deploy.yml")
    text = template.read_text(encoding="utf-8")
    extras = "[lint]" if lint_dir else ""
    if opts.install == "action":
        install = (f"      - uses: {opts.plainsail_repo}@{opts.plainsail_ref}  "
                   f"# plainsail, installs itself\n"
                   f"        with:\n"
                   f"          extras: {_yaml_str(extras.strip('[]'))}")
    else:
        spec = (f"plainsail{extras} @ git+https://github.com/{opts.plainsail_repo}"
                f"@{opts.plainsail_ref}")
        install = ("      - name: install plainsail (pinned)\n"
                   f"        run: python -m pip install {shlex.quote(spec)}")
    lint = ""
    if lint_dir:
        lint = ("      - name: lint the migrations this push adds\n"
                "        env:\n"
                "          BEFORE: ${{ github.event.before }}\n"
                "        run: |\n"
                "          if git cat-file -e \"$BEFORE^{commit}\" 2>/dev/null; then\n"
                f"            plainsail lint migrations {shlex.quote(lint_dir)} "
                "--since \"$BEFORE\"\n"
                "          else\n"
                f"            plainsail lint migrations {shlex.quote(lint_dir)}\n"
                "          fi")
    text = text.replace("@@SERVICE@@", service).replace("@@BRANCH@@", branch)
    text = text.replace("@@INSTALL@@", install)
    text = text.replace("@@LINT@@\n", lint + "\n" if lint else "")
    return text


def _ignore_entries(path: Path, entries: tuple[str, ...]) -> str | None:
    """The text to append to an ignore file so it holds `entries`, or None if it does."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    have = {line.strip() for line in existing.splitlines()}
    missing = [e for e in entries if e not in have and e.rstrip("/") not in have
               and "/" + e not in have]
    if not missing:
        return None
    prefix = "" if not existing or existing.endswith("\n") else "\n"
    return prefix + "# plainsail: the signing key and local deploy state\n" + \
        "".join(f"{e}\n" for e in missing)


def init(root: Path, opts: Options) -> Result:
    from plainsail.audit.files import migrations_folder
    from plainsail.supply.git import toplevel

    root = root.resolve()
    top = toplevel(root)
    dockerfile = root / "Dockerfile"
    if not dockerfile.is_file():
        raise UsageError(f"no Dockerfile in {root}: run plainsail init in the folder with the "
                         "service's Dockerfile")
    service, image = _validate(opts, root)
    targets = {rel: inside(root, rel, "init") for rel in (CONFIG, WORKFLOW, Path(".gitignore"),
                                                   Path(".dockerignore"), Path(KEY),
                                                   Path(PUB))}
    existing = [str(p) for p in (CONFIG, WORKFLOW) if targets[p].exists()]
    if existing and not opts.force:
        raise UsageError(f"{' and '.join(existing)} already exist(s); nothing was written. "
                         "Pass --force to overwrite")
    if root != top and opts.ci == "github":
        raise UsageError(f"{root} is not the top of its git work tree ({top}); GitHub reads "
                         "workflows only from the repository's top: run init there")
    result = Result(root)
    detected = detect_port(dockerfile)
    result.port = opts.port or detected or 8080
    result.port_detected = opts.port is None and detected is not None
    folder = migrations_folder(root)
    if opts.migrate_command:
        try:
            result.migrate_command = shlex.split(opts.migrate_command)
        except ValueError as exc:
            raise UsageError(f"--migrate-command: {exc}") from None
        if not result.migrate_command:
            raise UsageError("--migrate-command is empty")
    elif folder is not None:
        result.migrate_command = default_migrate_command(root, folder)
    if folder is not None:
        result.migrations = folder.relative_to(root).as_posix()
    lint_dir = result.migrations if (folder is not None and any(folder.glob("*.sql"))) \
        else None
    # Everything is rendered before anything is written.
    files = {
        CONFIG: render_config(service, image, opts.hosts, result.port, opts.health_path,
                              result.migrate_command),
        WORKFLOW: render_workflow(service, _branch(root), opts, lint_dir),
    }
    appends = {p: _ignore_entries(targets[Path(p)], IGNORED)
               for p in (".gitignore", ".dockerignore")}
    for rel, text in files.items():
        target = targets[rel]
        target.parent.mkdir(parents=True, exist_ok=True)
        write(target, text)
        result.written.append(str(rel))
    for name, extra in appends.items():
        if extra is not None:
            write(targets[Path(name)], extra, append=True)
            result.appended.append(name)
    result.keys = _keys(root)
    result.next_steps = next_steps(result, opts.hosts)
    return result


def _keys(root: Path) -> str:
    from plainsail.secret import Secret
    from plainsail.supply.keys import generate

    if (root / KEY).exists() or (root / PUB).exists():
        return "kept"
    password = os.environ.get("COSIGN_PASSWORD")
    if password is None:
        return ""
    generate(str(root / KEY.removesuffix(".key")), Secret(password))
    return "generated"


def next_steps(result: Result, hosts: list[str]) -> list[str]:
    steps: list[str] = []
    if not result.keys:
        steps.append("make the signing key pair: COSIGN_PASSWORD=... plainsail keygen "
                     "(then commit cosign.pub, never cosign.key)")
    else:
        steps.append("commit cosign.pub; keep cosign.key out of git (it is in .gitignore)")
    steps.append("repository secrets (Settings > Secrets and variables > Actions): "
                 "COSIGN_PRIVATE_KEY (the text of cosign.key), COSIGN_PASSWORD, "
                 "REGISTRY_USER, REGISTRY_PASSWORD")
    names = ", ".join(hosts)
    steps.append("environment `production` (Settings > Environments; add required reviewers): "
                 "SSH_PRIVATE_KEY (a key the deploy user on the hosts accepts), "
                 f"SSH_KNOWN_HOSTS (ssh-keyscan of {names}), REGISTRY_USER, "
                 "REGISTRY_PASSWORD, optionally DEPLOY_WEBHOOK_URL, and every name in "
                 "app.secrets")
    steps.append("check: plainsail config check && plainsail audit .")
    steps.append(f"commit {CONFIG}, {WORKFLOW}, .gitignore and .dockerignore, and push")
    return steps
