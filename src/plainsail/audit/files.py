"""The Dockerfile and plainsail.yml rules (warnings)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from plainsail.audit import yamldoc
from plainsail.audit.rules import Finding
from plainsail.audit.yamldoc import YMap, get, key_line

_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.I)
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?", re.I)
MAX_DOCKERFILE = 4 * 1024 * 1024  # larger ones are refused (unreadable-file), not read
LIVENESS = {"/", "/ping", "/healthz", "/livez", "/alive", "/liveness", "/live", "/heartbeat"}


def dockerfile(path: str, text: str) -> Iterator[Finding]:
    args: dict[str, str] = {}
    stages: set[str] = set()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, parts = i + 1, [lines[i].rstrip()]
        while parts[-1].endswith("\\") and i + 1 < len(lines):  # joined once: linear time
            i += 1
            parts[-1] = parts[-1][:-1]
            parts.append(lines[i].strip())
        line = " ".join(parts)
        i += 1
        m = _ARG.match(line)
        if m and m.group(2) is not None:
            args[m.group(1)] = m.group(2).strip("'\"")
            continue
        m = _FROM.match(line)
        if not m:
            continue
        image = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}?",
                       lambda v: args.get(v.group(1), v.group(2) or v.group(0)), m.group(1))
        if m.group(2):
            stages.add(m.group(2).lower())
        if image.lower() == "scratch" or image.lower() in stages or "@sha256:" in image \
                or "$" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else "latest (no tag)"
        yield Finding("unpinned-base-image", path, number,
                      f"FROM {image} uses tag {tag}, which can move: the same Dockerfile "
                      "builds a different image tomorrow")


_MIGRATION_DIRS = ("migrations", "db/migrate", "db/migrations", "alembic/versions",
                   "prisma/migrations", "src/migrations", "database/migrations")


def _child(folder: Path, name: str) -> Path | None:
    """`folder/name`, matching the name in any case (EF Core's `Migrations`)."""
    exact = folder / name
    if exact.is_dir():
        return exact
    try:
        return next((p for p in folder.iterdir() if p.name.lower() == name and p.is_dir()),
                    None)
    except OSError:
        return None


def migrations_folder(root: Path) -> Path | None:
    """The repository's migrations folder, if it has one (names matched in any case)."""
    for rel in _MIGRATION_DIRS:
        p: Path | None = root
        for part in rel.split("/"):
            p = _child(p, part) if p is not None else None
        if p is not None and any(p.iterdir()):
            return p
    skip = {".git", "node_modules", ".venv", "venv", "vendor", "site-packages", "tests",
            "bin", "obj"}
    # Django keeps one per app (project/apps/<app>/migrations); EF Core, `Migrations`
    nested = [p for pattern in ("*/[mM]igrations", "*/*/[mM]igrations",
                                "*/*/*/[mM]igrations") for p in sorted(root.glob(pattern))]
    for p in nested:
        if p.is_dir() and not (skip & {q.lower() for q in p.relative_to(root).parts}) \
                and any(p.iterdir()):
            return p
    return None


def plainsail_yml(path: str, text: str, has_migrations: bool) -> Iterator[Finding]:
    data = yamldoc.load(text)
    if not isinstance(data, YMap):
        return
    first = min(data.key_lines.values(), default=1)
    signing = get(data, "signing")
    if str(get(signing, "verify") or "").lower() in ("false", "no", "off"):
        yield Finding("signature-verification-off", path, key_line(signing, "verify"),
                      "signing.verify is false: deploys run images nobody proved were built "
                      "by your pipeline")
    health = get(data, "health")
    hpath = str(get(health, "path") or "/health")
    if hpath.split("?")[0].rstrip("/") in {p.rstrip("/") for p in LIVENESS} | {""} and \
            get(health, "body_contains") is None:
        line = key_line(health, "path") if isinstance(health, YMap) and "path" in health \
            else data.key_lines.get("health", first)
        yield Finding("liveness-only-health-path", path, line,
                      f"health.path {hpath} is a liveness endpoint: the gate passes while "
                      "the database is down")
    if has_migrations and get(data, "migrate") is None:
        yield Finding("migrations-without-migrate", path, data.key_lines.get("service", first),
                      "the repository has a migrations folder but plainsail.yml has no "
                      "migrate, so deploys never apply them")
    if str(get(data, "on_failure") or "") == "stop" and not get(data, "notify"):
        yield Finding("stop-without-notify", path, data.key_lines.get("on_failure", first),
                      "on_failure: stop leaves a failed deploy stopped and tells no one")
