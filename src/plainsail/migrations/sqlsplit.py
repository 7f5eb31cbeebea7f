"""Split a SQL file into statements, with the line each one starts on.

Standard library only: this runs inside application containers. It understands what can
hide a semicolon in PostgreSQL and SQLite text: '...' and E'...' strings, "..." identifiers,
$tag$...$tag$ bodies, -- and nested /* */ comments, parentheses (the actions of a
multi-action CREATE RULE), and the BEGIN ... END body of a CREATE FUNCTION/PROCEDURE/TRIGGER
(SQL-standard bodies, SQLite triggers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")
_WORD = re.compile(r"[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*")


@dataclass(frozen=True)
class Statement:
    """One statement: its 1-based number in the file, first line, text and keywords."""

    number: int
    line: int
    text: str
    words: tuple[str, ...] = field(repr=False, default=())

    def starts_with(self, *words: str) -> bool:
        return self.words[: len(words)] == words

    def has_words(self, *words: str) -> bool:
        """True if `words` appear consecutively anywhere in the statement's keywords."""
        n = len(words)
        return any(self.words[i : i + n] == words for i in range(len(self.words) - n + 1))


@dataclass
class _Builder:
    start: int = -1
    words: list[str] = field(default_factory=list)
    depth: int = 0  # BEGIN/CASE ... END nesting inside a routine or trigger body
    parens: int = 0  # open parentheses: a multi-action rule's (...; ...) holds semicolons

    def routine(self) -> bool:
        w = self.words
        if w[:1] != ["CREATE"]:
            return False
        rest = w[1:]
        if rest[:2] == ["OR", "REPLACE"]:
            rest = rest[2:]
        while rest and rest[0] in ("TEMP", "TEMPORARY", "CONSTRAINT"):
            rest = rest[1:]
        return bool(rest) and rest[0] in ("FUNCTION", "PROCEDURE", "TRIGGER")


class SplitError(ValueError):
    """The text ends inside a string, identifier, comment or body."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def split_sql(text: str) -> list[Statement]:
    """Return the statements of `text`; empty statements (lone `;`) are dropped."""
    out: list[Statement] = []
    cur = _Builder()
    i, n = 0, len(text)
    line = 1
    line_at: dict[int, int] = {}

    def begin_token(pos: int) -> None:
        if cur.start < 0:
            cur.start = pos
            line_at[pos] = line

    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c == "/" and text.startswith("/*", i):
            start_line, depth, i = line, 1, i + 2
            while depth and i < n:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        line += 1
                    i += 1
            if depth:
                raise SplitError("a /* comment is never closed", start_line)
        elif c == "'" or c == '"':
            begin_token(i)
            escapes = c == "'" and i > 0 and text[i - 1] in "eE" and (
                i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_")
            )
            start_line, i = line, i + 1
            while True:
                if i >= n:
                    what = "string" if c == "'" else "quoted identifier"
                    raise SplitError(f"a {what} is never closed", start_line)
                ch = text[i]
                if ch == "\n":
                    line += 1
                if escapes and ch == "\\":
                    if i + 1 < n and text[i + 1] == "\n":
                        line += 1
                    i += 2
                    continue
                if ch == c:
                    if i + 1 < n and text[i + 1] == c:
                        i += 2
                        continue
                    i += 1
                    break
                i += 1
        elif c == "$" and (m := _DOLLAR_TAG.match(text, i)) and not (
            i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            begin_token(i)
            tag = m.group(0)
            end = text.find(tag, m.end())
            if end < 0:
                raise SplitError(f"a {tag} quoted body is never closed", line)
            line += text.count("\n", i, end + len(tag))
            i = end + len(tag)
        elif c == "(" or c == ")":
            begin_token(i)
            if c == "(":
                cur.parens += 1
            elif cur.parens > 0:
                cur.parens -= 1
            i += 1
        elif c == ";":
            if cur.depth > 0 or cur.parens > 0:
                i += 1
                continue
            if cur.start >= 0:
                out.append(_finish(text, cur, i, line_at, len(out) + 1))
            cur = _Builder()
            i += 1
        elif m := _WORD.match(text, i):
            begin_token(i)
            word = m.group(0).upper()
            cur.words.append(word)
            if cur.routine():
                if word in ("BEGIN", "CASE"):
                    # `BEGIN ATOMIC` or a trigger body opens a block; CASE pairs with END.
                    cur.depth += 1
                elif word == "END" and cur.depth > 0:
                    cur.depth -= 1
            i = m.end()
        else:
            begin_token(i)
            i += 1
    if cur.start >= 0:
        out.append(_finish(text, cur, n, line_at, len(out) + 1))
    return out


def _finish(text: str, cur: _Builder, end: int, line_at: dict[int, int], number: int) -> Statement:
    return Statement(
        number=number,
        line=line_at[cur.start],
        text=text[cur.start : end].rstrip(),
        words=tuple(cur.words),
    )
