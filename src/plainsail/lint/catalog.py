"""The lint's rules (what each finds, why it matters, what to write instead) and the small
types findings are made of. No parser here: reports and cached runs need only this."""

from __future__ import annotations

from plainsail.record import Record

ERROR = "error"
WARNING = "warning"

_COMPAT = ("Rollback does not roll back migrations, and during a deploy the old app keeps "
           "running against the new schema, so every migration must be backward-compatible "
           "with the previous application version. ")
_LOCK = ("Until it finishes, the table is locked and the running app's queries queue behind "
         "it, so a deploy turns into an outage.")


class Rule(Record):
    _fields = ("id", "severity", "title", "why", "instead")

    def __init__(self, id: str, severity: str, title: str, why: str, instead: str) -> None:
        self.id, self.severity, self.title = id, severity, title
        self.why, self.instead = why, instead


RULES: dict[str, Rule] = {r.id: r for r in [
    Rule("drop-column", ERROR, "Dropping a column",
         _COMPAT + "The old app still selects and inserts the column; it fails on every such "
         "query the moment the column is gone.",
         "Three deploys: ship code that no longer reads or writes the column, then drop it in "
         "a later migration (accept it with '-- plainsail: allow drop-column <reason>')."),
    Rule("drop-table", ERROR, "Dropping a table",
         _COMPAT + "The old app still queries the table and fails as soon as it is gone.",
         "First deploy code that no longer uses the table; drop it in a later migration."),
    Rule("rename-column", ERROR, "Renaming a column",
         _COMPAT + "The old app still uses the old name and fails immediately.",
         "Add the new column, write both (or a trigger), backfill, switch reads, then drop the "
         "old column in a later deploy."),
    Rule("rename-table", ERROR, "Renaming a table",
         _COMPAT + "The old app still uses the old name and fails immediately.",
         "Create the new table (or a view with the new name), move the app over, then drop "
         "the old name in a later deploy."),
    Rule("change-column-type", ERROR, "Changing a column's type",
         _COMPAT + "The old app may send values the new type rejects; and most type changes "
         "rewrite the whole table under an ACCESS EXCLUSIVE lock. " + _LOCK,
         "Add a column of the new type, backfill it in batches, switch the app, drop the old "
         "column later."),
    Rule("add-not-null-column-without-default", ERROR, "Adding a NOT NULL column without a "
         "default",
         _COMPAT + "The old app's INSERTs do not name the column and fail with a not-null "
         "violation (and the ALTER itself fails on a non-empty table).",
         "Add the column with a constant DEFAULT (PostgreSQL 11+ does not rewrite), or add it "
         "nullable, backfill, then enforce NOT NULL in a later deploy."),
    Rule("set-not-null", ERROR, "Setting NOT NULL on an existing column",
         _COMPAT + "The old app may still write NULLs and its writes start failing; the "
         "ALTER also scans the whole table under an ACCESS EXCLUSIVE lock. " + _LOCK,
         "After every running version writes the column: ADD CONSTRAINT ... CHECK (col IS "
         "NOT NULL) NOT VALID; VALIDATE CONSTRAINT in a separate step; then SET NOT NULL "
         "(PostgreSQL 12+ uses the valid check and skips the scan)."),
    Rule("drop-default", ERROR, "Dropping a column default",
         _COMPAT + "The old app's INSERTs may rely on the default; without it they store NULL "
         "or fail a NOT NULL constraint.",
         "Drop the default only after the app that always supplies the value runs everywhere."),
    Rule("index-without-concurrently", ERROR, "Creating an index without CONCURRENTLY",
         "CREATE INDEX blocks every write to the table for as long as the build takes. "
         + _LOCK,
         "CREATE INDEX CONCURRENTLY alone in a file of its own, which then runs outside a "
         "transaction (fine without it on a table created in the same file)."),
    Rule("drop-index-without-concurrently", WARNING, "Dropping an index without "
         "CONCURRENTLY",
         "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table. " + _LOCK,
         "DROP INDEX CONCURRENTLY alone in a file of its own, which then runs outside a "
         "transaction."),
    Rule("constraint-without-not-valid", ERROR, "Adding a foreign key or check constraint "
         "without NOT VALID",
         "Validating the constraint scans the whole table (and for a foreign key also locks "
         "the referenced table) while writes are blocked. " + _LOCK,
         "ADD CONSTRAINT ... NOT VALID, then ALTER TABLE ... VALIDATE CONSTRAINT in a later "
         "statement or file; validation then takes only a SHARE UPDATE EXCLUSIVE lock."),
    Rule("unique-without-index", ERROR, "Adding a UNIQUE or PRIMARY KEY constraint that "
         "builds its own index",
         "The constraint builds its index while writes to the table are blocked. " + _LOCK,
         "CREATE UNIQUE INDEX CONCURRENTLY first (no-transaction file), then ADD CONSTRAINT "
         "... UNIQUE USING INDEX (or PRIMARY KEY USING INDEX)."),
    Rule("volatile-default", ERROR, "Adding a column whose default must be computed per row",
         "A volatile default (random(), gen_random_uuid(), clock_timestamp(), a serial's "
         "nextval), an identity or a stored generated column makes PostgreSQL rewrite every "
         "row under an ACCESS EXCLUSIVE lock. " + _LOCK,
         "Add the column without a default (or with a constant one), set the default in a "
         "separate statement, and backfill existing rows in batches."),
    Rule("rename-enum-value", ERROR, "Renaming an enum value",
         _COMPAT + "The old app still writes and compares the old label, which no longer "
         "exists: its INSERTs and UPDATEs fail.",
         "Add the new value (ALTER TYPE ... ADD VALUE), move the app and the rows to it, and "
         "stop using the old one; enum values cannot be dropped, so leave it in place."),
    Rule("drop-view", ERROR, "Dropping a view or materialized view",
         _COMPAT + "The old app still queries the view and fails as soon as it is gone.",
         "CREATE OR REPLACE VIEW to change it in place; drop it only after no running version "
         "uses it."),
    Rule("drop-function", ERROR, "Dropping a function or procedure",
         _COMPAT + "The old app (or a trigger, default or view it relies on) still calls it "
         "and fails as soon as it is gone.",
         "CREATE OR REPLACE FUNCTION to change the body in place; drop it only after no "
         "running version calls it."),
    Rule("rename-object", ERROR, "Renaming a view, materialized view, function, "
         "procedure or type",
         _COMPAT + "The old app still uses the old name and fails immediately (an ORM that "
         "casts parameters to an enum type's name, as Prisma does, fails on every such "
         "query).",
         "Create the object under the new name next to the old one, move the app over, then "
         "drop the old name in a later deploy."),
    Rule("table-rewrite", ERROR, "Rewriting a whole table under an exclusive lock",
         "VACUUM FULL, CLUSTER, SET TABLESPACE and SET LOGGED/UNLOGGED copy every row while "
         "the table is locked against reads and writes. " + _LOCK,
         "Run it in a maintenance window, or use an online tool (pg_repack); never as part of "
         "a deploy."),
    Rule("missing-lock-timeout", WARNING, "Taking a table lock without lock_timeout",
         "A lock request queues behind a long query and every query of the app queues behind "
         "it. plainsail migrate sets lock_timeout itself (default 5s), so this matters only "
         "when another tool runs the file.",
         "SET lock_timeout = '5s'; at the top of the file (or run it with plainsail migrate)."),
    Rule("concurrently-in-transaction", ERROR, "A statement that cannot run in a transaction, "
         "inside one",
         "CREATE INDEX CONCURRENTLY, VACUUM and a DO block that COMMITs in batches fail inside "
         "a transaction block; the migration stops the deploy.",
         "Put it alone in a file of its own, which then runs outside a transaction (Alembic: "
         "op.get_context().autocommit_block(); Django: atomic = False)."),
    Rule("no-transaction-file", ERROR, "A no-transaction file holding more than the one "
         "statement that needs it",
         "Outside a transaction each statement commits on its own, so a failure halfway "
         "leaves the file half-applied (seed section VII).",
         "Keep exactly one statement in a '-- plainsail: no-transaction' file, with the marker "
         "on its first line; move the rest to an ordinary file."),
    Rule("parse-error", ERROR, "SQL that PostgreSQL cannot parse (or nested too deeply to "
         "check)",
         "The migration would fail and stop the deploy, or could not be checked at all.",
         "Fix the syntax (check it with psql against a scratch database), or split an "
         "expression nested hundreds of levels deep."),
    Rule("bad-allow", ERROR, "A suppression comment without a known rule or a reason",
         "An accepted risk must say why it is safe here, so the next reader can judge it.",
         "Write '-- plainsail: allow <rule-id> <reason>' right above the statement."),
    Rule("unused-allow", WARNING, "A suppression comment that suppresses nothing",
         "It no longer matches a finding, so it documents a risk that is not there.",
         "Remove it, or move it right above the statement it is meant for."),
]}


# The compatibility rules: what they find breaks the previous application version, which
# keeps running against the new schema during a deploy and after a rollback. The deploy's
# schema gate refuses on these alone; the other rules are locking hazards.
COMPATIBILITY = frozenset({
    "drop-column", "drop-table", "rename-column", "rename-table", "change-column-type",
    "add-not-null-column-without-default", "set-not-null", "drop-default",
    "rename-enum-value", "drop-view", "drop-function", "rename-object",
})


class Column(Record):
    """What the history says about one column: its type, whether a length or precision
    was given (e.g. varchar(40)) and whether it has a non-NULL default."""

    _fields = ("type", "typmod", "default")

    def __init__(self, type: str = "", typmod: bool = False, default: bool = False) -> None:
        self.type, self.typmod, self.default = type, typmod, default


# Return types of functions only triggers call (never an app): dropping or renaming one
# is no finding.
TRIGGER_TYPES = frozenset({"trigger", "event_trigger"})

Hit = tuple[str, str, int | None]  # (rule id, message, text offset of the clause or None)
# A finding that depends on what earlier files established: (condition, column key).
Deferred = tuple[str, str, str, int | None, str]  # (rule, message, column, offset, condition)
