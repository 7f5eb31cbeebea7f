"""How projects keep their migrations, and which files of a folder run in which order.

Standard library only (runs inside application containers). Layouts:

- `flat`: `NNNN_name.sql` files (plainsail's own). The version is the leading number
  (`0007` in `0007_add_email.sql`; `2019-02-26-002946` in `2019-02-26-002946_x.sql`);
  numbered files run in numeric order, other names in name order.
- `diesel`: `<timestamp>_<name>/up.sql` (down.sql is never run).
- `prisma`: `<timestamp>_<name>/migration.sql`.
- `golang-migrate`: `<version>_<name>.up.sql` (`.down.sql` is never run).
- `dbmate`: `<version>_<name>.sql` with `-- migrate:up` and `-- migrate:down` sections;
  only the up section runs (`-- migrate:up transaction:false` marks it no-transaction).
- `flyway`: `V<version>__<description>.sql` (`V1_1__x.sql` is version 1.1); repeatable
  `R__` files are refused, undo `U__` files are never run.

The layout is detected from the folder, or forced with --layout,
$PLAINSAIL_MIGRATIONS_LAYOUT or `migrate.layout` in plainsail.yml.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from plainsail.errors import MigrationError
from plainsail.migrations.files import MigrationFile, checksum_of, read_file, shown

FLAT = "flat"
DIESEL = "diesel"
PRISMA = "prisma"
GOLANG_MIGRATE = "golang-migrate"
DBMATE = "dbmate"
FLYWAY = "flyway"
LAYOUTS = (FLAT, DIESEL, PRISMA, GOLANG_MIGRATE, DBMATE, FLYWAY)
ENV = "PLAINSAIL_MIGRATIONS_LAYOUT"

_OLD_VERSION = re.compile(r"^([^_\-.]+)[_\-]?")
_NUMBERED = re.compile(r"^(\d+(?:[-_.]\d+)*)(?=[-_.]|$)")
_DIGITS = re.compile(r"\d+")
_GOLANG = re.compile(r"^(\d+)_.*\.up\.sql$")
_FLYWAY = re.compile(r"^V(\d+(?:[._]\d+)*)__.+\.sql$")
_FLYWAY_OTHER = re.compile(r"^([RUB])(\d[\w.]*)?__.+\.sql$")
_DBMATE_UP = re.compile(r"^--[ \t]*migrate:up\b(.*)$", re.M)
_DBMATE_DOWN = re.compile(r"^--[ \t]*migrate:down\b.*$", re.M)
_DOWN = re.compile(r"(^|[._])down\.sql$")
# goose keeps flat files with `-- +goose Up` and `-- +goose Down` sections.
_GOOSE_UP = re.compile(r"^--[ \t]*\+goose[ \t]+Up\b.*$", re.M | re.I)
_GOOSE_DOWN = re.compile(r"^--[ \t]*\+goose[ \t]+Down\b.*$", re.M | re.I)
_FLYWAY_NO_TRANSACTION = re.compile(r"^[ \t]*executeInTransaction[ \t]*=[ \t]*false\b",
                                    re.M | re.I)
_DIESEL_NO_TRANSACTION = re.compile(r"^[ \t]*run_in_transaction[ \t]*=[ \t]*false\b", re.M)


def choose(flag: str | None, configured: str | None = None) -> str | None:
    """The forced layout: --layout, else $PLAINSAIL_MIGRATIONS_LAYOUT, else
    `migrate.layout` from plainsail.yml; None means detect it."""
    for value, where in ((flag, "--layout"), (os.environ.get(ENV), f"${ENV}"),
                         (configured, "migrate.layout")):
        if value:
            value = value.strip().lower()
            if value == "auto":
                return None
            if value not in LAYOUTS:
                raise MigrationError(f"{where}: unknown layout {value!r}; use one of "
                                     f"{', '.join(LAYOUTS)} (or auto to detect it)")
            return value
    return None


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(d) for d in _DIGITS.findall(version))


def detect(folder: Path) -> str:
    """The layout of `folder`, from the names (and, for dbmate, the text) of its files."""
    found: dict[str, str] = {}
    listing = [(name, is_dir) for name, _, is_dir in _entries(folder)]  # sorted by name
    sql = [n for n, is_dir in listing if not is_dir and n.endswith(".sql")]
    base = str(folder)
    for name in (n for n, is_dir in listing if is_dir):
        if os.path.isfile(os.path.join(base, name, "up.sql")):
            found.setdefault(DIESEL, f"{name}/up.sql")
        elif os.path.isfile(os.path.join(base, name, "migration.sql")):
            found.setdefault(PRISMA, f"{name}/migration.sql")
    for name in sql:
        if _FLYWAY.match(name) or _FLYWAY_OTHER.match(name):
            found.setdefault(FLYWAY, name)
        elif name.endswith((".up.sql", ".down.sql")):
            found.setdefault(GOLANG_MIGRATE, name)
    if not found and sql:
        # Every dbmate file starts with its '-- migrate:up' section: the first one tells.
        with open(os.path.join(base, sql[0]), "rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="replace")
        if _DBMATE_UP.search(head):
            found[DBMATE] = sql[0]
    if not found:
        return FLAT
    if len(found) > 1:
        seen = "; ".join(f"{k} ({shown(v)})" for k, v in found.items())
        raise MigrationError(
            f"{folder} mixes migration layouts: {seen}; keep one layout per folder, or "
            f"force one with --layout or ${ENV} ({', '.join(LAYOUTS)})")
    return next(iter(found))


def discover(folder: Path, layout: str | None = None) -> list[MigrationFile]:
    """Every migration of `folder` that runs, in the order it runs. Refuses names that
    collide or that the layout cannot order, listing all of them."""
    if not folder.is_dir():
        raise MigrationError(
            f"migrations folder {folder} does not exist; create it, or point --dir or "
            "$PLAINSAIL_MIGRATIONS at the folder holding your .sql files"
        )
    layout = layout or detect(folder)
    reader = {FLAT: _flat, DIESEL: _folders, PRISMA: _folders, GOLANG_MIGRATE: _golang,
              DBMATE: _dbmate, FLYWAY: _flyway}[layout]
    files = reader(folder, layout)
    _refuse_collisions(files, layout)
    return sorted(files, key=lambda f: f.order)


def _refuse_collisions(files: list[MigrationFile], layout: str) -> None:
    groups: dict[object, list[str]] = defaultdict(list)
    for f in files:
        groups[f.order[:2]].append(f.name)
    clashes = [sorted(names) for names in groups.values() if len(names) > 1]
    if clashes:
        listed = "; ".join(" and ".join(names) for names in sorted(clashes))
        raise MigrationError(
            f"{len(clashes)} group(s) of migrations share a version ({layout} layout), so "
            f"their order is ambiguous: {listed}; rename them so each has its own version "
            "(e.g. the next free number, zero-padded like the others)")


def flat_version(stem: str) -> str:
    """The version of a flat file: the leading number, separators and all, when a number
    follows a separator (`2019-02-26-002946`); otherwise the text before the first `_` or
    `-`, exactly as plainsail has always recorded it (`0007` for `0007_add_email`)."""
    m = _NUMBERED.match(stem)
    if m and re.match(r"\d+[-_.]\d", m.group(1)):
        return m.group(1)
    old = _OLD_VERSION.match(stem)
    return old.group(1) if old else stem


def _with(f: MigrationFile, **changes: object) -> MigrationFile:
    return f.replace(**changes)


def _entries(folder: Path) -> list[tuple[str, bool, bool]]:
    """(name, is a file, is a folder) of every entry of `folder`, sorted by name; one
    directory read, no stat per entry where the file system reports the type."""
    with os.scandir(folder) as it:
        return sorted((e.name, e.is_file(), e.is_dir()) for e in it)


def _flat(folder: Path, layout: str) -> list[MigrationFile]:
    out = []
    for name, is_file, _ in _entries(folder):
        if not is_file or not name.endswith(".sql") or _DOWN.search(name):
            continue
        stem = name[:-4]
        version = flat_version(stem)
        numbers = _numbers(version) if version[:1].isdigit() else ()
        # Numbered files first, in numeric order (so 0002 runs before 00010); then other
        # names in name order.
        order = (0, numbers, name) if numbers else (1, (version,), name)
        out.append(_goose_up(read_file(folder / name, version=version, order=order)))
    return out


def _goose_up(f: MigrationFile) -> MigrationFile:
    """A goose file (`-- +goose Up` / `-- +goose Down`) runs its up section only."""
    up = _GOOSE_UP.search(f.text) if "+goose" in f.text else None
    return _up_section(f, up, _GOOSE_DOWN) if up else f


def _folders(folder: Path, layout: str) -> list[MigrationFile]:
    script = "up.sql" if layout == DIESEL else "migration.sql"
    out = []
    entries = _entries(folder)
    stray = [name for name, is_file, _ in entries if is_file and name.endswith(".sql")]
    if stray:
        raise MigrationError(
            f"{folder}/{shown(stray[0])} is not part of the {layout} layout (each migration is a "
            f"folder holding {script}); move it into its own migration folder")
    base = str(folder)
    for name, _, is_dir in entries:
        if not is_dir:
            continue
        version = name.split("_", 1)[0]
        numbers = _numbers(version)
        if not os.path.isfile(os.path.join(base, name, script)):
            d = folder / name
            if any(d.glob("*.sql")):
                raise MigrationError(f"{shown(str(d))} has no {script}; every {layout} "
                                     "migration folder needs one")
            continue
        if not numbers:
            raise MigrationError(f"{shown(name)}: a {layout} migration folder is named "
                                 "<timestamp>_<name>; rename it")
        f = read_file(folder / name / script, name=name, version=version,
                      order=(0, numbers, name))
        if layout == DIESEL and _diesel_no_transaction(folder / name):
            f = _with(f, marked=True)
        out.append(f)
    return out


def _golang(folder: Path, layout: str) -> list[MigrationFile]:
    out = []
    for p in sorted(folder.glob("*.sql"), key=lambda p: p.name):
        if not p.is_file() or p.name.endswith(".down.sql"):
            continue
        m = _GOLANG.match(p.name)
        if not m:
            raise MigrationError(f"{shown(p.name)}: a golang-migrate file is named "
                                 "<version>_<name>.up.sql (or .down.sql); rename it")
        out.append(read_file(p, version=m.group(1), order=(0, _numbers(m.group(1)), p.name)))
    return out


def _dbmate(folder: Path, layout: str) -> list[MigrationFile]:
    out = []
    for p in sorted(folder.glob("*.sql"), key=lambda p: p.name):
        if not p.is_file():
            continue
        version = p.stem.split("_", 1)[0]
        if not version.isdigit():
            raise MigrationError(f"{shown(p.name)}: a dbmate file is named <version>_<name>.sql; "
                                 "rename it")
        out.append(_dbmate_file(read_file(p)))
    return out


def _dbmate_file(f: MigrationFile) -> MigrationFile:
    version = f.path.stem.split("_", 1)[0]
    up = _DBMATE_UP.search(f.text)
    if not up:
        raise MigrationError(f"{f.name} has no '-- migrate:up' line; dbmate runs only "
                             "the section below it")
    return _with(_up_section(f, up, _DBMATE_DOWN), version=version,
                 marked=f.marked or bool(re.search(r"\btransaction:false\b", up.group(1))),
                 order=(0, (int(version),), f.name))


def _up_section(f: MigrationFile, up: re.Match[str], down_line: re.Pattern[str]
                ) -> MigrationFile:
    """Only the up section of a file with up and down sections (dbmate, goose) runs; its
    checksum covers only that section, and its line numbers stay the file's."""
    down = down_line.search(f.text, up.end())
    end = down.start() if down else len(f.text)
    head = "\n" * f.text.count("\n", 0, up.end())  # blank everything before the section
    body = f.text[up.end():end]
    return _with(f, text=head + body, checksum=checksum_of(body.encode("utf-8")),
                 first_line=f.text.count("\n", 0, up.end()) + 2)


def _diesel_no_transaction(migration: Path) -> bool:
    """Diesel's own marker: `run_in_transaction = false` in the migration's metadata.toml."""
    try:
        with open(migration / "metadata.toml", encoding="utf-8") as fh:
            return bool(_DIESEL_NO_TRANSACTION.search(fh.read(65536)))
    except (OSError, UnicodeDecodeError):
        return False


def _flyway(folder: Path, layout: str) -> list[MigrationFile]:
    out = []
    for p in sorted(folder.rglob("*.sql"), key=lambda p: p.name):
        if not p.is_file():
            continue
        m = _FLYWAY.match(p.name)
        if not m:
            other = _FLYWAY_OTHER.match(p.name)
            if other and other.group(1) == "U":
                continue  # undo migrations never run: forward-only
            if other and other.group(1) == "R":
                raise MigrationError(
                    f"{shown(p.name)} is a repeatable Flyway migration, which plainsail does not "
                    "run (every migration runs once, forward-only); put its current text "
                    "in a new V<version>__ file and remove it")
            raise MigrationError(f"{shown(p.name)}: a Flyway migration is named "
                                 "V<version>__<description>.sql; rename it")
        version = m.group(1).replace("_", ".")
        f = read_file(p, version=version, order=(0, _numbers(version), p.name))
        if _flyway_no_transaction(p):
            f = _with(f, marked=True)
        out.append(f)
    return out


def _flyway_no_transaction(script: Path) -> bool:
    """Flyway's own marker: `executeInTransaction=false` in the script's `.sql.conf`."""
    try:
        with open(f"{script}.conf", encoding="utf-8") as fh:
            return bool(_FLYWAY_NO_TRANSACTION.search(fh.read(65536)))
    except (OSError, UnicodeDecodeError):
        return False


def read_one(path: Path) -> MigrationFile:
    """One file named on its own: a dbmate file (with `-- migrate:up`) is read as dbmate
    reads it, a goose file as goose does, anything else whole."""
    f = read_file(path)
    if _DBMATE_UP.search(f.text) and path.stem.split("_", 1)[0].isdigit():
        return _dbmate_file(f)
    return _goose_up(f)
