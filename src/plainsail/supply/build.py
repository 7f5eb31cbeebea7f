"""The build stage: one commit, one immutable, labelled, pushed image.

The image is tagged with the commit's short SHA, never `latest`. When the registry already
has the tag, nothing is built: the existing digest is reused (one commit, one artifact).
After the push the registry is asked which digest the tag resolves to, and that must be
the image just built; the digest goes into a build record that later stages read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets as pysecrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from plainsail.config.model import Config
from plainsail.errors import BuildError, GitError, RegistryError, RemoteError, UsageError
from plainsail.hosts import docker
from plainsail.hosts.addresses import Host
from plainsail.hosts.executor import LocalExecutor
from plainsail.progress import NULL, Progress
from plainsail.secret import Secret, redact
from plainsail.supply import buildrecords, dockerignore
from plainsail.supply import git as gitlib
from plainsail.supply.buildrecords import BuildRecord
from plainsail.supply.images import ImageRef, mutable_tag_problem

if TYPE_CHECKING:
    from plainsail.supply.registry import RegistryClient

log = logging.getLogger("plainsail.supply.build")

OCI = "org.opencontainers.image"
BUILD_TIMEOUT = 3600.0
PUSH_TIMEOUT = 1800.0
EVIDENCE_LINES = 12  # the failing build step's last lines shown with the error

# "Step 3/7 : RUN make" (the legacy builder) or "#7 [3/7] RUN make" (BuildKit's plain output)
_STEP = re.compile(r"^(?:Step (\d+)/(\d+) : |#\d+ \[(?:[^\]\s]+ )?(\d+)/(\d+)\] )(.*)$")


class BuildSteps:
    """Follows `docker build` output line by line: the step running, the lines it printed
    (for the evidence of a failure), and progress events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.step = ""  # "3/7: RUN make"
        self.lines: list[str] = []  # the current step's output

    def __call__(self, line: str) -> None:
        clean = _ANSI.sub("", line).rstrip()
        m = _STEP.match(clean.strip())
        if m:
            n, total = m.group(1) or m.group(3), m.group(2) or m.group(4)
            self.step = f"{n}/{total}: {m.group(5).strip()}"
            self.lines = []
            self.progress.update("build", f"step {self.step}"[:200])
        elif clean.strip():
            self.lines.append(clean)

    def evidence(self) -> list[str]:
        lines = [line for line in self.lines if not line.strip().startswith(("---> ",
                                                                              " ---> "))]
        return lines[-EVIDENCE_LINES:]


@dataclass(frozen=True)
class BuildPlan:
    """Everything decided before docker runs: pure data, shown by --verbose and tests."""

    ref: ImageRef
    labels: dict[str, str]
    build_argv: list[str]
    commit: gitlib.Commit


def short_tag(sha: str, length: int) -> str:
    return sha[:length]


def dirty_tag(sha: str, length: int) -> str:
    suffix = "".join(pysecrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
    return f"{short_tag(sha, length)}-dirty-{suffix}"


def rfc3339_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def github_source() -> str | None:
    """The repository URL GitHub Actions gives a job (GITHUB_SERVER_URL/GITHUB_REPOSITORY),
    for checkouts without an `origin` remote."""
    server = os.environ.get("GITHUB_SERVER_URL", "")
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    if os.environ.get("GITHUB_ACTIONS") == "true" and server and repository:
        return f"{server.rstrip('/')}/{repository}"
    return None


def labels_for(cfg: Config, commit: gitlib.Commit, tag: str, created: str) -> dict[str, str]:
    source = cfg.build.source or commit.origin or github_source() or ""
    labels = {
        f"{OCI}.revision": commit.sha,
        f"{OCI}.created": created,
        f"{OCI}.version": commit.describe or short_tag(commit.sha, cfg.build.tag_length),
        f"{OCI}.title": cfg.service,
    }
    if source:
        labels[f"{OCI}.source"] = gitlib.strip_credentials(source)
    if "-dirty-" in tag:
        labels[f"{OCI}.version"] += "-dirty"
    return dict(sorted(labels.items()))


def plan(
    cfg: Config, *, allow_dirty: bool = False, requested_tag: str | None = None
) -> BuildPlan:
    """Check the work tree and decide the tag, labels and docker build command."""
    commit = gitlib.head(cfg.root)
    if commit.dirty and not allow_dirty:
        shown = ", ".join(commit.dirty_paths[:5]) + (" ..." if len(commit.dirty_paths) > 5 else "")
        raise GitError(
            f"the work tree has uncommitted changes ({shown}); commit them so the image "
            "matches a commit, or pass --allow-dirty for a throwaway <sha>-dirty-<random> tag"
        )
    tag = (
        dirty_tag(commit.sha, cfg.build.tag_length)
        if commit.dirty
        else short_tag(commit.sha, cfg.build.tag_length)
    )
    if requested_tag is not None and requested_tag != tag:
        problem = mutable_tag_problem(requested_tag)
        if problem is None:
            problem = (
                f"refusing the tag {requested_tag!r}: HEAD is {commit.sha[:12]}, so its tag "
                f"is {tag}; check out that commit to build it"
            )
        raise UsageError(problem)
    context = cfg.resolve(cfg.build.context)
    dockerfile = (context / cfg.build.dockerfile) if not os.path.isabs(
        cfg.build.dockerfile) else Path(cfg.build.dockerfile)
    if not context.is_dir():
        raise BuildError(f"build.context {cfg.build.context!r} is not a folder ({context})")
    if not dockerfile.is_file():
        raise BuildError(
            f"no Dockerfile at {dockerfile}; create it or set build.dockerfile in plainsail.yml"
        )
    leaked = private_keys_in_context(cfg, context, dockerfile)
    if leaked:
        shown = leaked[0]
        raise BuildError(
            f"the private signing key {shown} is inside the build context and "
            f"{dockerignore.ignore_file(context, dockerfile).name} does not exclude it, so "
            f"the image could ship it; add {shown} to .dockerignore (plainsail keygen does "
            "this) or move the key out of the build context"
        )
    ref = ImageRef(cfg.image, tag)
    labels = labels_for(cfg, commit, tag, rfc3339_now())
    argv = docker.build(str(context), str(dockerfile), str(ref), labels, cfg.build.args)
    return BuildPlan(ref, labels, argv, commit)


_KEY_LABELS = tuple(f"-----BEGIN {label}-----".encode() for label in (
    "ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY"))


def private_keys_in_context(cfg: Config, context: Path, dockerfile: Path) -> list[str]:
    """Private signing keys (signing.key, and cosign key files at the top of the context or
    next to plainsail.yml) that `docker build` would send, as paths relative to the
    context."""
    candidates: set[Path] = set()
    if cfg.signing.key:
        candidates.add(cfg.resolve(cfg.signing.key))
    for folder in {context, cfg.root.resolve()}:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_file() and _looks_like_private_key(entry):
                candidates.add(entry.resolve())
    rules = dockerignore.rules_for(context, dockerfile)
    found = []
    for path in sorted(candidates):
        if not path.is_file():
            continue
        try:
            relative = path.relative_to(context.resolve()).as_posix()
        except ValueError:
            continue  # outside the context: never sent
        if not dockerignore.excluded(rules, relative):
            found.append(relative)
    return found


def _looks_like_private_key(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.startswith(_KEY_LABELS)


def run_build(
    cfg: Config,
    *,
    allow_dirty: bool = False,
    requested_tag: str | None = None,
    record_dir: str | None = None,
    client: RegistryClient | None = None,
    progress: Progress = NULL,
) -> BuildRecord:
    """Build, push and record the image of HEAD; reuse the registry's image if it exists.
    `progress` hears of each build step ("build") and each layer pushed ("push")."""
    from plainsail.supply.registry import RegistryClient

    p = plan(cfg, allow_dirty=allow_dirty, requested_tag=requested_tag)
    client = client or RegistryClient.for_config(cfg)
    directory = buildrecords.record_dir(cfg, record_dir)

    existing = client.resolve(p.ref)
    if existing:
        log.info("%s already exists in the registry (%s); not rebuilding: one commit, "
                 "one artifact", p.ref, existing)
        config = client.image_config(ImageRef(cfg.image, p.ref.tag, existing))
        labels = dict((config.get("config") or {}).get("Labels") or {})
        record = BuildRecord(
            image=cfg.image, tag=p.ref.tag or "", digest=existing, git_sha=p.commit.sha,
            created=labels.get(f"{OCI}.created", rfc3339_now()), builder=socket.gethostname(),
            labels={k: v for k, v in labels.items() if k.startswith(OCI)}, reused=True,
        )
        buildrecords.write(record, directory)
        return record

    local = LocalExecutor(Host("local"), cfg.secrets())
    log.info("building %s", p.ref)
    steps = BuildSteps(progress)
    progress.update("build", f"building {p.ref}")
    started = time.monotonic()
    try:
        local.run(p.build_argv, timeout=BUILD_TIMEOUT, what="docker build", on_line=steps)
    except RemoteError as exc:
        progress.done("build")
        raise build_failure(exc, steps, local.secrets) from None
    progress.done("build", f"built {p.ref} in {time.monotonic() - started:.1f}s")
    image_id = local.run(docker.image_inspect(str(p.ref), "{{.Id}}")).stdout.strip()

    # With registry.mode host the image is pushed to plainsail's loopback registry under
    # that registry's name; the configured name stays the image's identity.
    push_ref = ImageRef(f"{client.registry}/{p.ref.path}", p.ref.tag) if cfg.host_mode \
        else p.ref
    if push_ref != p.ref:
        local.run(docker.tag(str(p.ref), str(push_ref)), what="docker tag")
    log.info("pushing %s", push_ref)
    pushed: list[str] = []

    def push_line(line: str) -> None:
        m = re.match(r"^([0-9a-f]{6,64}): (Pushed|Layer already exists|Mounted from .*)$",
                     line.strip())
        if m:
            pushed.append(m.group(1))
            progress.update("push", f"pushing {push_ref}: {len(pushed)} layer(s) done")

    try:
        with _push_config(cfg, local) as config_dir:
            progress.update("push", f"pushing {push_ref}")
            try:
                local.run(docker.push(str(push_ref), config_dir), timeout=PUSH_TIMEOUT,
                          what="docker push", on_line=push_line)
                progress.done("push", f"pushed {push_ref} ({len(pushed)} layer(s))")
            except RemoteError as exc:
                progress.done("push")
                raise RegistryError(
                    f"pushing {push_ref} failed: {_last_line(exc.output_tail)}; check that "
                    "the registry is up and the credentials are right (registry.username/"
                    "password or docker login)"
                ) from None

        digest = client.resolve(p.ref)
        if not digest:
            raise RegistryError(f"the registry does not list {p.ref} after the push; retry "
                                "the build")
        repo_digests = json.loads(
            local.run(docker.image_inspect(str(push_ref), "{{json .RepoDigests}}")).stdout
            or "[]"
        )
        if f"{push_ref.repository}@{digest}" not in (repo_digests or []):
            raise RegistryError(
                f"{p.ref} in the registry is {digest}, not the image just built ({image_id}); "
                "someone pushed the same tag at the same time. Investigate before deploying"
            )
    finally:
        if push_ref != p.ref:  # the loopback name (its port changes per run) is dropped
            local.run(docker.untag(str(push_ref)), check=False, what="docker image rm")
    record = BuildRecord(
        image=cfg.image, tag=p.ref.tag or "", digest=digest, git_sha=p.commit.sha,
        created=p.labels[f"{OCI}.created"], builder=socket.gethostname(), labels=p.labels,
    )
    buildrecords.write(record, directory)
    return record


@contextmanager
def _push_config(cfg: Config, local: LocalExecutor) -> Iterator[str | None]:
    """With registry credentials in the config, log in into a private, temporary Docker
    config (the password goes through stdin and is deleted afterwards); otherwise use the
    user's own Docker credentials."""
    if not (cfg.registry and cfg.registry.username):
        yield None
        return
    tmp = tempfile.mkdtemp(prefix="plainsail-docker-")
    try:
        os.chmod(tmp, 0o700)
        try:
            local.run(
                docker.login(cfg.registry_host, cfg.registry.username, tmp),
                input=cfg.registry.password.reveal(),
                what="docker login",
                timeout=60,
            )
        except RemoteError as exc:
            raise RegistryError(
                f"the registry {cfg.registry_host} refused the login of "
                f"{cfg.registry.username!r}: {_last_line(exc.output_tail)}; check "
                "registry.username and registry.password"
            ) from None
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_failure(exc: RemoteError, steps: BuildSteps, secrets: list[Secret]) -> BuildError:
    """The error of a failed `docker build`: one line naming the failing step and its
    telling line, then that step's last lines (redacted), where the person is looking."""
    code = "timed out" if exc.returncode is None else f"exit {exc.returncode}"
    where = f" at step {steps.step}" if steps.step else ""
    evidence = steps.evidence()
    last = _last_line("\n".join(evidence)) if evidence else _last_line(exc.output_tail)
    message = f"docker build failed{where} ({code}): {last}; nothing was pushed"
    if evidence:
        message += "\n" + "\n".join(f"  | {line}" for line in evidence)
    return BuildError(redact(message, secrets))


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _last_line(text: str) -> str:
    """The most telling line of docker's output: the last error line, else the last line
    that is not the legacy builder's "The command ... returned a non-zero code"."""
    clean = _ANSI.sub("", text)
    lines = [line.strip() for line in clean.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()
              and not line.startswith("The command ")]
    rest = [line for line in lines if not line.startswith("The command ")]
    pick = errors or rest or lines
    return pick[-1][:300] if pick else "no output"
