"""Lint one SQL text: parse it, run the rules statement by statement, apply suppressions.

A finding is accepted with a comment on the statement's own lines or right above it:
`-- plainsail: allow <rule-id> <reason>`. The reason is required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from plainsail.lint.rules import RULES, FileState, check
from plainsail.migrations.files import NO_TRANSACTION_MARKER

_ALLOW = re.compile(r"--[ \t]*plainsail:[ \t]*allow\b[ \t]*(.*)$", re.I)
_MARKER = re.compile(r"^[ \t]*--[ \t]*plainsail:[ \t]*no-transaction[ \t]*$", re.I | re.M)


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


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


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


def lint_text(path: str, text: str) -> list[Finding]:
    from pglast import parse_sql
    from pglast.parser import ParseError

    findings: list[Finding] = []
    allows = _allows(path, text, findings)
    try:
        raw = parse_sql(text)
    except ParseError as exc:
        loc = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        findings.append(Finding(path, _line_of(text, loc), 0, "parse-error",
                                f"cannot parse: {exc.args[0]}"))
        return findings
    state = FileState()
    # A plainsail file runs inside the runner's transaction; output of Alembic or Django,
    # which prints its own BEGIN/COMMIT, runs outside one between them.
    from pglast import ast

    if any(isinstance(r.stmt, ast.TransactionStmt) for r in raw):
        state.in_transaction = False
    no_tx = bool(_MARKER.search(text))
    if no_tx:
        state.in_transaction = False
        from plainsail.lint.rules import non_transactional

        special = [r for r in raw if non_transactional(r.stmt)]
        if len(raw) != 1 or len(special) != 1:
            line = _line_of(text, _MARKER.search(text).start())  # type: ignore[union-attr]
            findings.append(Finding(
                path, line, 0, "no-transaction-file",
                f"marked '{NO_TRANSACTION_MARKER}' but holds {len(raw)} statement(s), "
                f"{len(special)} of which need it; it must hold exactly one such statement"))
    spans: list[_Span] = []
    for number, r in enumerate(raw, start=1):
        loc = r.stmt_location or 0
        start = _skip_blank(text, loc)
        end = loc + r.stmt_len if r.stmt_len else len(text)
        span = _Span(number, _line_of(text, start), _line_of(text, max(start, end)))
        spans.append(span)
        for rule, message in check(r.stmt, state):
            findings.append(Finding(path, span.first, number, rule, message))
    _apply_allows(findings, allows, spans, path)
    findings.sort(key=lambda f: (f.line, f.statement, f.rule))
    return findings


def _allows(path: str, text: str, findings: list[Finding]) -> list[_Allow]:
    out: list[_Allow] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _ALLOW.search(line)
        if not m:
            continue
        parts = m.group(1).strip().split(None, 1)
        rule = parts[0] if parts else ""
        reason = parts[1].strip() if len(parts) > 1 else ""
        if rule not in RULES:
            findings.append(Finding(path, lineno, 0, "bad-allow",
                                    f"'plainsail: allow' names unknown rule {rule!r}" if rule
                                    else "'plainsail: allow' names no rule"))
        elif not reason:
            findings.append(Finding(path, lineno, 0, "bad-allow",
                                    f"allowing {rule} needs a reason: "
                                    f"'-- plainsail: allow {rule} <why it is safe here>'"))
        else:
            out.append(_Allow(lineno, rule, reason))
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
