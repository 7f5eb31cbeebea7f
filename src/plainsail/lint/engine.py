"""Lint one SQL text: parse it, run the rules statement by statement, apply suppressions.

A finding is accepted with a comment on the statement's own lines or right above it:
`-- plainsail: allow <rule-id> <reason>`. The reason is required.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plainsail.lint.catalog import RULES, TRIGGER_TYPES, Column, Deferred
from plainsail.migrations.files import NO_TRANSACTION_MARKER
from plainsail.record import Record

# PostgreSQL's parse trees nest about two levels per nested expression (`1+1+...+1` with
# 150 terms is 300 deep); the rules walk them recursively, within Python's stack.
MAX_TREE_DEPTH = 300
_ALLOW = re.compile(r"--[ \t]*plainsail:[ \t]*allow\b[ \t]*(.*)$", re.I)
_MARKER = re.compile(r"^[ \t]*--[ \t]*plainsail:[ \t]*no-transaction[ \t]*\r?$", re.I | re.M)
_STRING = re.compile(r"'((?:[^']|'')*)'", re.S)
if TYPE_CHECKING:
    from plainsail.lint.rules import FileState


class Finding(Record):
    """`statement` counts from 1 (0: about the file or a comment); `suppressed` is the
    reason given in the allow comment that accepts it."""

    _fields = ("path", "line", "statement", "rule", "message", "suppressed")

    def __init__(self, path: str, line: int, statement: int, rule: str, message: str,
                 suppressed: str | None = None) -> None:
        self.path, self.line, self.statement = path, line, statement
        self.rule, self.message, self.suppressed = rule, message, suppressed

    @property
    def severity(self) -> str:
        return RULES[self.rule].severity


class FileResult(Record):
    """What linting one file found, without knowledge of other files: its findings, the
    findings that depend on earlier files (`deferred`, with their line and statement),
    and what it establishes about columns for later files. Picklable and cacheable."""

    _fields = ("findings", "deferred", "columns", "spans", "allows")

    def __init__(self, findings: list[Finding],
                 deferred: list[tuple[Deferred, int, int]] | None = None,
                 columns: dict[str, Column] | None = None,
                 spans: list[tuple[int, int, int]] | None = None,
                 allows: list[tuple[int, str, str]] | None = None) -> None:
        self.findings = findings
        self.deferred = deferred if deferred is not None else []
        self.columns = columns if columns is not None else {}
        self.spans = spans if spans is not None else []
        self.allows = allows if allows is not None else []


class _Allow:
    def __init__(self, line: int, rule: str, reason: str) -> None:
        self.line, self.rule, self.reason, self.used = line, rule, reason, False


class _Span:
    def __init__(self, number: int, first: int, last: int) -> None:
        self.number, self.first, self.last = number, first, last


class _Lines:
    """Line numbers of text offsets, by bisecting the newline positions, found the first
    time a line number is asked for (most statements never need one)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts: list[int] | None = None

    def __call__(self, pos: int) -> int:
        if self.starts is None:
            self.starts = [m.end() for m in re.finditer("\n", self.text)]
        return bisect_right(self.starts, pos) + 1


def _skip_blank(text: str, pos: int) -> int:
    """Move past whitespace and comments to the statement's first token."""
    n = len(text)
    while pos < n:
        if text[pos].isspace():
            pos += 1
        elif text.startswith("--", pos):
            j = text.find("\n", pos)
            pos = n if j < 0 else j
        elif text.startswith("/*", pos):
            j = text.find("*/", pos)
            pos = n if j < 0 else j + 2
        else:
            break
    return pos


# What _command_offsets steps over or counts: strings, quoted identifiers, comments,
# dollar quotes (to their closing tag), parentheses and commas.
_TOKEN = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|--[^\n]*|/\*.*?(?:\*/|\Z)"
                    r"|\$([A-Za-z_]*)\$|[(),]", re.S)
_ALTER_TABLE_NAME = re.compile(
    r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?"
    r"(?:\"[^\"]*\"|[^\s\"]+)(?:\s*\.\s*(?:\"[^\"]*\"|[^\s\"]+))?\s*\*?\s*", re.I)


def _command_offsets(text: str, start: int, end: int) -> list[int]:
    """Where each comma-separated command of an ALTER TABLE starts: after ALTER TABLE
    name, split at commas outside parentheses, strings, identifiers and comments."""
    out: list[int] = []
    depth, pos = 0, start
    while True:
        m = _TOKEN.search(text, pos, end)
        if m is None:
            break
        token, pos = m.group(0), m.end()
        if m.group(1) is not None:  # a dollar quote: skip to its closing tag
            close = text.find(token, pos, end)
            pos = end if close < 0 else close + len(token)
        elif token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif token == "," and depth == 0:
            out.append(_skip_blank(text, pos))
    # The first command begins after "ALTER TABLE [IF EXISTS] [ONLY] name".
    first = _ALTER_TABLE_NAME.match(text, start)
    return [_skip_blank(text, first.end()) if first else start, *out]


def _char_offsets(text: str) -> Callable[[int], int]:
    """The parser counts UTF-8 bytes; this turns its offsets into offsets into `text`."""
    if text.isascii():
        return lambda pos: pos
    at: list[int] = []  # byte offset after each non-ASCII character
    extra: list[int] = []  # bytes beyond one per character, up to and including it
    total = 0
    for m in re.finditer(r"[^\x00-\x7f]", text):
        total += len(m.group(0).encode("utf-8", "surrogatepass")) - 1
        at.append(m.start() + total + 1)
        extra.append(total)

    def chars(pos: int) -> int:
        i = bisect_right(at, pos)
        return pos - (extra[i - 1] if i else 0)

    return chars


def _statements(text: str) -> tuple[list[tuple[int, int, str, dict[str, Any]]],
                                     Callable[[int], int]]:
    """(start, end, kind, node) of every statement, offsets in characters, from one parse;
    and the function that turns the parser's byte offsets into character offsets."""
    from plainsail.inputs import loads_json
    from plainsail.lint.pgparse import parse_sql_json

    data = loads_json(parse_sql_json(text), max_depth=MAX_TREE_DEPTH)
    chars = _char_offsets(text)
    out = []
    for st in data.get("stmts", ()):
        loc = int(st.get("stmt_location", 0))
        length = int(st.get("stmt_len", 0))
        start = chars(loc)
        end = chars(loc + length) if length else len(text)
        ((kind, node),) = st["stmt"].items()
        out.append((start, end, kind, node))
    return out, chars


def analyze(text: str, first_line: int = 1, marked: bool = False) -> FileResult:
    """Lint one file on its own. `first_line` is where the no-transaction marker counts
    (dbmate: the up section's first line); `marked` is a layout's own marker.

    The file is parsed once by PostgreSQL's parser, whose JSON the rules read directly."""
    from plainsail.inputs import InputError
    from plainsail.lint.pgparse import ParseError
    from plainsail.lint.rules import (
        FileState,
        check,
        may_run_alone,
        non_transactional,
        recreated,
    )

    line_of = _Lines(text)
    result = FileResult(findings=[])
    findings = result.findings
    result.allows = _allows(text, findings)
    try:
        stmts, chars = _statements(text)
    except ParseError as exc:
        loc = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        findings.append(Finding("", line_of(loc), 0, "parse-error",
                                f"cannot parse: {exc.args[0]}"))
        return result
    except InputError as exc:  # PostgreSQL reads it, but its tree is too deep to walk
        findings.append(Finding("", 1, 0, "parse-error", f"cannot lint: a statement's parse "
                                f"tree is {exc}; split the expression that nests so deeply"))
        return result
    state = FileState(position=chars)
    # A plainsail file runs inside the runner's transaction; output of Alembic or Django,
    # which prints its own BEGIN/COMMIT, runs outside one between them.
    if any(kind == "TransactionStmt" for _, _, kind, _ in stmts):
        state.in_transaction = False
    markers = [line_of(m.start()) for m in _MARKER.finditer(text)] if "plainsail" in text \
        else []
    for line in markers:
        if line != first_line:
            findings.append(Finding(
                "", line, 0, "no-transaction-file",
                f"'{NO_TRANSACTION_MARKER}' counts only on the first line; here it does "
                "nothing, so the file runs in a transaction"))
    if len(stmts) == 1 and (non_transactional(stmts[0][2], stmts[0][3])
                            or stmts[0][2] == "DoStmt"):
        # As the runner does: a file whose only statement cannot run in a transaction
        # (a DO block that COMMITs included) runs outside one, with no marker needed.
        state.in_transaction = False
    if marked or first_line in markers:
        state.in_transaction = False
        if len(stmts) != 1 or not may_run_alone(stmts[0][2], stmts[0][3]):
            findings.append(Finding(
                "", first_line, 0, "no-transaction-file",
                f"marked no-transaction but holds {len(stmts)} statement(s); it must hold "
                "exactly one statement that cannot run in a transaction"))
    for number, (loc, end, kind, node) in enumerate(stmts, start=1):
        if result.allows:  # which statement each allow comment belongs to
            start = _skip_blank(text, loc)
            result.spans.append((number, line_of(start), line_of(max(start, end))))
        offsets = _lazy_offsets(text, loc, end) if kind == "AlterTableStmt" else None
        hits = check(kind, node, state, offsets)
        if hits or state.pending_deferred:
            start = _skip_blank(text, loc)
            for rule, message, at in hits:
                findings.append(Finding("", line_of(at if at is not None else start), number,
                                        rule, message))
            for d in state.pending_deferred:
                result.deferred.append((d, line_of(d[3] if d[3] is not None else start),
                                        number))
        if kind == "DoStmt":
            _do_block(node, state, number, line_of, findings, result, chars)
    again = recreated(state)
    if state.restored_defaults:
        findings[:] = [f for f in findings if not (
            f.rule == "drop-default" and f.message in state.restored_defaults)]
        result.deferred = [d for d in result.deferred if not (
            d[0][0] == "drop-default" and d[0][1] in state.restored_defaults)]
    if again:
        findings[:] = [f for f in findings if not (
            f.rule in ("drop-view", "drop-function") and f.message in again)]
        result.deferred = [d for d in result.deferred if not (
            d[0][0] in ("drop-view", "drop-function") and d[0][1] in again)]
    # A DROP TABLE IF EXISTS waits for earlier files only when this file creates the
    # table again; otherwise it is a finding now.
    now = [e for e in result.deferred if e[0][4] == "existed" and e[0][1] not in again]
    for entry in now:
        result.deferred.remove(entry)
        (rule, message, _key, _at, _condition), line, number = entry
        findings.append(Finding("", line, number, rule, message))
    result.columns = state.columns
    return result


def _lazy_offsets(text: str, start: int, end: int) -> Callable[[int], int | None]:
    """Where the i-th command of the ALTER TABLE at text[start:end] starts; worked out
    only when a finding needs it."""
    found: list[int] = []

    def offset(i: int) -> int | None:
        if not found:
            found.extend(_command_offsets(text, start, end))
        return found[i] if i < len(found) else None

    return offset


def _do_block(node: dict[str, Any], state: FileState, number: int, line_of: _Lines,
              findings: list[Finding], result: FileResult,
              chars: Callable[[int], int]) -> None:
    """Lint the SQL a PL/pgSQL DO block runs: its statements and constant EXECUTE strings;
    a COMMIT or ROLLBACK inside needs a no-transaction file."""
    from plainsail.inputs import loads_json
    from plainsail.lint.pgparse import ParseError, parse_plpgsql_json, parse_sql_json
    from plainsail.lint.rules import check

    body, at, language = None, 0, "plpgsql"
    for arg in node.get("args") or ():
        d = arg.get("DefElem", {})
        value = d.get("arg", {}).get("String", {}).get("sval")
        if d.get("defname") == "as" and isinstance(value, str):
            body, at = value, max(0, int(d.get("arg_location", d.get("location", 0))))
        elif d.get("defname") == "language" and isinstance(value, str):
            language = value.lower()
    if body is None or language != "plpgsql":
        return
    try:
        tree = loads_json(parse_plpgsql_json(
            "CREATE FUNCTION plainsail_do() RETURNS void LANGUAGE plpgsql "
            "AS $plainsail_do$" + body + "$plainsail_do$"), max_depth=MAX_TREE_DEPTH)
    except (ParseError, ValueError):  # a body PostgreSQL cannot read fails when it runs
        return
    base = line_of(chars(at))
    inner: list[tuple[int, str]] = []
    commits: list[int] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("PLpgSQL_stmt_commit", "PLpgSQL_stmt_rollback"):
                    commits.append(int(value.get("lineno", 1)))
                elif key == "PLpgSQL_stmt_execsql":
                    query = value.get("sqlstmt", {}).get("PLpgSQL_expr", {}).get("query")
                    if query:
                        inner.append((int(value.get("lineno", 1)), query))
                elif key == "PLpgSQL_stmt_dynexecute":
                    query = value.get("query", {}).get("PLpgSQL_expr", {}).get("query", "")
                    m = _STRING.fullmatch(query.strip())
                    if m:
                        inner.append((int(value.get("lineno", 1)),
                                      m.group(1).replace("''", "'")))
                walk(value)

    walk(tree)
    if commits and state.in_transaction:
        findings.append(Finding("", base + commits[0] - 1, number,
                                "concurrently-in-transaction",
                                "a DO block that COMMITs or ROLLBACKs inside cannot run "
                                "inside a transaction"))
    position = state.position
    state.position = lambda _pos: None  # offsets inside the body are not the file's
    try:
        for lineno, sql in inner:
            try:
                stmts = loads_json(parse_sql_json(sql), max_depth=MAX_TREE_DEPTH).get("stmts", ())
            except (ParseError, ValueError):
                continue
            for st in stmts:
                ((kind, inner_node),) = st["stmt"].items()
                for rule, message, _at in check(kind, inner_node, state, None):
                    findings.append(Finding("", base + lineno - 1, number, rule,
                                            f"{message} (inside a DO block)"))
                for d in state.pending_deferred:
                    result.deferred.append((d, base + lineno - 1, number))
    finally:
        state.position = position


def resolve(path: str, result: FileResult, known: dict[str, Column],
            report: bool = True) -> list[Finding]:
    """Findings of one file, given what earlier files established (`known`, updated with
    this file's columns). With report False the file only feeds `known`."""
    out: list[Finding] = []
    if report:
        out = [Finding(path, f.line, f.statement, f.rule, f.message) for f in result.findings]
        for (rule, message, key, _at, condition), line, number in result.deferred:
            col = known.get(key)
            if condition == "default" and col is not None and not col.default:
                continue
            if condition == "existed" and (col is None or col.type != "table"):
                continue
            if condition == "not-trigger" and col is not None and col.type in TRIGGER_TYPES:
                continue
            if condition == "overload":
                fn = known.get("function:" + key.split(":", 1)[1].split("(", 1)[0])
                if fn is not None and (fn.type in TRIGGER_TYPES or col is None):
                    continue  # a trigger function, or an overload no earlier file created
            if condition == "not-timestamp" and (col is None or col.type == "timestamp"):
                continue
            out.append(Finding(path, line, number, rule, message))
        spans = [_Span(*s) for s in result.spans]
        allows = [_Allow(*a) for a in result.allows]
        _apply_allows(out, allows, spans, path)
        out.sort(key=lambda f: (f.line, f.statement, f.rule))
    known.update(result.columns)
    return out


def lint_text(path: str, text: str, first_line: int = 1, marked: bool = False,
              known: dict[str, Column] | None = None) -> list[Finding]:
    """Lint one text on its own (or after earlier files, through `known`)."""
    return resolve(path, analyze(text, first_line, marked),
                   known if known is not None else {})


def _allows(text: str, findings: list[Finding]) -> list[tuple[int, str, str]]:
    out: list[tuple[int, str, str]] = []
    if "plainsail" not in text.lower():
        return out
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _ALLOW.search(line)
        if not m:
            continue
        parts = m.group(1).strip().split(None, 1)
        rule = parts[0] if parts else ""
        reason = parts[1].strip() if len(parts) > 1 else ""
        if rule not in RULES:
            findings.append(Finding("", lineno, 0, "bad-allow",
                                    f"'plainsail: allow' names unknown rule {rule!r}" if rule
                                    else "'plainsail: allow' names no rule"))
        elif not reason:
            findings.append(Finding("", lineno, 0, "bad-allow",
                                    f"allowing {rule} needs a reason: "
                                    f"'-- plainsail: allow {rule} <why it is safe here>'"))
        else:
            out.append((lineno, rule, reason))
    return out


def _target(allow: _Allow, spans: list[_Span]) -> int | None:
    """The statement an allow comment belongs to: the one whose lines hold it, else the
    next one below it."""
    for s in spans:
        if s.first <= allow.line <= s.last:
            return s.number
    for s in spans:
        if s.first > allow.line:
            return s.number
    return None


def _apply_allows(findings: list[Finding], allows: list[_Allow], spans: list[_Span],
                  path: str) -> None:
    for allow in allows:
        target = _target(allow, spans)
        for f in findings:
            if f.statement == target and f.rule == allow.rule and f.suppressed is None:
                f.suppressed = allow.reason
                allow.used = True
        if not allow.used:
            findings.append(Finding(path, allow.line, 0, "unused-allow",
                                    f"'allow {allow.rule}' matches no finding of the "
                                    "statement it precedes"))
