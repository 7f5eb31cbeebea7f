"""Lint one SQL text: parse it, run the rules statement by statement, apply suppressions.

A finding is accepted with a comment on the statement's own lines or right above it:
`-- plainsail: allow <rule-id> <reason>`. The reason is required.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plainsail.lint.catalog import RULES, Column, Deferred
from plainsail.migrations.files import NO_TRANSACTION_MARKER

_ALLOW = re.compile(r"--[ \t]*plainsail:[ \t]*allow\b[ \t]*(.*)$", re.I)
_MARKER = re.compile(r"^[ \t]*--[ \t]*plainsail:[ \t]*no-transaction[ \t]*\r?$", re.I | re.M)
_STRING = re.compile(r"'((?:[^']|'')*)'", re.S)
if TYPE_CHECKING:
    from plainsail.lint.rules import FileState


@dataclass
class Finding:
    path: str
    line: int
    statement: int  # 1-based; 0 for findings about the file or a comment
    rule: str
    message: str
    suppressed: str | None = None  # the reason given in the allow comment

    @property
    def severity(self) -> str:
        return RULES[self.rule].severity


@dataclass
class FileResult:
    """What linting one file found, without knowledge of other files: its findings, the
    findings that depend on earlier files (`deferred`, with their line and statement),
    and what it establishes about columns for later files. Picklable and cacheable."""

    findings: list[Finding]
    deferred: list[tuple[Deferred, int, int]] = field(default_factory=list)
    columns: dict[str, Column] = field(default_factory=dict)
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    allows: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass
class _Allow:
    line: int
    rule: str
    reason: str
    used: bool = False


@dataclass(frozen=True)
class _Span:
    number: int
    first: int
    last: int


class _Lines:
    """Line numbers of text offsets, by bisecting the newline positions once."""

    def __init__(self, text: str) -> None:
        self.starts = [m.end() for m in re.finditer("\n", text)]

    def __call__(self, pos: int) -> int:
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


def _command_offsets(text: str, start: int, end: int) -> list[int]:
    """Where each comma-separated command of an ALTER TABLE starts: after ALTER TABLE
    name, split at commas outside parentheses, strings, identifiers and comments."""
    out: list[int] = []
    depth, i = 0, start
    while i < end:
        c = text[i]
        if c in "'\"":
            j = text.find(c, i + 1)
            while j >= 0 and j + 1 < end and text[j + 1] == c:
                j = text.find(c, j + 2)
            i = end if j < 0 else j + 1
            continue
        if text.startswith("--", i):
            j = text.find("\n", i)
            i = end if j < 0 else j
            continue
        if c == "$":
            m = re.compile(r"\$[A-Za-z_]*\$").match(text, i)
            if m:
                j = text.find(m.group(0), m.end())
                i = end if j < 0 else j + len(m.group(0))
                continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(_skip_blank(text, i + 1))
        i += 1
    # The first command begins after "ALTER TABLE [IF EXISTS] [ONLY] name".
    m = re.compile(r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?"
                   r"(?:\"[^\"]*\"|[^\s\"]+)(?:\s*\.\s*(?:\"[^\"]*\"|[^\s\"]+))?\s*\*?\s*",
                   re.I).match(text, start)
    return [_skip_blank(text, m.end()) if m else start, *out]


# In the parser's JSON every statement starts with this; nested statements (a rule's
# actions, a CREATE TABLE AS query) have no "stmt" key, and quotes inside strings are
# escaped, so the pattern finds exactly the top-level statements.
_STMT = re.compile(r'\{"stmt":\{"(\w+)"')
_STMT_LOCATION = re.compile(r'"stmt_location":(\d+)')
_STMT_LEN = re.compile(r'"stmt_len":(\d+)')


def _statements(text: str) -> tuple[list[tuple[int, int, str, dict[str, Any]]],
                                     Callable[[int], int]]:
    """(start, end, kind, node) of every statement, offsets in characters, from one parse;
    and the function that turns the parser's byte offsets into character offsets.

    Only statements some rule looks at are decoded from the parser's JSON (node {} for the
    others): an INSERT of a thousand rows costs a regular expression, not a decode."""
    import json

    from plainsail.lint.pgparse import parse_sql_json
    from plainsail.lint.rules import KINDS

    doc = parse_sql_json(text)
    if text.isascii():
        def chars(pos: int) -> int:
            return pos
    else:
        raw = text.encode("utf-8")

        def chars(pos: int) -> int:
            return len(raw[:pos].decode("utf-8", errors="ignore"))

    decode = json.JSONDecoder().raw_decode
    found = list(_STMT.finditer(doc))
    out = []
    for i, m in enumerate(found):
        kind = m.group(1)
        stop = found[i + 1].start() if i + 1 < len(found) else len(doc)
        if kind in KINDS:
            st, _ = decode(doc, m.start())
            loc, length = int(st.get("stmt_location", 0)), int(st.get("stmt_len", 0))
            node = st["stmt"][kind]
        else:
            tail = doc.rfind('"stmt_location"', m.end(), stop)
            lm = _STMT_LOCATION.match(doc, tail) if tail >= 0 else None
            tail = doc.rfind('"stmt_len"', m.end(), stop)
            ln = _STMT_LEN.match(doc, tail) if tail >= 0 else None
            loc, length = int(lm.group(1)) if lm else 0, int(ln.group(1)) if ln else 0
            node = {}
        start = chars(loc)
        end = chars(loc + length) if length else len(text)
        out.append((start, end, kind, node))
    return out, chars


def analyze(text: str, first_line: int = 1, marked: bool = False) -> FileResult:
    """Lint one file on its own. `first_line` is where the no-transaction marker counts
    (dbmate: the up section's first line); `marked` is a layout's own marker.

    The file is parsed once by PostgreSQL's parser, whose JSON the rules read directly."""
    from plainsail.lint.pgparse import ParseError
    from plainsail.lint.rules import FileState, check, may_run_alone, recreated

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
    if marked or first_line in markers:
        state.in_transaction = False
        if len(stmts) != 1 or not may_run_alone(stmts[0][2], stmts[0][3]):
            findings.append(Finding(
                "", first_line, 0, "no-transaction-file",
                f"marked no-transaction but holds {len(stmts)} statement(s); it must hold "
                "exactly one statement that cannot run in a transaction"))
    for number, (loc, end, kind, node) in enumerate(stmts, start=1):
        start = _skip_blank(text, loc)
        result.spans.append((number, line_of(start), line_of(max(start, end))))
        offsets = ([loc + o for o in _command_offsets(text[loc:end], 0, end - loc)]
                   if kind == "AlterTableStmt" else None)
        for rule, message, at in check(kind, node, state, offsets):
            findings.append(Finding("", line_of(at if at is not None else start), number,
                                    rule, message))
        for d in state.pending_deferred:
            result.deferred.append((d, line_of(d[3] if d[3] is not None else start), number))
        if kind == "DoStmt":
            _do_block(node, state, number, line_of, findings, result, chars)
    again = recreated(state)
    if again:
        findings[:] = [f for f in findings if not (
            f.rule in ("drop-view", "drop-function") and f.message in again)]
    result.columns = state.columns
    return result


def _do_block(node: dict[str, Any], state: FileState, number: int, line_of: _Lines,
              findings: list[Finding], result: FileResult,
              chars: Callable[[int], int]) -> None:
    """Lint the SQL a PL/pgSQL DO block runs: its statements and constant EXECUTE strings;
    a COMMIT or ROLLBACK inside needs a no-transaction file."""
    import json

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
        tree = json.loads(parse_plpgsql_json(
            "CREATE FUNCTION plainsail_do() RETURNS void LANGUAGE plpgsql "
            "AS $plainsail_do$" + body + "$plainsail_do$"))
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
                stmts = json.loads(parse_sql_json(sql)).get("stmts", ())
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
