"""One migration file: version and name, checksum, statements, markers (layouts.py finds
them in a folder).

Standard library only (runs inside application containers).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plainsail.errors import MigrationError
from plainsail.record import Record

if TYPE_CHECKING:
    from plainsail.migrations.sqlsplit import Statement

def _builtin_sha256() -> Callable[..., Any]:
    """CPython's own SHA-256 (`_sha256`; `_sha2` from 3.12): the same digest as hashlib's,
    without the OpenSSL load that makes importing hashlib cost more than linting a few
    hundred files. hashlib where the interpreter has neither."""
    import importlib

    for name in ("_sha256", "_sha2"):
        try:
            return importlib.import_module(name).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256


sha256 = _builtin_sha256()

def shown(name: str) -> str:
    """A file name as it is printed and recorded: unchanged unless it holds a character
    that is not printable (a newline or an escape sequence would forge output lines), in
    which case those, and backslashes, are escaped as Python writes them in a string."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in name)


NO_TRANSACTION_MARKER = "-- plainsail: no-transaction"
_MARKER = re.compile(r"^[ \t]*--[ \t]*plainsail:[ \t]*no-transaction[ \t]*\r?$", re.I | re.M)
_VERSION = re.compile(r"^([^_\-.]+)[_\-]?")
# Other runners' no-transaction markers, on a comment line of their own anywhere in the
# file, as those runners read them: goose, node-postgres-migrations (dbmate's
# `transaction:false` and Diesel's metadata.toml are read by layouts.py).
FOREIGN_MARKER = re.compile(
    r"^[ \t]*--[ \t]*(?:\+goose[ \t]+NO[ \t]+TRANSACTION"
    r"|postgres-migrations[ \t]+disable-transaction)[ \t]*\r?$", re.M)


class MigrationFile(Record):
    """One migration: the SQL that runs, where it came from, and how it is recorded.

    `name` is what `plainsail_migrations` records (the file name; for Diesel and Prisma the
    migration's folder name) and `version` its unique key (`0007` for `0007_add_email.sql`).
    `text` keeps the file's line numbers: text outside a dbmate `-- migrate:up` section
    is blanked out, not removed. `first_line` is where the no-transaction marker must be
    (dbmate: the up section's first line), `marked` the layout's own no-transaction
    marker (dbmate transaction:false). `order` sorts migrations (see layouts.py).
    Read-only: `replace` makes a changed copy."""

    _fields = ("path", "name", "version", "text", "checksum", "first_line", "marked",
               "order")

    def __init__(self, path: Path, name: str, version: str, text: str, checksum: str,
                 first_line: int = 1, marked: bool = False,
                 order: tuple[object, ...] = ()) -> None:
        values = {"path": path, "name": shown(name), "version": shown(version), "text": text,
                  "checksum": checksum, "first_line": first_line, "marked": marked,
                  "order": order}
        self.__dict__.update(values)

    path: Path
    name: str
    version: str
    text: str
    checksum: str
    first_line: int
    marked: bool
    order: tuple[object, ...]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"MigrationFile is read-only; use replace({name}=...)")

    def __hash__(self) -> int:
        return hash(tuple(self._values().values()))

    def replace(self, **changes: object) -> MigrationFile:
        return MigrationFile(**{**self._values(), **changes})

    @property
    def no_transaction(self) -> bool:
        """Runs outside a transaction: marked so (plainsail's marker on the first line, or
        the layout's or another runner's marker), or its only statement cannot run inside
        one (then there is nothing to half-apply and no marker is needed)."""
        if self.marked or self.first_line_marked:
            return True
        stmts = self.statements
        return len(stmts) == 1 and needs_no_transaction(stmts[0]) is not None

    @property
    def first_line_marked(self) -> bool:
        lines = self.text.split("\n", self.first_line)
        first = lines[self.first_line - 1] if len(lines) >= self.first_line else ""
        return bool(_MARKER.fullmatch(first.lstrip("\ufeff").rstrip("\r")))

    @property
    def misplaced_markers(self) -> list[int]:
        """Lines holding the no-transaction marker other than the first line, where it
        does nothing."""
        return [self.text.count("\n", 0, m.start()) + 1 for m in _MARKER.finditer(self.text)
                if self.text.count("\n", 0, m.start()) + 1 != self.first_line]

    @cached_property
    def statements(self) -> list[Statement]:
        from plainsail.migrations.sqlsplit import SplitError, split_sql

        try:
            return unwrapped(split_sql(self.text))
        except SplitError as exc:
            raise MigrationError(
                f"{self.name}: line {exc.line}: {exc}; fix the file before migrating"
            ) from exc


def checksum_of(data: bytes) -> str:
    """SHA-256 of the file with CRLF line ends read as LF, so a checkout on Windows does
    not look like drift."""
    return str(sha256(data.replace(b"\r\n", b"\n")).hexdigest())


def read_file(path: Path, name: str | None = None, version: str | None = None,
              order: tuple[object, ...] = ()) -> MigrationFile:
    """Read one migration; `name`, `version` and `order` default to what the file's own
    name says (layouts.py passes what its layout says)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise MigrationError(f"cannot read {shown(str(path))}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationError(f"{shown(path.name)} is not UTF-8 text (byte {exc.start}); "
                             "save it as UTF-8") from exc
    if version is None:
        m = _VERSION.match(path.stem)
        version = m.group(1) if m else path.stem
    return MigrationFile(path=path, name=name or path.name, version=version, text=text,
                         checksum=checksum_of(data), order=order,
                         marked=bool(FOREIGN_MARKER.search(text)))


# Statements PostgreSQL refuses to run inside a transaction block.
def non_transactional(stmt: Statement) -> str | None:
    """Return a short name for a statement that cannot run in a transaction, else None."""
    w = stmt.words
    if not w:
        return None
    first = w[0]
    if first == "CREATE" and stmt.has_words("INDEX", "CONCURRENTLY"):
        return "CREATE INDEX CONCURRENTLY"
    if stmt.starts_with("DROP", "INDEX", "CONCURRENTLY"):
        return "DROP INDEX CONCURRENTLY"
    if first == "REINDEX" and ("CONCURRENTLY" in w or "DATABASE" in w[:3] or "SYSTEM" in w[:3]):
        return "REINDEX " + ("CONCURRENTLY" if "CONCURRENTLY" in w else w[1])
    if first == "ALTER" and stmt.has_words("DETACH", "PARTITION") and "CONCURRENTLY" in w:
        return "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY"
    if first == "VACUUM":
        return "VACUUM"
    if first in ("CREATE", "DROP") and len(w) > 1 and w[1] in ("DATABASE", "TABLESPACE",
                                                               "SUBSCRIPTION"):
        return f"{first} {w[1]}"
    if stmt.starts_with("ALTER", "SYSTEM"):
        return "ALTER SYSTEM"
    if stmt.starts_with("ALTER", "DATABASE") and stmt.has_words("SET", "TABLESPACE"):
        return "ALTER DATABASE ... SET TABLESPACE"
    return None


def transaction_control(stmt: Statement) -> bool:
    """BEGIN/COMMIT/ROLLBACK and friends, which would break the file's own transaction."""
    w = stmt.words
    if not w:
        return False
    if w[0] in ("BEGIN", "COMMIT", "END", "ABORT"):
        return True
    if w[0] == "START" and w[1:2] == ("TRANSACTION",):
        return True
    if w[0] == "ROLLBACK" and "TO" not in w[1:3]:
        return True
    return w[0] == "PREPARE" and w[1:2] == ("TRANSACTION",)


def unwrapped(stmts: list[Statement]) -> list[Statement]:
    """The statements of a file wrapped whole in BEGIN; ... COMMIT; (as many generators
    write them) without those two, numbered from 1: the runner's own transaction does
    the same. Any other use of transaction control is left for check_file to refuse."""
    if len(stmts) < 2 or stmts[-1].words not in _COMMITS or stmts[0].words not in _BEGINS:
        return stmts
    inner = stmts[1:-1]
    if any(transaction_control(s) for s in inner):
        return stmts
    from dataclasses import replace

    return [replace(s, number=i) for i, s in enumerate(inner, start=1)]


_BEGINS = {("BEGIN",), ("BEGIN", "WORK"), ("BEGIN", "TRANSACTION"), ("START", "TRANSACTION")}
_COMMITS = {(w,) + rest for w in ("COMMIT", "END") for rest in ((), ("WORK",),
                                                               ("TRANSACTION",))}
_DO_BODY = re.compile(r"(\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)(.*)\1", re.S)
# Where a PL/pgSQL statement can start: after these words (or a `;`, which split_sql
# splits on). A COMMIT anywhere else is a name (a column called commit), not a statement.
_STATEMENT_START = frozenset({"BEGIN", "THEN", "ELSE", "LOOP", "DECLARE"})


def do_commits(stmt: Statement) -> bool:
    """A DO block whose body ends transactions itself (COMMIT/ROLLBACK, PostgreSQL 11+):
    it works only outside a transaction block. The body is parsed by PostgreSQL's own
    PL/pgSQL parser when pglast is installed; otherwise by split_sql's tokenizer, which
    skips comments, strings and quoted names, counting COMMIT only where a statement
    starts."""
    if stmt.words[:1] != ("DO",):
        return False
    m = _DO_BODY.search(stmt.text)
    if m is None:
        return False
    body, language = m.group(2), _do_language(stmt.words)
    if language != "PLPGSQL":
        return False
    parsed = _plpgsql_commits(body)
    if parsed is not None:
        return parsed
    from plainsail.migrations.sqlsplit import SplitError, split_sql

    try:
        pieces = split_sql(body)
    except SplitError:
        return False  # PostgreSQL refuses the block when it runs
    for piece in pieces:
        w = piece.words
        for i, word in enumerate(w):
            if word in ("COMMIT", "ROLLBACK") and (i == 0 or w[i - 1] in _STATEMENT_START):
                return True
    return False


def _do_language(words: tuple[str, ...]) -> str:
    """DO's LANGUAGE (plpgsql unless named): the dollar-quoted body holds no words."""
    for i, word in enumerate(words[:-1]):
        if word == "LANGUAGE":
            return words[i + 1]
    return "PLPGSQL"


def _plpgsql_commits(body: str) -> bool | None:
    """Whether PostgreSQL's PL/pgSQL parser finds a COMMIT or ROLLBACK statement in the
    body; None when pglast is not installed (or cannot read it)."""
    try:
        from plainsail.lint.pgparse import parse_plpgsql_json
    except ImportError:
        return None
    tag = "$plainsail_do$"
    while tag in body:
        tag = tag[:-1] + "_$"
    try:
        tree = parse_plpgsql_json(
            f"CREATE FUNCTION plainsail_do() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}")
    except Exception:  # noqa: BLE001 - pglast's ParseError; PostgreSQL refuses it later
        return None
    return '"PLpgSQL_stmt_commit"' in tree or '"PLpgSQL_stmt_rollback"' in tree


def may_run_alone(stmt: Statement) -> bool:
    """What a no-transaction file may hold (exactly one of): a statement that cannot run
    in a transaction, a DO block or CALL that may COMMIT inside, or VACUUM/ANALYZE."""
    w = stmt.words
    return bool(non_transactional(stmt)) or w[:1] in (("DO",), ("CALL",), ("ANALYZE",),
                                                      ("ANALYSE",), ("VACUUM",))


def check_file(f: MigrationFile) -> None:
    """Refuse, before anything runs, a file the runner cannot apply all-or-nothing."""
    misplaced = f.misplaced_markers
    if misplaced:
        where = "line 1" if f.first_line == 1 else f"line {f.first_line}, the first line " \
            "of the up section"
        raise MigrationError(
            f"{f.name}: line {misplaced[0]} holds '{NO_TRANSACTION_MARKER}', which counts "
            f"only on {where}; move it there (and keep the file to one statement) or "
            "remove it"
        )
    stmts = f.statements
    for s in stmts:
        if transaction_control(s):
            raise MigrationError(
                f"{f.name}: statement {s.number} (line {s.line}) is {s.words[0]}; "
                "remove it: plainsail runs each file in its own transaction"
            )
    if f.no_transaction:
        if len(stmts) != 1 or not may_run_alone(stmts[0]):
            found = f"{len(stmts)} statements" if len(stmts) != 1 else "no such statement"
            raise MigrationError(
                f"{f.name} is marked no-transaction but holds {found}; such a "
                "file must hold exactly one statement that cannot run in a transaction "
                "(e.g. CREATE INDEX CONCURRENTLY, or a DO block that COMMITs in batches), "
                "so nothing can half-apply. Move the other statements to their own file"
            )
        return
    for s in stmts:
        what = needs_no_transaction(s)
        if what:
            raise MigrationError(
                f"{f.name}: statement {s.number} (line {s.line}) of {len(stmts)} is {what}, "
                "which cannot run inside a transaction, so the other statements cannot "
                "share its file; move it alone to a new file (a file holding only such a "
                "statement runs outside a transaction)"
            )


def needs_no_transaction(stmt: Statement) -> str | None:
    """What makes `stmt` fail inside a transaction block, or None."""
    return non_transactional(stmt) or ("a DO block that COMMITs or ROLLBACKs inside"
                                       if do_commits(stmt) else None)
