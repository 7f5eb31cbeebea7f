"""The lint's checks: they walk pglast's syntax tree, one statement at a time. The rules
themselves (why, instead) are in catalog.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType, TransactionStmtKind

from plainsail.lint.catalog import ERROR, RULES, WARNING, Column, Deferred, Hit, Rule

__all__ = ["ERROR", "RULES", "WARNING", "Column", "Deferred", "FileState", "Hit", "Rule",
           "check", "may_run_alone", "non_transactional"]

_VOLATILE = {"random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc",
             "uuid_generate_v4", "uuidv4", "uuidv7", "clock_timestamp", "timeofday",
             "nextval", "gen_random_bytes", "random_normal"}
# Built-in functions that are IMMUTABLE or STABLE: a default made of them is evaluated once
# and stored in the catalog (PostgreSQL 11+), no rewrite. Any other function may be
# VOLATILE (CREATE FUNCTION's default) unless this history declared it otherwise.
_NOT_VOLATILE = {
    "now", "transaction_timestamp", "statement_timestamp", "current_setting", "lower",
    "upper", "length", "char_length", "concat", "concat_ws", "md5", "date_trunc",
    "make_interval", "make_date", "make_timestamp", "make_timestamptz", "to_timestamp",
    "to_date", "to_char", "to_json", "to_jsonb", "json_build_object", "jsonb_build_object",
    "json_build_array", "jsonb_build_array", "array_fill", "timezone", "abs", "round",
    "trim", "btrim", "ltrim", "rtrim", "replace", "substring", "left", "right", "coalesce",
    "greatest", "least", "nullif", "encode", "decode", "inet", "int4range", "int8range",
    "numrange", "tstzrange", "tsrange", "daterange", "point", "current_user",
    "current_database", "current_schema", "pg_catalog.now",
}
_SERIAL = {"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"}
_TIMESTAMP = {"timestamp"}
_TIMESTAMPTZ = {"timestamptz"}
_TEXTLIKE = {"text", "varchar"}


@dataclass
class FileState:
    """What earlier statements of the same file established."""

    created: set[str] = field(default_factory=set)  # tables, views, functions new in this file
    in_transaction: bool = True
    lock_timeout: bool = False
    warned_lock_timeout: bool = False
    timezone_utc: bool = False
    safe_functions: set[str] = field(default_factory=set)  # declared IMMUTABLE/STABLE here
    columns: dict[str, Column] = field(default_factory=dict)  # set in this file
    deferred: list[Deferred] = field(default_factory=list)
    pending_deferred: list[Deferred] = field(default_factory=list)  # of the current statement


def table_name(rv: ast.RangeVar | None) -> str:
    if rv is None:
        return "?"
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


def column_key(rv: ast.RangeVar | None, column: str) -> str:
    """A column's key across files: schema `public` is the same as no schema."""
    if rv is None:
        return f"?.{column}"
    schema = str(rv.schemaname) if rv.schemaname and rv.schemaname != "public" else ""
    return f"{schema + '.' if schema else ''}{rv.relname}.{column}".lower()


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


def _names(tn: ast.TypeName | None) -> str:
    names = tn.names if tn is not None else ()
    return str(names[-1].sval).lower() if names else ""


def _type_name(col: ast.ColumnDef) -> str:
    return _names(col.typeName)


def _has_typmod(tn: ast.TypeName | None) -> bool:
    return bool(tn is not None and tn.typmods)


def _loc(node: Any) -> int | None:
    loc = getattr(node, "location", None)
    return loc if isinstance(loc, int) and loc >= 0 else None


def _dotted(obj: Any) -> str:
    if isinstance(obj, ast.ObjectWithArgs):
        obj = obj.objname
    if isinstance(obj, list | tuple):
        return ".".join(str(getattr(s, "sval", s)) for s in obj)
    return str(getattr(obj, "sval", obj))


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
    if isinstance(stmt, ast.VacuumStmt):
        return "VACUUM" if stmt.is_vacuumcmd else None  # ANALYZE runs in a transaction
    kinds = {ast.CreatedbStmt: "CREATE DATABASE",
             ast.DropdbStmt: "DROP DATABASE", ast.CreateTableSpaceStmt: "CREATE TABLESPACE",
             ast.DropTableSpaceStmt: "DROP TABLESPACE", ast.AlterSystemStmt: "ALTER SYSTEM"}
    for cls, what in kinds.items():
        if isinstance(stmt, cls):
            return what
    return None


def may_run_alone(stmt: Any) -> bool:
    """What a no-transaction file may hold (the runner's files.may_run_alone): a statement
    that cannot run in a transaction, a DO block or CALL (may COMMIT), VACUUM or ANALYZE."""
    return bool(non_transactional(stmt)) or isinstance(
        stmt, ast.DoStmt | ast.CallStmt | ast.VacuumStmt)


def check(stmt: Any, state: FileState, offsets: list[int] | None = None) -> list[Hit]:
    """Findings for one statement; updates `state` with what it establishes. `offsets`
    holds where each ALTER TABLE command starts in the text, for pointing at the clause."""
    hits: list[Hit] = []
    state.pending_deferred = []
    what = non_transactional(stmt)
    if what and state.in_transaction:
        hits.append(("concurrently-in-transaction", f"{what} cannot run inside a transaction",
                     None))
    if isinstance(stmt, ast.TransactionStmt):
        if stmt.kind in (TransactionStmtKind.TRANS_STMT_BEGIN,
                         TransactionStmtKind.TRANS_STMT_START):
            state.in_transaction = True
        elif stmt.kind in (TransactionStmtKind.TRANS_STMT_COMMIT,
                           TransactionStmtKind.TRANS_STMT_ROLLBACK):
            state.in_transaction = False
    elif isinstance(stmt, ast.VariableSetStmt):
        if stmt.name == "lock_timeout":
            state.lock_timeout = True
        elif stmt.name == "timezone":
            value = [str(getattr(a.val, "sval", "")).upper() for a in stmt.args or ()
                     if isinstance(a, ast.A_Const) and a.val is not None]
            state.timezone_utc = value in (["UTC"], ["ETC/UTC"], ["Z"], ["GMT"])
    elif isinstance(stmt, ast.CreateStmt | ast.CreateTableAsStmt | ast.ViewStmt):
        if isinstance(stmt, ast.CreateStmt | ast.ViewStmt):
            rv = stmt.relation if isinstance(stmt, ast.CreateStmt) else stmt.view
        else:
            rv = stmt.into.rel if stmt.into is not None else None
        if rv is not None:
            state.created.update({table_name(rv), str(rv.relname)})
            if isinstance(stmt, ast.CreateStmt):
                for elt in stmt.tableElts or ():
                    if isinstance(elt, ast.ColumnDef) and elt.colname:
                        state.columns[column_key(rv, str(elt.colname))] = _column_of(elt)
    elif isinstance(stmt, ast.CreateFunctionStmt):
        name = _dotted(stmt.funcname)
        state.created.add(name)
        vol = [str(getattr(o.arg, "sval", "")) for o in stmt.options or ()
               if isinstance(o, ast.DefElem) and o.defname == "volatility"]
        if vol and vol[0] in ("immutable", "stable"):
            state.safe_functions.add(name.split(".")[-1].lower())
    elif isinstance(stmt, ast.AlterTableStmt) and stmt.objtype == ObjectType.OBJECT_TABLE:
        if not _is_new(state, stmt.relation):
            hits += _alter_table(stmt, state, offsets or [])
            _needs_lock_timeout(state, hits, table_name(stmt.relation))
        _record_alter(stmt, state)
    elif isinstance(stmt, ast.AlterEnumStmt) and stmt.oldVal:
        hits.append(("rename-enum-value",
                     f"renames value '{stmt.oldVal}' of enum {_dotted(stmt.typeName)} to "
                     f"'{stmt.newVal}'", None))
    elif isinstance(stmt, ast.RenameStmt):
        hits += _rename(stmt, state)
    elif isinstance(stmt, ast.DropStmt):
        hits += _drop(stmt, state)
    elif isinstance(stmt, ast.IndexStmt):
        if not stmt.concurrent and not _is_new(state, stmt.relation):
            name = f"index {stmt.idxname} " if stmt.idxname else "an index "
            hits.append(("index-without-concurrently",
                         f"builds {name}on {table_name(stmt.relation)} without CONCURRENTLY",
                         None))
            _needs_lock_timeout(state, hits, table_name(stmt.relation))
    elif isinstance(stmt, ast.ReindexStmt) and not non_transactional(stmt):
        if stmt.relation is not None and not _is_new(state, stmt.relation):
            hits.append(("index-without-concurrently",
                         f"rebuilds {table_name(stmt.relation)} without CONCURRENTLY", None))
    elif isinstance(stmt, ast.VacuumStmt) and stmt.is_vacuumcmd and any(
            getattr(o, "defname", "") == "full" for o in stmt.options or ()):
        hits.append(("table-rewrite", "VACUUM FULL rewrites the table under an ACCESS "
                     "EXCLUSIVE lock", None))
    elif isinstance(stmt, ast.ClusterStmt):
        hits.append(("table-rewrite", f"CLUSTER rewrites {table_name(stmt.relation)} under an "
                     "ACCESS EXCLUSIVE lock", None))
    elif isinstance(stmt, ast.AlterDomainStmt) and stmt.subtype == "C" and isinstance(
            stmt.def_, ast.Constraint) and not stmt.def_.skip_validation:
        hits.append(("constraint-without-not-valid",
                     f"adds a constraint to domain {_dotted(stmt.typeName)} without NOT VALID "
                     "(checks every column of that domain)", _loc(stmt.def_)))
    return hits


def _column_of(col: ast.ColumnDef) -> Column:
    default = next((c.raw_expr for c in col.constraints or ()
                    if c.contype == ConstrType.CONSTR_DEFAULT), None)
    is_null = isinstance(default, ast.A_Const) and default.isnull
    return Column(type=_type_name(col), typmod=_has_typmod(col.typeName),
                  default=default is not None and not is_null)


def _record_alter(stmt: ast.AlterTableStmt, state: FileState) -> None:
    """Remember what an ALTER TABLE does to columns, for later statements and files."""
    for cmd in stmt.cmds or ():
        sub = cmd.subtype
        if sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            state.columns[column_key(stmt.relation, str(cmd.def_.colname))] = \
                _column_of(cmd.def_)
            continue
        if not cmd.name:
            continue
        key = column_key(stmt.relation, str(cmd.name))
        if sub == AlterTableType.AT_ColumnDefault:
            col = state.columns.setdefault(key, Column())
            is_null = cmd.def_ is None or (isinstance(cmd.def_, ast.A_Const)
                                           and cmd.def_.isnull)
            col.default = not is_null
        elif sub == AlterTableType.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
            col = state.columns.setdefault(key, Column())
            col.type, col.typmod = _type_name(cmd.def_), _has_typmod(cmd.def_.typeName)
        elif sub == AlterTableType.AT_DropColumn:
            state.columns.pop(key, None)


def _rename(stmt: ast.RenameStmt, state: FileState) -> list[Hit]:
    hits: list[Hit] = []
    kind = stmt.renameType
    if kind in (ObjectType.OBJECT_COLUMN, ObjectType.OBJECT_TABLE):
        rv, table = stmt.relation, table_name(stmt.relation)
        if _is_new(state, rv):
            return hits
        if kind == ObjectType.OBJECT_COLUMN:
            hits.append(("rename-column",
                         f"renames column {table}.{stmt.subname} to {stmt.newname}", None))
        else:
            hits.append(("rename-table", f"renames table {table} to {stmt.newname}", None))
        _needs_lock_timeout(state, hits, table)
    elif kind in (ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW):
        if not _is_new(state, stmt.relation):
            what = "view" if kind == ObjectType.OBJECT_VIEW else "materialized view"
            hits.append(("rename-object", f"renames {what} {table_name(stmt.relation)} to "
                         f"{stmt.newname}", None))
    elif kind in (ObjectType.OBJECT_FUNCTION, ObjectType.OBJECT_PROCEDURE):
        name = _dotted(stmt.object)
        if name not in state.created:
            what = "function" if kind == ObjectType.OBJECT_FUNCTION else "procedure"
            hits.append(("rename-object", f"renames {what} {name} to {stmt.newname}", None))
    return hits


_DROP_KINDS = {
    ObjectType.OBJECT_VIEW: ("drop-view", "view"),
    ObjectType.OBJECT_MATVIEW: ("drop-view", "materialized view"),
    ObjectType.OBJECT_FUNCTION: ("drop-function", "function"),
    ObjectType.OBJECT_PROCEDURE: ("drop-function", "procedure"),
}


def _drop(stmt: ast.DropStmt, state: FileState) -> list[Hit]:
    hits: list[Hit] = []
    names = [_dotted(obj) for obj in stmt.objects or ()
             if isinstance(obj, list | tuple | ast.ObjectWithArgs)]
    old = [n for n in names if n not in state.created
           and n.split(".")[-1] not in state.created]
    if stmt.removeType == ObjectType.OBJECT_TABLE:
        if old:
            hits.append(("drop-table", f"drops table {', '.join(old)}", None))
            _needs_lock_timeout(state, hits, old[0])
    elif stmt.removeType == ObjectType.OBJECT_INDEX and not stmt.concurrent:
        hits.append(("drop-index-without-concurrently",
                     f"drops index {', '.join(names)} without CONCURRENTLY", None))
        _needs_lock_timeout(state, hits, names[0] if names else "?")
    elif stmt.removeType in _DROP_KINDS and old:
        rule, what = _DROP_KINDS[stmt.removeType]
        hits.append((rule, f"drops {what} {', '.join(old)}", None))
    return hits


def _needs_lock_timeout(state: FileState, hits: list[Hit], table: str) -> None:
    if not state.lock_timeout and not state.warned_lock_timeout:
        state.warned_lock_timeout = True
        hits.append(("missing-lock-timeout",
                     f"locks {table} with no SET lock_timeout earlier in the file", None))


def _alter_table(stmt: ast.AlterTableStmt, state: FileState, offsets: list[int]) -> list[Hit]:
    table = table_name(stmt.relation)
    hits: list[Hit] = []
    for i, cmd in enumerate(stmt.cmds or ()):
        at = offsets[i] if i < len(offsets) else None
        sub = cmd.subtype
        col = f"{table}.{cmd.name}"
        key = column_key(stmt.relation, str(cmd.name)) if cmd.name else ""
        if sub == AlterTableType.AT_DropColumn:
            hits.append(("drop-column", f"drops column {col}", at))
        elif sub == AlterTableType.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
            hits += _type_change(state, col, key, cmd.def_, at)
        elif sub == AlterTableType.AT_SetNotNull:
            hits.append(("set-not-null", f"sets NOT NULL on {col}", at))
        elif sub == AlterTableType.AT_ColumnDefault and (
                cmd.def_ is None or (isinstance(cmd.def_, ast.A_Const) and cmd.def_.isnull)):
            known = state.columns.get(key)
            message = f"drops the default of {col}"
            if known is None:
                state.pending_deferred.append(("drop-default", message, key, at, "default"))
            elif known.default:
                hits.append(("drop-default", message, at))
        elif sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            hits += _add_column(table, cmd.def_, state, at)
        elif sub == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            c = cmd.def_
            name = f" {c.conname}" if c.conname else ""
            if c.contype in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK) and \
                    not c.skip_validation:
                kind = "FOREIGN KEY" if c.contype == ConstrType.CONSTR_FOREIGN else "CHECK"
                hits.append(("constraint-without-not-valid",
                             f"adds {kind} constraint{name} on {table} without NOT VALID", at))
            elif c.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY,
                               ConstrType.CONSTR_EXCLUSION) and not c.indexname:
                kind = {ConstrType.CONSTR_UNIQUE: "UNIQUE",
                        ConstrType.CONSTR_PRIMARY: "PRIMARY KEY"}.get(c.contype, "EXCLUDE")
                hits.append(("unique-without-index",
                             f"adds a {kind} constraint{name} on {table}, which builds its "
                             "index under a write lock (no USING INDEX)", at))
        elif sub in (AlterTableType.AT_SetLogged, AlterTableType.AT_SetUnLogged,
                     AlterTableType.AT_SetTableSpace):
            what = {AlterTableType.AT_SetLogged: "SET LOGGED",
                    AlterTableType.AT_SetUnLogged: "SET UNLOGGED"}.get(sub, "SET TABLESPACE")
            hits.append(("table-rewrite", f"{what} rewrites {table} under an ACCESS "
                         "EXCLUSIVE lock", at))
    return hits


def _type_change(state: FileState, col: str, key: str, new: ast.ColumnDef,
                 at: int | None) -> list[Hit]:
    """Changing a type is flagged unless it is known to keep every value and not rewrite:
    timestamp -> timestamptz with the session time zone UTC (PostgreSQL 12+), and
    varchar(n) -> text or a longer/unbounded varchar."""
    new_type = _type_name(new)
    message = f"changes the type of {col} to {new_type}"
    known = state.columns.get(key)
    if new_type in _TIMESTAMPTZ and state.timezone_utc and new.raw_default is None:
        if known is None:
            state.pending_deferred.append(("change-column-type", message, key, at,
                                           "not-timestamp"))
            return []
        if known.type in _TIMESTAMP:
            return []
    if new_type in _TEXTLIKE and not (new_type == "varchar" and _has_typmod(new.typeName)):
        if known is not None and known.type in _TEXTLIKE:
            return []
    return [("change-column-type", message, at)]


def _add_column(table: str, col: ast.ColumnDef, state: FileState,
                at: int | None) -> list[Hit]:
    name = f"{table}.{col.colname}"
    cons = list(col.constraints or ())
    kinds = {c.contype for c in cons}
    default = next((c.raw_expr for c in cons if c.contype == ConstrType.CONSTR_DEFAULT), None)
    where = _loc(col) if _loc(col) is not None else at
    hits: list[Hit] = []
    if ConstrType.CONSTR_NOTNULL in kinds and default is None and not kinds & {
            ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED} \
            and _type_name(col) not in _SERIAL:
        hits.append(("add-not-null-column-without-default",
                     f"adds NOT NULL column {name} without a default", where))
    funcs = _func_names(default) if default is not None else set()
    volatile = sorted(funcs & _VOLATILE)
    unknown = sorted(funcs - _VOLATILE - _NOT_VOLATILE - state.safe_functions)
    dloc = next((_loc(c) for c in cons if c.contype == ConstrType.CONSTR_DEFAULT), None)
    if volatile:
        hits.append(("volatile-default",
                     f"adds {name} with the volatile default {volatile[0]}()", dloc or where))
    elif unknown:
        hits.append(("volatile-default",
                     f"adds {name} with the default {unknown[0]}(), which may be volatile "
                     "(functions are VOLATILE unless declared IMMUTABLE or STABLE)",
                     dloc or where))
    elif _type_name(col) in _SERIAL:
        hits.append(("volatile-default", f"adds {name} as {_type_name(col)} (nextval default)",
                     where))
    elif ConstrType.CONSTR_IDENTITY in kinds:
        hits.append(("volatile-default", f"adds identity column {name}", where))
    elif ConstrType.CONSTR_GENERATED in kinds:
        hits.append(("volatile-default", f"adds stored generated column {name}", where))
    for c in cons:
        cloc = _loc(c) or where
        if c.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY):
            kind = "UNIQUE" if c.contype == ConstrType.CONSTR_UNIQUE else "PRIMARY KEY"
            hits.append(("unique-without-index",
                         f"adds column {name} with {kind}, which builds its index under a "
                         "write lock; add the column, then the constraint USING INDEX", cloc))
        elif c.contype == ConstrType.CONSTR_FOREIGN:
            ref = table_name(c.pktable)
            hits.append(("constraint-without-not-valid",
                         f"adds column {name} with REFERENCES {ref}, which cannot be NOT "
                         "VALID; add the column, then ADD CONSTRAINT ... FOREIGN KEY ... "
                         "NOT VALID", cloc))
    return hits
