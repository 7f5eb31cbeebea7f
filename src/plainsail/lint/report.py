"""Render lint findings as text, JSON or SARIF 2.1.0 (for code-scanning annotations)."""

from __future__ import annotations

import json
from typing import Any

from plainsail import sarif as sarif_log
from plainsail.lint.catalog import ERROR, RULES
from plainsail.lint.engine import Finding
from plainsail.migrations.files import shown

DOCS = "https://github.com/plainsail/plainsail/blob/main/docs/migrations.md"


def counts(findings: list[Finding]) -> dict[str, int]:
    active = [f for f in findings if f.suppressed is None]
    return {
        "errors": sum(f.severity == ERROR for f in active),
        "warnings": sum(f.severity != ERROR for f in active),
        "accepted": len(findings) - len(active),
    }


def text(findings: list[Finding], files: int) -> str:
    """One line per finding; the reasoning and the safe alternative once per rule."""
    lines: list[str] = []
    explained: set[str] = set()
    for f in findings:
        if f.suppressed is not None:
            continue
        rule = RULES[f.rule]
        where = f" (statement {f.statement})" if f.statement else ""
        lines.append(f"{shown(str(f.path))}:{f.line}: {rule.severity} {f.rule}: {f.message}{where}")
        if f.rule not in explained:
            explained.add(f.rule)
            lines.append(f"    why: {rule.why}")
            lines.append(f"    instead: {rule.instead}")
    c = counts(findings)
    lines.append(f"{files} file(s) checked: {c['errors']} error(s), {c['warnings']} "
                 f"warning(s), {c['accepted']} accepted with 'plainsail: allow'")
    return "\n".join(lines)


def as_json(findings: list[Finding], files: int) -> str:
    """The same text as json.dumps(document, indent=2), written directly: the encoder
    json.dumps uses for indented output is pure Python and took longer than the lint."""
    from json.encoder import encode_basestring_ascii as enc

    head = {"files": files, **counts(findings)}
    lines = ["{"] + [f'  "{k}": {v},' for k, v in head.items()]
    if not findings:
        return "\n".join([*lines, '  "findings": []', "}"])
    why = {r.id: (enc(r.why), enc(r.instead)) for r in RULES.values()}
    items = []
    for f in findings:
        rule = RULES[f.rule]
        accepted = "null" if f.suppressed is None else enc(f.suppressed)
        items.append(
            f'    {{\n      "path": {enc(f.path)},\n      "line": {f.line},\n'
            f'      "statement": {f.statement},\n      "rule": {enc(f.rule)},\n'
            f'      "severity": {enc(rule.severity)},\n      "message": {enc(f.message)},\n'
            f'      "accepted": {accepted},\n      "why": {why[f.rule][0]},\n'
            f'      "instead": {why[f.rule][1]}\n    }}')
    return "\n".join([*lines, '  "findings": [', ",\n".join(items), "  ]", "}"])


def as_json_reference(findings: list[Finding], files: int) -> str:
    """What as_json writes, built the slow, obvious way (tests compare the two)."""
    data = {
        "files": files,
        **counts(findings),
        "findings": [{
            "path": f.path, "line": f.line, "statement": f.statement, "rule": f.rule,
            "severity": f.severity, "message": f.message, "accepted": f.suppressed,
            "why": RULES[f.rule].why, "instead": RULES[f.rule].instead,
        } for f in findings],
    }
    return json.dumps(data, indent=2)


def sarif(findings: list[Finding]) -> str:
    ids = list(RULES)
    rules = [{
        "id": r.id,
        "name": r.id,
        "shortDescription": {"text": r.title},
        "fullDescription": {"text": r.why},
        "help": {"text": f"{r.why}\nInstead: {r.instead}"},
        "helpUri": f"{DOCS}#{r.id}",
        "defaultConfiguration": {"level": r.severity},
    } for r in RULES.values()]
    results: list[dict[str, Any]] = []
    for f in findings:
        rule = RULES[f.rule]
        result = sarif_log.result(f.rule, ids.index(f.rule), rule.severity,
                                  f"{f.message}. Instead: {rule.instead}",
                                  {"uri": f.path.replace("\\", "/")}, f.line, f.suppressed)
        results.append(result)
    return sarif_log.document(rules, results, DOCS)
