"""The lint's checks. They read the syntax tree as PostgreSQL's parser prints it (JSON,
through pglast's parse_sql_json), one statement at a time: plain dicts and lists, so no
node classes are built or imported. The rules themselves (why, instead) are in catalog.py.

A node is `{"KindName": {...fields}}`; a statement is passed as its kind and its fields.
Fields the parser leaves at their zero value (false, 0, empty) are absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from plainsail.lint.catalog import (
    ERROR,
    RULES,
    TRIGGER_TYPES,
    WARNING,
    Column,
    Deferred,
    Hit,
    Rule,
)
from plainsail.record import Record

__all__ = ["ERROR", "RULES", "WARNING", "Column", "Deferred", "FileState", "Hit", "Rule",
           "check", "may_run_alone", "non_transactional"]

Node = dict[str, Any]

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


class FileState(Record):
    """What earlier statements of the same file established."""

    _fields = ("created", "in_transaction", "lock_timeout", "warned_lock_timeout",
               "timezone_utc", "safe_functions", "columns", "pending_deferred", "dropped")

    def __init__(self, position: Callable[[int], int | None] | None = None) -> None:
        self.created: set[str] = set()  # tables, views, functions new in this file
        self.in_transaction = True
        self.lock_timeout = False
        self.warned_lock_timeout = False
        self.timezone_utc = False
        self.safe_functions: set[str] = set()  # declared IMMUTABLE/STABLE here
        self.columns: dict[str, Column] = {}  # set in this file
        self.pending_deferred: list[Deferred] = []  # of the current statement
        # Views and functions dropped: (message of the finding, names); a finding is
        # withdrawn when the file creates every name again (one transaction: no one sees
        # the gap).
        self.dropped: list[tuple[str, list[str]]] = []
        self.added: set[str] = set()  # columns this file added to existing tables
        # Defaults dropped (column -> message of the finding), and the messages of those
        # set again later in the file: a DROP DEFAULT that only makes way for a type change
        # (lemmy's enum swaps) leaves the column with a default when the file commits.
        self.dropped_defaults: dict[str, str] = {}
        self.restored_defaults: set[str] = set()
        # The parser's locations are byte offsets into the text it parsed; this maps them
        # to offsets into the file (None: findings fall back to the statement's start).
        self.position: Callable[[int], int | None] = position or (lambda _pos: None)


def _sval(node: Any) -> str:
    if isinstance(node, dict):
        s = node.get("String")
        if s is not None:
            return str(s.get("sval", ""))
        sv = node.get("sval")  # A_Const's {"sval": {"sval": ...}}
        if isinstance(sv, dict):
            return str(sv.get("sval", ""))
    return ""


def _dotted(items: Any) -> str:
    """A qualified name: a list of String nodes, a List node or an ObjectWithArgs."""
    if isinstance(items, dict):
        if "ObjectWithArgs" in items:
            items = items["ObjectWithArgs"].get("objname", ())
        elif "List" in items:
            items = items["List"].get("items", ())
        else:
            return _sval(items)
    return ".".join(_sval(n) for n in items or ())


def table_name(rv: Node | None) -> str:
    if not rv:
        return "?"
    rel = str(rv.get("relname", ""))
    return f"{rv['schemaname']}.{rel}" if rv.get("schemaname") else rel


def column_key(rv: Node | None, column: str) -> str:
    """A column's key across files: schema `public` is the same as no schema."""
    if not rv:
        return f"?.{column}"
    schema = str(rv.get("schemaname") or "")
    schema = "" if schema == "public" else schema
    return f"{schema + '.' if schema else ''}{rv.get('relname', '')}.{column}".lower()


def table_key(rv: Node | None) -> str:
    """A table's key among what the history established (see column_key)."""
    return "table:" + column_key(rv, "").rstrip(".")


def function_key(name: str) -> str:
    """A function's key among what the history established: its name without schema
    (overloads share it)."""
    return "function:" + name.split(".")[-1].lower()


def signature_key(name: str, types: list[str]) -> str:
    """One overload of a function among what the history established: its name without
    schema and its argument types (what DROP FUNCTION names)."""
    return f"signature:{name.split('.')[-1].lower()}({','.join(types)})"


def _arg_type(tn: Node | None) -> str:
    return _type_name(tn) + ("[]" if (tn or {}).get("arrayBounds") else "")


def _drop_signature(obj: Any) -> str | None:
    """The overload a DROP FUNCTION names, None when it names no argument list."""
    owa = obj.get("ObjectWithArgs") if isinstance(obj, dict) else None
    if not owa or owa.get("args_unspecified"):
        return None
    types = [_arg_type(t.get("TypeName")) for t in owa.get("objargs") or ()]
    return signature_key(_dotted(obj), types)


def _is_new(state: FileState, rv: Node | None) -> bool:
    if not rv:
        return False
    return table_name(rv) in state.created or str(rv.get("relname")) in state.created


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (kind, fields) below `node`."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict) and key[:1].isupper():
                yield key, value
            if isinstance(value, dict | list):
                yield from _walk(value)


def _func_names(expr: Any) -> set[str]:
    return {_sval(f["funcname"][-1]).lower() for kind, f in _walk(expr)
            if kind == "FuncCall" and f.get("funcname")}


def _type_name(tn: Node | None) -> str:
    names = (tn or {}).get("names") or ()
    return _sval(names[-1]).lower() if names else ""


def _has_typmod(tn: Node | None) -> bool:
    return bool((tn or {}).get("typmods"))


def _loc(state: FileState, node: Node | None) -> int | None:
    loc = (node or {}).get("location")
    return state.position(loc) if isinstance(loc, int) and loc >= 0 else None


def _unwrap(node: Any, kind: str) -> Node | None:
    return node.get(kind) if isinstance(node, dict) else None


def _is_null(expr: Any) -> bool:
    c = _unwrap(expr, "A_Const")
    return c is not None and bool(c.get("isnull"))


def _constraints(col: Node) -> list[Node]:
    return [c["Constraint"] for c in col.get("constraints") or () if "Constraint" in c]


def _has_option(node: Node, key: str, name: str) -> bool:
    return any(_unwrap(o, "DefElem") and o["DefElem"].get("defname") == name
               for o in node.get(key) or ())


def non_transactional(kind: str, node: Node) -> str | None:
    if kind == "IndexStmt" and node.get("concurrent"):
        return "CREATE INDEX CONCURRENTLY"
    if kind == "DropStmt" and node.get("concurrent"):
        return "DROP INDEX CONCURRENTLY"
    if kind == "ReindexStmt" and _has_option(node, "params", "concurrently"):
        return "REINDEX CONCURRENTLY"
    if kind == "AlterTableStmt":
        for c in node.get("cmds") or ():
            cmd = c.get("AlterTableCmd", {})
            part = _unwrap(cmd.get("def"), "PartitionCmd")
            if cmd.get("subtype") == "AT_DetachPartition" and part and part.get("concurrent"):
                return "DETACH PARTITION CONCURRENTLY"
    if kind == "VacuumStmt":
        return "VACUUM" if node.get("is_vacuumcmd") else None  # ANALYZE runs in a transaction
    return {"CreatedbStmt": "CREATE DATABASE", "DropdbStmt": "DROP DATABASE",
            "CreateTableSpaceStmt": "CREATE TABLESPACE",
            "DropTableSpaceStmt": "DROP TABLESPACE", "AlterSystemStmt": "ALTER SYSTEM"}.get(kind)


def may_run_alone(kind: str, node: Node) -> bool:
    """What a no-transaction file may hold (the runner's files.may_run_alone): a statement
    that cannot run in a transaction, a DO block or CALL (may COMMIT), VACUUM or ANALYZE."""
    return bool(non_transactional(kind, node)) or kind in ("DoStmt", "CallStmt", "VacuumStmt")


# Statement kinds some rule looks at; every other kind (INSERT, UPDATE, COMMENT, GRANT,
# CREATE TRIGGER, ...) passes without a look.
KINDS = frozenset({
    "TransactionStmt", "VariableSetStmt", "CreateStmt", "CreateTableAsStmt", "ViewStmt",
    "CreateFunctionStmt", "CreateEnumStmt", "CompositeTypeStmt", "CreateDomainStmt",
    "AlterTableStmt", "AlterEnumStmt", "RenameStmt", "DropStmt",
    "IndexStmt", "ReindexStmt", "VacuumStmt", "ClusterStmt", "AlterDomainStmt", "DoStmt",
    "CallStmt", "CreatedbStmt", "DropdbStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt",
    "AlterSystemStmt",
})


def check(kind: str, node: Node, state: FileState,
          offsets: Callable[[int], int | None] | None = None) -> list[Hit]:
    """Findings for one statement; updates `state` with what it establishes. `offsets`
    tells where the i-th ALTER TABLE command starts in the file, to point at the clause."""
    hits: list[Hit] = []
    state.pending_deferred = []
    if kind not in KINDS:
        return hits
    what = non_transactional(kind, node)
    if what and state.in_transaction:
        hits.append(("concurrently-in-transaction", f"{what} cannot run inside a transaction",
                     None))
    if kind == "TransactionStmt":
        tk = node.get("kind")
        if tk in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
            state.in_transaction = True
        elif tk in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK"):
            state.in_transaction = False
    elif kind == "VariableSetStmt":
        name = node.get("name")
        if name == "lock_timeout":
            state.lock_timeout = True
        elif name == "timezone":
            value = [_sval(a.get("A_Const")).upper() for a in node.get("args") or ()
                     if "A_Const" in a]
            state.timezone_utc = value in (["UTC"], ["ETC/UTC"], ["Z"], ["GMT"])
    elif kind in ("CreateStmt", "CreateTableAsStmt", "ViewStmt"):
        rv = (node.get("relation") if kind == "CreateStmt" else node.get("view")
              if kind == "ViewStmt" else (node.get("into") or {}).get("rel"))
        if rv:
            state.created.update({table_name(rv), str(rv.get("relname"))})
            state.columns[table_key(rv)] = Column(type="table")
            for elt in node.get("tableElts") or () if kind == "CreateStmt" else ():
                cd = elt.get("ColumnDef")
                if cd and cd.get("colname"):
                    state.columns[column_key(rv, str(cd["colname"]))] = _column_of(cd)
    elif kind == "CreateFunctionStmt":
        name = _dotted(node.get("funcname"))
        state.created.add(name)
        state.columns[function_key(name)] = Column(type=_type_name(node.get("returnType")))
        args = [_arg_type(fp.get("argType")) for p in node.get("parameters") or ()
                if (fp := p.get("FunctionParameter", {})).get("mode")
                not in ("FUNC_PARAM_OUT", "FUNC_PARAM_TABLE")]
        state.columns[signature_key(name, args)] = Column(type="function")
        vol = [_sval(o["DefElem"].get("arg")) for o in node.get("options") or ()
               if o.get("DefElem", {}).get("defname") == "volatility"]
        if vol and vol[0] in ("immutable", "stable"):
            state.safe_functions.add(name.split(".")[-1].lower())
    elif kind in ("CreateEnumStmt", "CompositeTypeStmt", "CreateDomainStmt"):
        name = (_dotted(node.get("typeName")) if kind == "CreateEnumStmt" else
                _dotted(node.get("domainname")) if kind == "CreateDomainStmt" else
                table_name(node.get("typevar")))
        state.created.update({name, name.split(".")[-1]})
    elif kind == "AlterTableStmt" and node.get("objtype") == "OBJECT_TABLE":
        rv = node.get("relation")
        if not _is_new(state, rv):
            hits += _alter_table(node, state, offsets or (lambda _i: None))
            _needs_lock_timeout(state, hits, table_name(rv))
        _record_alter(node, state)
    elif kind == "AlterEnumStmt" and node.get("oldVal") and not _type_is_new(
            state, _dotted(node.get("typeName"))):
        hits.append(("rename-enum-value",
                     f"renames value '{node['oldVal']}' of enum {_dotted(node.get('typeName'))} "
                     f"to '{node.get('newVal')}'", None))
    elif kind == "RenameStmt":
        hits += _rename(node, state)
    elif kind == "DropStmt":
        hits += _drop(node, state)
    elif kind == "IndexStmt":
        rv = node.get("relation")
        if not node.get("concurrent") and not _is_new(state, rv):
            name = f"index {node['idxname']} " if node.get("idxname") else "an index "
            hits.append(("index-without-concurrently",
                         f"builds {name}on {table_name(rv)} without CONCURRENTLY", None))
            _needs_lock_timeout(state, hits, table_name(rv))
    elif kind == "ReindexStmt" and not what:
        rv = node.get("relation")
        if rv and not _is_new(state, rv):
            hits.append(("index-without-concurrently",
                         f"rebuilds {table_name(rv)} without CONCURRENTLY", None))
    elif kind == "VacuumStmt" and node.get("is_vacuumcmd") and _has_option(node, "options",
                                                                            "full"):
        hits.append(("table-rewrite", "VACUUM FULL rewrites the table under an ACCESS "
                     "EXCLUSIVE lock", None))
    elif kind == "ClusterStmt":
        hits.append(("table-rewrite", f"CLUSTER rewrites {table_name(node.get('relation'))} "
                     "under an ACCESS EXCLUSIVE lock", None))
    elif kind == "AlterDomainStmt" and node.get("subtype") == "C":
        con = _unwrap(node.get("def"), "Constraint")
        if con is not None and not con.get("skip_validation"):
            hits.append(("constraint-without-not-valid",
                         f"adds a constraint to domain {_dotted(node.get('typeName'))} without "
                         "NOT VALID (checks every column of that domain)", _loc(state, con)))
    return hits


def _column_of(col: Node) -> Column:
    default = next((c.get("raw_expr") for c in _constraints(col)
                    if c.get("contype") == "CONSTR_DEFAULT"), None)
    tn = col.get("typeName")
    type_name = _type_name(tn)
    # A serial column's default is its sequence's nextval().
    return Column(type=type_name, typmod=_has_typmod(tn),
                  default=(default is not None and not _is_null(default))
                  or type_name in _SERIAL)


def _cmds(node: Node) -> list[Node]:
    return [c["AlterTableCmd"] for c in node.get("cmds") or () if "AlterTableCmd" in c]


def _record_alter(node: Node, state: FileState) -> None:
    """Remember what an ALTER TABLE does to columns, for later statements and files."""
    rv = node.get("relation")
    for cmd in _cmds(node):
        sub = cmd.get("subtype")
        cd = _unwrap(cmd.get("def"), "ColumnDef")
        if sub == "AT_AddColumn" and cd is not None:
            key = column_key(rv, str(cd.get("colname")))
            state.columns[key] = _column_of(cd)
            state.added.add(key)
            continue
        if not cmd.get("name"):
            continue
        key = column_key(rv, str(cmd["name"]))
        if sub == "AT_ColumnDefault":
            col = state.columns.setdefault(key, Column())
            col.default = not (cmd.get("def") is None or _is_null(cmd.get("def")))
            if col.default and key in state.dropped_defaults:
                state.restored_defaults.add(state.dropped_defaults.pop(key))
        elif sub == "AT_AlterColumnType" and cd is not None:
            col = state.columns.setdefault(key, Column())
            col.type, col.typmod = _type_name(cd.get("typeName")), _has_typmod(
                cd.get("typeName"))
        elif sub == "AT_DropColumn":
            state.columns.pop(key, None)


def _rename(node: Node, state: FileState) -> list[Hit]:
    hits: list[Hit] = []
    kind = node.get("renameType")
    rv = node.get("relation")
    if kind in ("OBJECT_COLUMN", "OBJECT_TABLE"):
        # ALTER VIEW v RENAME COLUMN is renameType OBJECT_COLUMN on relationType VIEW.
        if _is_new(state, rv):
            return hits
        table = table_name(rv)
        if kind == "OBJECT_COLUMN":
            if node.get("relationType") in ("OBJECT_VIEW", "OBJECT_MATVIEW"):
                return [("rename-object", f"renames column {table}.{node.get('subname')} of "
                         f"a view to {node.get('newname')}", None)]
            key = column_key(rv, str(node.get("subname")))
            if key in state.added:  # added by this file: the old app never saw it
                return hits
            hits.append(("rename-column", f"renames column {table}.{node.get('subname')} to "
                         f"{node.get('newname')}", None))
        else:
            hits.append(("rename-table", f"renames table {table} to {node.get('newname')}",
                         None))
        _needs_lock_timeout(state, hits, table)
    elif kind in ("OBJECT_VIEW", "OBJECT_MATVIEW"):
        if not _is_new(state, rv):
            what = "view" if kind == "OBJECT_VIEW" else "materialized view"
            hits.append(("rename-object", f"renames {what} {table_name(rv)} to "
                         f"{node.get('newname')}", None))
    elif kind == "OBJECT_TYPE":
        name = _dotted(node.get("object"))
        if not _type_is_new(state, name):
            hits.append(("rename-object", f"renames type {name} to {node.get('newname')}: the "
                         "old app's queries that name it (an ORM such as Prisma casts every "
                         "enum parameter to its type's name) fail", None))
        else:  # new in this file under either name
            state.created.add(str(node.get("newname")))
    elif kind in ("OBJECT_FUNCTION", "OBJECT_PROCEDURE"):
        name = _dotted(node.get("object"))
        if name not in state.created and name.split(".")[-1] not in state.created:
            what = "function" if kind == "OBJECT_FUNCTION" else "procedure"
            _unless_trigger(state, hits, "rename-object",
                            f"renames {what} {name} to {node.get('newname')}", [name])
    return hits


_DROP_KINDS = {
    "OBJECT_VIEW": ("drop-view", "view"),
    "OBJECT_MATVIEW": ("drop-view", "materialized view"),
    "OBJECT_FUNCTION": ("drop-function", "function"),
    "OBJECT_PROCEDURE": ("drop-function", "procedure"),
}


def _drop(node: Node, state: FileState) -> list[Hit]:
    hits: list[Hit] = []
    names = [_dotted(obj) for obj in node.get("objects") or ()
             if isinstance(obj, dict) and ("List" in obj or "ObjectWithArgs" in obj)]
    old = [n for n in names if n not in state.created
           and n.split(".")[-1] not in state.created]
    kind = node.get("removeType")
    if kind == "OBJECT_TABLE":
        if old and node.get("missing_ok") and len(old) == 1:
            # DROP TABLE IF EXISTS t followed by CREATE TABLE t in the same file is a
            # re-run guard; when no earlier file created t, nothing the old app uses is
            # lost (decided at the end of the file, then against earlier files).
            key = "table:" + _relation_key(old[0])
            message = f"drops table {old[0]}"
            state.pending_deferred.append(("drop-table", message, key, None, "existed"))
            state.dropped.append((message, old))
            _needs_lock_timeout(state, hits, old[0])
        elif old:
            hits.append(("drop-table", f"drops table {', '.join(old)}", None))
            _needs_lock_timeout(state, hits, old[0])
    elif kind == "OBJECT_INDEX" and not node.get("concurrent"):
        hits.append(("drop-index-without-concurrently",
                     f"drops index {', '.join(names)} without CONCURRENTLY", None))
        _needs_lock_timeout(state, hits, names[0] if names else "?")
    elif kind in _DROP_KINDS and old:
        rule, what = _DROP_KINDS[kind]
        message = f"drops {what} {', '.join(old)}"
        objects = list(node.get("objects") or ())
        signature = _drop_signature(objects[0]) if len(objects) == 1 else None
        if rule == "drop-function" and signature:
            # Decided against earlier files: not a trigger function, and that overload is
            # one they created (or they created nothing of that name).
            state.pending_deferred.append((rule, message, signature, None, "overload"))
        elif rule == "drop-function":
            _unless_trigger(state, hits, rule, message, old)
        else:
            hits.append((rule, message, None))
        state.dropped.append((message, old))
    if kind == "OBJECT_TABLE":
        for n in names:  # gone, for later files
            state.columns["table:" + _relation_key(n)] = Column(type="")
    for n in names:  # created before, dropped now: a later CREATE makes it new again
        state.created.discard(n)
        state.created.discard(n.split(".")[-1])
    return hits


def _type_is_new(state: FileState, name: str) -> bool:
    return name in state.created or name.split(".")[-1] in state.created


def _relation_key(dotted: str) -> str:
    schema, _, rel = dotted.rpartition(".")
    return (f"{schema}.{rel}" if schema and schema != "public" else rel).lower()


def _unless_trigger(state: FileState, hits: list[Hit], rule: str, message: str,
                    names: list[str]) -> None:
    """A trigger function is called by its triggers (which follow a rename and block a
    drop), never by the app: dropping or renaming one is no finding. Whether it is one
    is known from this file or, deferred, from earlier files."""
    if len(names) != 1:
        hits.append((rule, message, None))
        return
    known = state.columns.get(function_key(names[0]))
    if known is None:
        state.pending_deferred.append((rule, message, function_key(names[0]), None,
                                       "not-trigger"))
    elif known.type not in TRIGGER_TYPES:
        hits.append((rule, message, None))


def recreated(state: FileState) -> set[str]:
    """Messages of drop findings whose every object the file creates again afterwards."""
    return {message for message, names in state.dropped
            if all(n in state.created or n.split(".")[-1] in state.created for n in names)}


def _needs_lock_timeout(state: FileState, hits: list[Hit], table: str) -> None:
    if not state.lock_timeout and not state.warned_lock_timeout:
        state.warned_lock_timeout = True
        hits.append(("missing-lock-timeout",
                     f"locks {table} with no SET lock_timeout earlier in the file", None))


_HERE = -1  # stands for the offset of the current ALTER TABLE command, worked out later
_REWRITES = {"AT_SetLogged": "SET LOGGED", "AT_SetUnLogged": "SET UNLOGGED",
             "AT_SetTableSpace": "SET TABLESPACE"}


def _alter_table(node: Node, state: FileState,
                 offsets: Callable[[int], int | None]) -> list[Hit]:
    rv = node.get("relation")
    table = table_name(rv)
    hits: list[Hit] = []
    for i, cmd in enumerate(_cmds(node)):
        at, before = _HERE, len(hits)
        sub = cmd.get("subtype")
        name = cmd.get("name")
        col = f"{table}.{name}"
        key = column_key(rv, str(name)) if name else ""
        definition = cmd.get("def")
        cd, con = _unwrap(definition, "ColumnDef"), _unwrap(definition, "Constraint")
        if sub == "AT_DropColumn":
            if key not in state.added:  # a column this file added: the old app never saw it
                hits.append(("drop-column", f"drops column {col}", at))
        elif sub == "AT_AlterColumnType" and cd is not None:
            hits += _type_change(state, col, key, cd, at)
        elif sub == "AT_SetNotNull":
            hits.append(("set-not-null", f"sets NOT NULL on {col}", at))
        elif sub == "AT_ColumnDefault" and (definition is None or _is_null(definition)):
            known = state.columns.get(key)
            message = f"drops the default of {col}"
            state.dropped_defaults[key] = message
            if known is None:
                state.pending_deferred.append(("drop-default", message, key, at, "default"))
            elif known.default:
                hits.append(("drop-default", message, at))
        elif sub == "AT_AddColumn" and cd is not None:
            hits += _add_column(table, cd, state, at)
        elif sub == "AT_AddConstraint" and con is not None:
            hits += _add_constraint(table, con, at)
        elif sub in _REWRITES:
            hits.append(("table-rewrite", f"{_REWRITES[sub]} rewrites {table} under an ACCESS "
                         "EXCLUSIVE lock", at))
        if len(hits) > before:  # point at this command's clause in the text
            hits[before:] = [(r, m, offsets(i) if where == _HERE else where)
                             for r, m, where in hits[before:]]
        for j, d in enumerate(state.pending_deferred):
            if d[3] == _HERE:
                state.pending_deferred[j] = (d[0], d[1], d[2], offsets(i), d[4])
    return hits


_KEY_KINDS = {"CONSTR_UNIQUE": "UNIQUE", "CONSTR_PRIMARY": "PRIMARY KEY",
              "CONSTR_EXCLUSION": "EXCLUDE"}


def _add_constraint(table: str, c: Node, at: int | None) -> list[Hit]:
    name = f" {c['conname']}" if c.get("conname") else ""
    contype = c.get("contype")
    if contype in ("CONSTR_FOREIGN", "CONSTR_CHECK") and not c.get("skip_validation"):
        what = "FOREIGN KEY" if contype == "CONSTR_FOREIGN" else "CHECK"
        return [("constraint-without-not-valid",
                 f"adds {what} constraint{name} on {table} without NOT VALID", at)]
    if contype in _KEY_KINDS and not c.get("indexname"):
        return [("unique-without-index",
                 f"adds a {_KEY_KINDS[contype]} constraint{name} on {table}, which builds its "
                 "index under a write lock (no USING INDEX)", at)]
    return []


def _type_change(state: FileState, col: str, key: str, new: Node,
                 at: int | None) -> list[Hit]:
    """Changing a type is flagged unless it is known to keep every value and not rewrite:
    timestamp -> timestamptz with the session time zone UTC (PostgreSQL 12+), and
    varchar(n) -> text or a longer/unbounded varchar."""
    new_type = _type_name(new.get("typeName"))
    message = f"changes the type of {col} to {new_type}"
    known = state.columns.get(key)
    using = new.get("raw_default")
    ref = _unwrap(using, "ColumnRef")
    if ref is not None and [_sval(f) for f in ref.get("fields") or ()] == [
            col.rsplit(".", 1)[-1]]:
        using = None  # USING the column itself: the same as no USING
    if new_type in _TIMESTAMPTZ and state.timezone_utc and using is None:
        if known is None:
            state.pending_deferred.append(("change-column-type", message, key, at,
                                           "not-timestamp"))
            return []
        if known.type in _TIMESTAMP:
            return []
    if new_type in _TEXTLIKE and not (new_type == "varchar" and _has_typmod(
            new.get("typeName"))):
        if known is not None and known.type in _TEXTLIKE:
            return []
    return [("change-column-type", message, at)]


_SAFE_NOT_NULL = {"CONSTR_IDENTITY", "CONSTR_GENERATED"}


def _add_column(table: str, col: Node, state: FileState, at: int | None) -> list[Hit]:
    name = f"{table}.{col.get('colname')}"
    cons = _constraints(col)
    kinds = {c.get("contype") for c in cons}
    default_con = next((c for c in cons if c.get("contype") == "CONSTR_DEFAULT"), None)
    default = default_con.get("raw_expr") if default_con else None
    where = _loc(state, col)
    where = where if where is not None else at
    type_name = _type_name(col.get("typeName"))
    hits: list[Hit] = []
    if "CONSTR_NOTNULL" in kinds and default is None and not kinds & _SAFE_NOT_NULL \
            and type_name not in _SERIAL:
        hits.append(("add-not-null-column-without-default",
                     f"adds NOT NULL column {name} without a default", where))
    funcs = _func_names(default) if default is not None else set()
    volatile = sorted(funcs & _VOLATILE)
    unknown = sorted(funcs - _VOLATILE - _NOT_VOLATILE - state.safe_functions)
    dloc = _loc(state, default_con) if default_con else None
    if volatile:
        hits.append(("volatile-default",
                     f"adds {name} with the volatile default {volatile[0]}()", dloc or where))
    elif unknown:
        hits.append(("volatile-default",
                     f"adds {name} with the default {unknown[0]}(), which may be volatile "
                     "(functions are VOLATILE unless declared IMMUTABLE or STABLE)",
                     dloc or where))
    elif type_name in _SERIAL:
        hits.append(("volatile-default", f"adds {name} as {type_name} (nextval default)",
                     where))
    elif "CONSTR_IDENTITY" in kinds:
        hits.append(("volatile-default", f"adds identity column {name}", where))
    elif "CONSTR_GENERATED" in kinds:
        hits.append(("volatile-default", f"adds stored generated column {name}", where))
    for c in cons:
        cloc = _loc(state, c) or where
        contype = c.get("contype")
        if contype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY"):
            hits.append(("unique-without-index",
                         f"adds column {name} with {_KEY_KINDS[contype]}, which builds its "
                         "index under a write lock; add the column, then the constraint USING "
                         "INDEX", cloc))
        elif contype == "CONSTR_FOREIGN":
            ref = table_name(c.get("pktable"))
            hits.append(("constraint-without-not-valid",
                         f"adds column {name} with REFERENCES {ref}, which cannot be NOT "
                         "VALID; add the column, then ADD CONSTRAINT ... FOREIGN KEY ... "
                         "NOT VALID", cloc))
    return hits
