"""`# plainsail: ignore[rule-id, ...] reason` comments: the reason is required.

A comment at the end of a line covers findings on that line; a comment on a line of its
own covers the next line that is not blank or a comment (a job's or step's first line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from plainsail.audit.rules import RULES, Finding

_IGNORE = re.compile(r"#\s*plainsail:\s*ignore\[([^\]]*)\]\s*(.*)$", re.I)


@dataclass
class _Ignore:
    comment_line: int
    target: int
    rules: list[str]
    reason: str
    used: bool = False


def apply(path: str, text: str, findings: list[Finding]) -> list[Finding]:
    """Mark suppressed findings of `path`; return findings about the comments themselves."""
    lines = text.splitlines()
    problems: list[Finding] = []
    ignores: list[_Ignore] = []
    for i, line in enumerate(lines):
        m = _IGNORE.search(line)
        if not m:
            continue
        number = i + 1
        rules = [r.strip() for r in m.group(1).split(",") if r.strip()]
        reason = m.group(2).strip()
        unknown = [r for r in rules if r not in RULES]
        if not rules or unknown:
            problems.append(Finding("bad-suppression", path, number,
                                    f"ignore names unknown rule(s) {', '.join(unknown)}"
                                    if unknown else "ignore names no rule"))
            continue
        if not reason:
            problems.append(Finding("bad-suppression", path, number,
                                    f"ignoring {', '.join(rules)} needs a reason: "
                                    f"'# plainsail: ignore[{rules[0]}] <why it is safe here>'"))
            continue
        target = number
        if line[:m.start()].strip() == "":
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or lines[j].strip().startswith("#")):
                j += 1
            target = j + 1
        ignores.append(_Ignore(number, target, rules, reason))
    for f in findings:
        if f.path != path:
            continue
        for ig in ignores:
            if f.line in (ig.target, ig.comment_line) and f.rule in ig.rules:
                f.suppressed = ig.reason
                ig.used = True
    for ig in ignores:
        if not ig.used:
            problems.append(Finding("unused-suppression", path, ig.comment_line,
                                    f"ignore[{', '.join(ig.rules)}] matches no finding"))
    return problems
