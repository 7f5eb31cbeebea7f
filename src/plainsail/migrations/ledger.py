"""Compare what the database says was applied with the files on disk.

Migrations are forward-only: an applied file must never change or disappear, and a new
file must sort after every applied one, or the history in each environment would differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from plainsail.migrations.files import MigrationFile, shown

TABLE = "plainsail_migrations"
DEFAULT_SCHEMA = "public"  # PostgreSQL: the schema of the ledger (migrate.schema)


@dataclass(frozen=True)
class AppliedRow:
    """One bookkeeping row, written in the same transaction as the file it records."""

    version: str
    name: str
    checksum: str
    applied_at: str
    execution_ms: float
    applied_by: str

    def __post_init__(self) -> None:
        # An earlier version recorded names raw; they are compared and printed escaped.
        object.__setattr__(self, "name", shown(self.name))
        object.__setattr__(self, "version", shown(self.version))


@dataclass(frozen=True)
class Ledger:
    applied: list[AppliedRow]
    pending: list[MigrationFile]
    problems: list[str]


def compare(files: list[MigrationFile], applied: list[AppliedRow]) -> Ledger:
    """Pending files in order (`files` is in run order), and every reason to refuse
    running them. A row matches the file of the same name, else of the same version (so
    rows recorded under an older version rule still match their file)."""
    by_version = {f.version: f for f in files}
    by_name = {f.name: f for f in files}
    done: set[str] = set()
    problems: list[str] = []
    position = {f.name: i for i, f in enumerate(files)}
    last: tuple[int, AppliedRow] | None = None
    for row in applied:
        f = by_name.get(row.name) or by_version.get(row.version)
        if f is not None:
            done.add(f.name)
            if last is None or position[f.name] > last[0]:
                last = (position[f.name], row)
        if f is None:
            problems.append(
                f"{row.name} was applied on {row.applied_at} but is no longer in the "
                "migrations folder; restore it (migrations are forward-only: undo a change "
                "with a new file)"
            )
        elif f.name != row.name:
            problems.append(
                f"version {row.version} was applied as {row.name} but the file is now named "
                f"{f.name}; rename it back"
            )
        elif f.checksum != row.checksum:
            problems.append(
                f"{f.name} changed after it was applied on {row.applied_at} (checksum "
                f"{row.checksum[:12]} recorded, {f.checksum[:12]} now); restore the applied "
                "text and put the change in a new file"
            )
    pending = [f for f in files if f.name not in done]
    if last is not None:
        for f in pending:
            if position[f.name] < last[0]:
                problems.append(
                    f"{f.name} is not applied but sorts before {last[1].name}, which is; "
                    f"rename it so it sorts after {last[1].name}"
                )
    # One order for both lists: the run order of the files; rows whose file is gone last.
    def run_order(r: AppliedRow) -> tuple[int, str]:
        f = by_name.get(r.name) or by_version.get(r.version)
        return (position[f.name] if f else len(files), r.name)

    ordered = sorted(applied, key=run_order)
    return Ledger(applied=ordered, pending=pending, problems=problems)
