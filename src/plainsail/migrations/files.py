"""Migration files on disk: discovery, version and name, checksum, statements, markers.

Standard library only (runs inside application containers).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from plainsail.errors import MigrationError
from plainsail.migrations.sqlsplit import SplitError, Statement, split_sql

NO_TRANSACTION_MARKER = "-- plainsail: no-transaction"
_MARKER = re.compile(r"^[ \t]*--[ \t]*plainsail:[ \t]*no-transaction[ \t]*$", re.I | re.M)
_VERSION = re.compile(r"^([^_\-.]+)[_\-]?")


@dataclass(frozen=True)
class MigrationFile:
    """One `migrations/*.sql` file. `version` is the part of the name before the first
    `_` or `-` (`0007` for `0007_add_email.sql`); files run in lexical order of `name`."""

    path: Path
    name: str
    version: str
    text: str
    checksum: str

    @property
    def no_transaction(self) -> bool:
        return bool(_MARKER.search(self.text))

    @cached_property
    def statements(self) -> list[Statement]:
        try:
            return split_sql(self.text)
        except SplitError as exc:
            raise MigrationError(
                f"{self.name}: line {exc.line}: {exc}; fix the file before migrating"
            ) from exc


def checksum_of(data: bytes) -> str:
    """SHA-256 of the file with CRLF line ends read as LF, so a checkout on Windows does
    not look like drift."""
    return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()


def read_file(path: Path) -> MigrationFile:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MigrationError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationError(f"{path.name} is not UTF-8 text (byte {exc.start}); "
                             "save it as UTF-8") from exc
    m = _VERSION.match(path.stem)
    version = m.group(1) if m else path.stem
    return MigrationFile(path=path, name=path.name, version=version, text=text,
                         checksum=checksum_of(data))


def discover(folder: Path) -> list[MigrationFile]:
    """All `*.sql` files directly in `folder`, in lexical order of their names."""
    if not folder.is_dir():
        raise MigrationError(
            f"migrations folder {folder} does not exist; create it, or point --dir or "
            "$PLAINSAIL_MIGRATIONS at the folder holding your .sql files"
        )
    files = [read_file(p) for p in sorted(folder.glob("*.sql"), key=lambda p: p.name)
             if p.is_file()]
    seen: dict[str, str] = {}
    for f in files:
        if f.version in seen:
            raise MigrationError(
                f"{seen[f.version]} and {f.name} share version {f.version}; "
                "rename one so every file has its own version prefix"
            )
        seen[f.version] = f.name
    return files


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


def check_file(f: MigrationFile) -> None:
    """Refuse, before anything runs, a file the runner cannot apply all-or-nothing."""
    stmts = f.statements
    for s in stmts:
        if transaction_control(s):
            raise MigrationError(
                f"{f.name}: statement {s.number} (line {s.line}) is {s.words[0]}; "
                "remove it: plainsail runs each file in its own transaction"
            )
    if f.no_transaction:
        special = [s for s in stmts if non_transactional(s)]
        if len(stmts) != 1 or len(special) != 1:
            found = f"{len(stmts)} statements" if len(stmts) != 1 else "no such statement"
            raise MigrationError(
                f"{f.name} is marked '{NO_TRANSACTION_MARKER}' but holds {found}; such a "
                "file must hold exactly one statement that cannot run in a transaction "
                "(e.g. CREATE INDEX CONCURRENTLY), so nothing can half-apply. Move the "
                "other statements to their own file"
            )
        return
    for s in stmts:
        what = non_transactional(s)
        if what:
            raise MigrationError(
                f"{f.name}: statement {s.number} (line {s.line}) is {what}, which cannot "
                "run inside a transaction; move it alone to a new file whose first line is "
                f"'{NO_TRANSACTION_MARKER}'"
            )
