"""When a deploy takes a backup before its migrations.

- `before: migrations`: whenever migration files are pending, i.e. the schema gate found
  files new since the running version's revision. When the gate could not tell (it was
  skipped: no git history, nothing running yet, no lint extra), whenever migrations run.
- `before: destructive`: only when one of the lint's data-losing rules fires on the
  pending files (accepted findings count: an allow comment accepts the risk to the old
  version, not the loss of data). When the gate could not tell, whenever migrations run.
- `before: never`, no `backup` block, or no migration in this attempt: no backup.
"""

from __future__ import annotations

from plainsail.config.model import Config
from plainsail.deploy.schemagate import Gate

# The lint rules whose statements destroy stored data (the rest change names, defaults,
# constraints or locks, which the schema keeps undoable by hand).
DATA_LOSING = ("drop-column", "drop-table", "change-column-type")


def reason(cfg: Config, gate: Gate | None, migrating: bool) -> str | None:
    """Why this attempt takes a backup before migrating, or None when it takes none."""
    b = cfg.backup
    if b is None or b.before == "never" or not migrating:
        return None
    if gate is None or not gate.ran:
        return "the pending migrations are unknown (the schema gate did not run)"
    if not gate.files:
        return None
    if b.before == "migrations":
        return f"{len(gate.files)} pending migration file(s)"
    hits = [h for h in [*gate.findings, *gate.accepted] if h.rule in DATA_LOSING]
    if not hits:
        return None
    return f"{hits[0].where()} loses data" + (f" (and {len(hits) - 1} more)"
                                             if len(hits) > 1 else "")
