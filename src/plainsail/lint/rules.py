"""The lint rules: what each finds, why it matters (seed sections III, VI, VII) and what to
write instead. The checks walk pglast's syntax tree, one statement at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType, TransactionStmtKind

ERROR = "error"
WARNING = "warning"

_COMPAT = ("Rollback does not roll back migrations, and during a deploy the old app keeps "
           "running against the new schema, so every migration must be backward-compatible "
           "with the previous application version. ")
_LOCK = ("Until it finishes, the table is locked and the running app's queries queue behind "
         "it, so a deploy turns into an outage.")


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    title: str
    why: str
    instead: str


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
         "CREATE INDEX CONCURRENTLY in its own file marked '-- plainsail: no-transaction' "
         "(fine without it on a table created in the same file)."),
    Rule("drop-index-without-concurrently", WARNING, "Dropping an index without "
         "CONCURRENTLY",
         "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table. " + _LOCK,
         "DROP INDEX CONCURRENTLY in its own file marked '-- plainsail: no-transaction'."),
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
    Rule("missing-lock-timeout", WARNING, "Taking a table lock without lock_timeout",
         "A lock request queues behind a long query and every query of the app queues behind "
         "it. plainsail migrate sets lock_timeout itself (default 5s), so this matters only "
         "when another tool runs the file.",
         "SET lock_timeout = '5s'; at the top of the file (or run it with plainsail migrate)."),
    Rule("concurrently-in-transaction", ERROR, "A statement that cannot run in a transaction, "
         "inside one",
         "CREATE INDEX CONCURRENTLY and similar statements fail inside a transaction block; "
         "the migration stops the deploy.",
         "Put it alone in a file marked '-- plainsail: no-transaction' (Alembic: "
         "op.get_context().autocommit_block(); Django: atomic = False)."),
    Rule("no-transaction-file", ERROR, "A no-transaction file holding more than the one "
         "statement that needs it",
         "Outside a transaction each statement commits on its own, so a failure halfway "
         "leaves the file half-applied (seed section VII).",
         "Keep exactly one statement in a '-- plainsail: no-transaction' file; move the rest "
         "to an ordinary file."),
    Rule("parse-error", ERROR, "SQL that PostgreSQL cannot parse",
         "The migration would fail and stop the deploy.",
         "Fix the syntax; check it with psql against a scratch database."),
    Rule("bad-allow", ERROR, "A suppression comment without a known rule or a reason",
         "An accepted risk must say why it is safe here, so the next reader can judge it.",
         "Write '-- plainsail: allow <rule-id> <reason>' right above the statement."),
    Rule("unused-allow", WARNING, "A suppression comment that suppresses nothing",
         "It no longer matches a finding, so it documents a risk that is not there.",
         "Remove it, or move it right above the statement it is meant for."),
]}

_VOLATILE = {"random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc",
             "uuid_generate_v4", "uuidv4", "uuidv7", "clock_timestamp", "timeofday",
             "nextval", "gen_random_bytes", "random_normal"}
_SERIAL = {"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"}


@dataclass
class FileState:
    """What earlier statements of the same file established."""

    created: set[str] = field(default_factory=set)  # tables new in this file
    in_transaction: bool = True
    lock_timeout: bool = False
    warned_lock_timeout: bool = False


def table_name(rv: ast.RangeVar | None) -> str:
    if rv is None:
        return "?"
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


def _is_new(state: FileState, rv: ast.RangeVar | None) -> bool:
    if rv is None:
        return False
    return table_name(rv) in state.created or str(rv.relname) in state.created


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, list | tuple):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for name in getattr(type(node), "__slots__", ()):
            yield from _walk(getattr(node, name, None))


def _func_names(expr: Any) -> set[str]:
    return {str(n.funcname[-1].sval).lower() for n in _walk(expr)
            if isinstance(n, ast.FuncCall) and n.funcname}


def _type_name(col: ast.ColumnDef) -> str:
    names = col.typeName.names if col.typeName is not None else ()
    return str(names[-1].sval).lower() if names else ""


def non_transactional(stmt: Any) -> str | None:
    if isinstance(stmt, ast.IndexStmt) and stmt.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(stmt, ast.DropStmt) and stmt.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(stmt, ast.ReindexStmt) and any(
            getattr(p, "defname", "") == "concurrently" for p in stmt.params or ()):
        return "REINDEX CONCURRENTLY"
    if isinstance(stmt, ast.AlterTableStmt):
        for cmd in stmt.cmds or ():
            if cmd.subtype == AlterTableType.AT_DetachPartition and getattr(
                    cmd.def_, "concurrent", False):
                return "DETACH PARTITION CONCURRENTLY"
    kinds = {ast.VacuumStmt: "VACUUM", ast.CreatedbStmt: "CREATE DATABASE",
             ast.DropdbStmt: "DROP DATABASE", ast.CreateTableSpaceStmt: "CREATE TABLESPACE",
             ast.DropTableSpaceStmt: "DROP TABLESPACE", ast.AlterSystemStmt: "ALTER SYSTEM"}
    for cls, what in kinds.items():
        if isinstance(stmt, cls):
            return what
    return None


Hit = tuple[str, str]  # (rule id, message)


def check(stmt: Any, state: FileState) -> list[Hit]:
    """Findings for one statement; updates `state` with what it establishes."""
    hits: list[Hit] = []
    what = non_transactional(stmt)
    if what and state.in_transaction:
        hits.append(("concurrently-in-transaction", f"{what} cannot run inside a transaction"))
    if isinstance(stmt, ast.TransactionStmt):
        if stmt.kind in (TransactionStmtKind.TRANS_STMT_BEGIN,
                         TransactionStmtKind.TRANS_STMT_START):
            state.in_transaction = True
        elif stmt.kind in (TransactionStmtKind.TRANS_STMT_COMMIT,
                           TransactionStmtKind.TRANS_STMT_ROLLBACK):
            state.in_transaction = False
    elif isinstance(stmt, ast.VariableSetStmt) and stmt.name == "lock_timeout":
        state.lock_timeout = True
    elif isinstance(stmt, ast.CreateStmt | ast.CreateTableAsStmt):
        if isinstance(stmt, ast.CreateStmt):
            rv = stmt.relation
        else:
            rv = stmt.into.rel if stmt.into is not None else None
        if rv is not None:
            state.created.update({table_name(rv), str(rv.relname)})
    elif isinstance(stmt, ast.AlterTableStmt) and stmt.objtype == ObjectType.OBJECT_TABLE:
        if not _is_new(state, stmt.relation):
            hits += _alter_table(stmt)
            _needs_lock_timeout(state, hits, table_name(stmt.relation))
    elif isinstance(stmt, ast.RenameStmt):
        rv, table = stmt.relation, table_name(stmt.relation)
        if not _is_new(state, rv):
            if stmt.renameType == ObjectType.OBJECT_COLUMN:
                hits.append(("rename-column",
                             f"renames column {table}.{stmt.subname} to {stmt.newname}"))
            elif stmt.renameType == ObjectType.OBJECT_TABLE:
                hits.append(("rename-table", f"renames table {table} to {stmt.newname}"))
            _needs_lock_timeout(state, hits, table)
    elif isinstance(stmt, ast.DropStmt):
        names = [".".join(str(s.sval) for s in obj) for obj in stmt.objects or ()
                 if isinstance(obj, list | tuple)]
        if stmt.removeType == ObjectType.OBJECT_TABLE:
            old = [n for n in names if n not in state.created]
            if old:
                hits.append(("drop-table", f"drops table {', '.join(old)}"))
                _needs_lock_timeout(state, hits, old[0])
        elif stmt.removeType == ObjectType.OBJECT_INDEX and not stmt.concurrent:
            hits.append(("drop-index-without-concurrently",
                         f"drops index {', '.join(names)} without CONCURRENTLY"))
            _needs_lock_timeout(state, hits, names[0] if names else "?")
    elif isinstance(stmt, ast.IndexStmt):
        if not stmt.concurrent and not _is_new(state, stmt.relation):
            name = f"index {stmt.idxname} " if stmt.idxname else "an index "
            hits.append(("index-without-concurrently",
                         f"builds {name}on {table_name(stmt.relation)} without CONCURRENTLY"))
            _needs_lock_timeout(state, hits, table_name(stmt.relation))
    return hits


def _needs_lock_timeout(state: FileState, hits: list[Hit], table: str) -> None:
    if not state.lock_timeout and not state.warned_lock_timeout:
        state.warned_lock_timeout = True
        hits.append(("missing-lock-timeout",
                     f"locks {table} with no SET lock_timeout earlier in the file"))


def _alter_table(stmt: ast.AlterTableStmt) -> list[Hit]:
    table = table_name(stmt.relation)
    hits: list[Hit] = []
    for cmd in stmt.cmds or ():
        sub = cmd.subtype
        col = f"{table}.{cmd.name}"
        if sub == AlterTableType.AT_DropColumn:
            hits.append(("drop-column", f"drops column {col}"))
        elif sub == AlterTableType.AT_AlterColumnType:
            hits.append(("change-column-type", f"changes the type of {col}"))
        elif sub == AlterTableType.AT_SetNotNull:
            hits.append(("set-not-null", f"sets NOT NULL on {col}"))
        elif sub == AlterTableType.AT_ColumnDefault and cmd.def_ is None:
            hits.append(("drop-default", f"drops the default of {col}"))
        elif sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            hits += _add_column(table, cmd.def_)
        elif sub == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            c = cmd.def_
            name = f"constraint {c.conname} " if c.conname else "a constraint "
            if c.contype in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK) and \
                    not c.skip_validation:
                kind = "FOREIGN KEY" if c.contype == ConstrType.CONSTR_FOREIGN else "CHECK"
                hits.append(("constraint-without-not-valid",
                             f"adds {kind} {name}on {table} without NOT VALID"))
            elif c.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and \
                    not c.indexname:
                kind = "UNIQUE" if c.contype == ConstrType.CONSTR_UNIQUE else "PRIMARY KEY"
                hits.append(("unique-without-index",
                             f"adds {kind} {name}on {table} without USING INDEX"))
    return hits


def _add_column(table: str, col: ast.ColumnDef) -> list[Hit]:
    name = f"{table}.{col.colname}"
    cons = list(col.constraints or ())
    kinds = {c.contype for c in cons}
    default = next((c.raw_expr for c in cons if c.contype == ConstrType.CONSTR_DEFAULT), None)
    hits: list[Hit] = []
    if ConstrType.CONSTR_NOTNULL in kinds and default is None and not kinds & {
            ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED} \
            and _type_name(col) not in _SERIAL:
        hits.append(("add-not-null-column-without-default",
                     f"adds NOT NULL column {name} without a default"))
    volatile = sorted(_func_names(default) & _VOLATILE) if default is not None else []
    if volatile:
        hits.append(("volatile-default",
                     f"adds {name} with the volatile default {volatile[0]}()"))
    elif _type_name(col) in _SERIAL:
        hits.append(("volatile-default", f"adds {name} as {_type_name(col)} (nextval default)"))
    elif ConstrType.CONSTR_IDENTITY in kinds:
        hits.append(("volatile-default", f"adds identity column {name}"))
    elif ConstrType.CONSTR_GENERATED in kinds:
        hits.append(("volatile-default", f"adds stored generated column {name}"))
    return hits
