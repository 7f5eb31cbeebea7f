"""The schema gate: the seed's rule, "every migration must be backward-compatible with the
previous application version", enforced before a deploy and before a rollback.

- Deploy: the migration files the new version's revision has and the running version's
  revision had not are linted; a finding of a compatibility rule (`catalog.COMPATIBILITY`:
  what breaks the version that keeps running next to the new one, and after a rollback)
  refuses the deploy unless --allow-breaking-migrations. Locking hazards never refuse.
- Rollback to X: the files added between X's revision and the running revision were
  applied after X and stay applied (rollback never reverts migrations); their
  compatibility findings break X and refuse the rollback unless the same flag.

A version's revision is its image's `org.opencontainers.image.revision` label (Docker
copies image labels onto the container, so the host survey already has it), else the
build record's commit, else its tag (plainsail tags images with the commit's short SHA).
Files are read from git at those revisions, in the deployer's checkout: the migrations
folder is $PLAINSAIL_MIGRATIONS or `migrations` next to plainsail.yml, and the layout is
decided as `plainsail migrate` decides it. When the gate cannot run it says why and the
record keeps `{ran: false, reason}`.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plainsail.config.model import Config
from plainsail.errors import GitError, MigrationError, PlainsailError, one_line

FLAG = "--allow-breaking-migrations"
SHALLOW_FLAG = "--allow-shallow-clone"

SKIPPED, PASSED, REFUSED, ALLOWED = "skipped", "passed", "refused", "allowed"


class SchemaGateError(PlainsailError):
    """The schema gate refused a deploy or rollback (nothing was changed)."""


@dataclass(frozen=True)
class Version:
    """A version of the service as the gate sees it: its tag, digest and, when the host
    knows it, its image's revision label."""

    tag: str
    digest: str = ""
    revision: str = ""


@dataclass(frozen=True)
class Hit:
    file: str  # relative to the repository's top
    line: int
    rule: str
    message: str
    reason: str | None = None  # the allow comment's reason, for an accepted finding

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "line": self.line, "rule": self.rule,
                               "message": self.message}
        if self.reason is not None:
            out["accepted"] = self.reason
        return out

    def where(self) -> str:
        return f"{self.file}:{self.line} {self.rule}"


@dataclass
class Gate:
    """The gate's verdict for one attempt (see `verdict`)."""

    kind: str  # deploy or rollback
    ran: bool
    reason: str = ""  # why it was skipped
    allowed: bool = False  # --allow-breaking-migrations was given
    shallow: bool = False  # skipped because the checkout is a shallow clone
    folder: str = ""
    old: list[dict[str, str]] = field(default_factory=list)  # the version(s) it protects
    new: list[dict[str, str]] = field(default_factory=list)  # where the files come from
    files: list[str] = field(default_factory=list)  # the files checked
    findings: list[Hit] = field(default_factory=list)  # compatibility findings
    accepted: list[Hit] = field(default_factory=list)  # ... accepted by an allow comment

    @property
    def verdict(self) -> str:
        if not self.ran:
            return SKIPPED
        if not self.findings:
            return PASSED
        return ALLOWED if self.allowed else REFUSED

    @property
    def refuses(self) -> bool:
        return self.verdict == REFUSED

    def record(self) -> dict[str, Any]:
        if not self.ran:
            out: dict[str, Any] = {"ran": False, "reason": self.reason, "verdict": SKIPPED,
                                   "allow_breaking_migrations": self.allowed}
            if self.shallow:
                out["shallow_clone"] = True
            return out
        return {
            "ran": True, "verdict": self.verdict, "kind": self.kind, "folder": self.folder,
            "old": self.old, "new": self.new, "files": self.files,
            "findings": [h.to_json() for h in self.findings],
            "accepted": [h.to_json() for h in self.accepted],
            "allow_breaking_migrations": self.allowed,
        }

    def _old_tags(self) -> str:
        return ", ".join(v["tag"] for v in self.old) or "the previous version"

    def summary(self) -> str:
        """One line for the progress output and the dry-run plan."""
        if not self.ran:
            return f"schema gate skipped: {self.reason}"
        files = (f"{len(self.files)} migration file(s) ({', '.join(self.files)})"
                 if self.files else "no new migration file")
        since = ("new since " + self._old_tags() if self.kind == "deploy"
                 else "applied since " + self._old_tags())
        if not self.findings:
            accepted = (f"; {len(self.accepted)} accepted with 'plainsail: allow'"
                        if self.accepted else "")
            return f"schema gate passed: {files} {since}, nothing breaks it{accepted}"
        first = self.findings[0].where()
        more = f" and {len(self.findings) - 1} more" if len(self.findings) > 1 else ""
        if self.allowed:
            return (f"schema gate: {first}{more} break(s) {self._old_tags()}; going ahead "
                    f"because of {FLAG}")
        return f"schema gate REFUSES: {first}{more} break(s) {self._old_tags()}"

    def shallow_refusal(self) -> str:
        """The one line of an attempt stopped in CI because the gate could not run in a
        shallow clone."""
        return (f"{self.summary()}; in CI that is an error, because the deploy would go "
                "ahead unchecked: check out the whole history (actions/checkout with "
                f"fetch-depth: 0), or pass {SHALLOW_FLAG} to deploy without the gate")

    def refusal(self) -> str:
        """The one line of a refused attempt: file:line, rule, and the way out."""
        h = self.findings[0]
        more = (f" (and {len(self.findings) - 1} more finding(s), listed above)"
                if len(self.findings) > 1 else "")
        if self.kind == "rollback":
            return (f"schema gate: {h.where()} ({h.message}) was applied after "
                    f"{self._old_tags()} and breaks it{more}; rollback never reverts "
                    f"migrations, so roll forward with a fix instead, or pass {FLAG} to roll "
                    "back anyway")
        return (f"schema gate: {h.where()} ({h.message}) breaks {self._old_tags()}, which "
                f"keeps running against the new schema during the deploy and after a "
                f"rollback{more}; make the migration backward-compatible (plainsail lint "
                f"migrations says how), or pass {FLAG} to deploy anyway")


# ---------------------------------------------------------------- the gate


def lint_available() -> bool:
    return importlib.util.find_spec("pglast") is not None


def migrations_folder(cfg: Config, environ: Mapping[str, str]) -> Path:
    """$PLAINSAIL_MIGRATIONS (relative to the working directory, as `plainsail migrate`
    and `lint` read it), else `migrations` next to plainsail.yml."""
    given = environ.get("PLAINSAIL_MIGRATIONS")
    return Path(given).resolve() if given else (cfg.root / "migrations").resolve()


def check(cfg: Config, *, kind: str, target: Version, running: Sequence[Version],
          allow: bool = False, environ: Mapping[str, str] | None = None) -> Gate:
    """Run the gate for a deploy (`kind` deploy) or a rollback to `target`; never raises
    for a gate that cannot run (the verdict is then `skipped`, with the reason)."""
    environ = environ or {}
    gate = Gate(kind=kind, ran=False, allowed=allow)
    if kind == "recover":
        gate.reason = ("a recovery puts back the last known-good version as it ran before; "
                       "it is not gated")
        return gate
    running = _distinct(running)
    if not running:
        gate.reason = "nothing runs yet, so no version can be broken"
        return gate
    if not lint_available():
        gate.reason = ("the lint extra is not installed (pip install 'plainsail[lint]'), "
                       "so the migrations could not be checked")
        return gate
    folder = migrations_folder(cfg, environ)
    if not folder.is_dir():
        gate.reason = (f"no migrations folder {folder} here; set $PLAINSAIL_MIGRATIONS to the "
                       "folder of your migrations to gate them")
        return gate
    try:
        top = _toplevel(folder)
    except GitError as exc:
        gate.reason = one_line(exc)
        return gate
    rel = folder.relative_to(top).as_posix() if folder != top else "."
    gate.folder = rel
    try:
        revs = {v: _revision(cfg, top, v) for v in [target, *running]}
    except GitError as exc:
        gate.reason = one_line(exc)
        if _is_shallow(top):
            gate.shallow = True
            gate.reason = f"{top} is a shallow clone: {gate.reason}"
        return gate
    # (protected version, version whose files are read): a deploy protects what runs now
    # from the target's files; a rollback protects the target from the running files.
    pairs = ([(old, target) for old in running] if kind == "deploy"
             else [(target, new) for new in running])
    protected = _distinct([p[0] for p in pairs])
    sources_of = _distinct([p[1] for p in pairs])
    gate.old = [{"tag": v.tag, "revision": revs[v]} for v in protected]
    gate.new = [{"tag": v.tag, "revision": revs[v]} for v in sources_of]
    layout = _layout(cfg, environ)
    found: dict[tuple[str, int, str], Hit] = {}
    accepted: dict[tuple[str, int, str], Hit] = {}
    files: list[str] = []
    try:
        for new in sources_of:
            bases = [revs[old] for old, n in pairs if n == new]
            checked, hits = _lint_new_files(top, rel, revs[new], bases, layout)
            files += [f for f in checked if f not in files]
            for h in hits:
                (accepted if h.reason is not None else found).setdefault(
                    (h.file, h.line, h.rule), h)
    except (GitError, MigrationError, OSError, tarfile.TarError) as exc:
        gate.reason = f"the migrations could not be read from git ({one_line(exc)})"
        return gate
    gate.ran = True
    gate.files = files
    gate.findings = list(found.values())
    gate.accepted = list(accepted.values())
    return gate


def _distinct(versions: Sequence[Version]) -> list[Version]:
    out: list[Version] = []
    for v in versions:
        if v not in out:
            out.append(v)
    return out


def _layout(cfg: Config, environ: Mapping[str, str]) -> str | None:
    from plainsail.migrations import layouts

    forced = environ.get(layouts.ENV) or (cfg.migrate.layout if cfg.migrate else None)
    return layouts.choose(None, forced)


def _lint_new_files(top: Path, rel: str, head: str, bases: list[str],
                    layout: str | None) -> tuple[list[str], list[Hit]]:
    """Lint the migrations of `rel` at `head` that are absent at every one of `bases`
    (earlier files are read too, unreported: they tell what a column's type and default
    are). Returns (files reported, compatibility findings)."""
    from plainsail.lint.batch import lint_sources
    from plainsail.lint.catalog import COMPATIBILITY
    from plainsail.lint.sources import Source
    from plainsail.migrations import layouts

    known = [_names_at(top, base, rel) for base in bases if base != head]
    if not known:
        return [], []
    with tempfile.TemporaryDirectory(prefix="plainsail-gate-") as tmp:
        dest = Path(tmp)
        if not _extract(top, head, rel, dest):
            return [], []
        sources: list[Source] = []
        for f in layouts.discover(dest / rel, layout):
            name = f.path.relative_to(dest).as_posix()
            new = any(name not in names for names in known)
            sources.append(Source(name, f.text, f.first_line, f.marked, report=new,
                                  path=f.path))
        findings = lint_sources(sources)
    hits = [Hit(f.path, f.line, f.rule, f.message, f.suppressed) for f in findings
            if f.rule in COMPATIBILITY]
    return [s.name for s in sources if s.report], hits


# ---------------------------------------------------------------- git


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    from plainsail.supply.git import git

    return git(args, cwd, check=False)


def _toplevel(folder: Path) -> Path:
    proc = _git(["rev-parse", "--show-toplevel"], folder)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise GitError(f"{folder} is not inside a git repository, so the migrations new "
                       "since the running version cannot be told; deploy from the "
                       "repository's checkout to gate them")
    return Path(proc.stdout.strip()).resolve()


def _is_shallow(top: Path) -> bool:
    return _git(["rev-parse", "--is-shallow-repository"], top).stdout.strip() == "true"


def _commit(top: Path, candidate: str) -> str | None:
    if not candidate or candidate.startswith("-"):
        return None
    proc = _git(["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], top)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _revision(cfg: Config, top: Path, v: Version) -> str:
    """The full commit of a version: its image label, its build record, or its tag."""
    from plainsail.supply import buildrecords

    candidates = [v.revision]
    try:
        rec = buildrecords.find(cfg, v.tag)
    except PlainsailError:
        rec = None
    if rec is not None and (not v.digest or rec.digest == v.digest):
        candidates.append(rec.git_sha)
    candidates.append(v.tag.split("-dirty-", 1)[0])
    for c in candidates:
        sha = _commit(top, c)
        if sha:
            return sha
    named = v.revision or v.tag
    raise GitError(f"the revision of {v.tag} ({named}) is unknown to git in {top}; fetch it "
                   "(in CI, check out with full history, e.g. actions/checkout "
                   "fetch-depth: 0) to gate the migrations")


def _names_at(top: Path, rev: str, rel: str) -> set[str]:
    proc = _git(["ls-tree", "-r", "-z", "--name-only", rev, "--", rel], top)
    if proc.returncode != 0:
        raise GitError(f"git ls-tree {rev[:12]} failed: {proc.stderr.strip() or 'no output'}")
    return {n for n in proc.stdout.split("\0") if n}


def _extract(top: Path, rev: str, rel: str, dest: Path) -> bool:
    """Write the folder `rel` as it is at `rev` under `dest`; False when it is not there."""
    if not _names_at(top, rev, rel):
        return False
    try:
        proc = subprocess.run(["git", "archive", "--format=tar", rev, "--", rel], cwd=top,
                              capture_output=True, check=False, timeout=120)
    except FileNotFoundError:
        raise GitError("git is not installed; install it (apt-get install git)") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip() or "no output"
        raise GitError(f"git archive {rev[:12]} failed: {detail}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return (dest / rel).is_dir()
