"""Render an audit report as text, JSON, SARIF 2.1.0 or GitHub Actions annotations."""

from __future__ import annotations

import json
from typing import Any

from plainsail import sarif as sarif_log
from plainsail.audit import Report
from plainsail.audit.rules import DOCS, ERROR, RULES


def text(report: Report) -> str:
    lines: list[str] = []
    for f in report.active:
        lines.append(f"{f.path}:{f.line}: {f.severity} {f.rule}: {f.message}")
        lines.append(f"    fix: {f.fix}")
    lines.extend(f"note: {n}" for n in report.notes)
    c = report.counts()
    lines.append(f"{len(report.files)} file(s) checked: {c['errors']} error(s), "
                 f"{c['warnings']} warning(s), {c['suppressed']} suppressed")
    return "\n".join(lines)


def as_json(report: Report) -> str:
    data = {
        "files": report.files,
        **report.counts(),
        "findings": [{
            "rule": f.rule, "severity": f.severity, "path": f.path, "line": f.line,
            "message": f.message, "fix": f.fix, "suppressed": f.suppressed,
        } for f in report.findings],
        "notes": report.notes,
    }
    return json.dumps(data, indent=2)


def sarif(report: Report) -> str:
    ids: list[str] = list(RULES)
    extra = sorted({f.rule for f in report.findings} - set(ids))
    ids += extra
    rules: list[dict[str, Any]] = []
    for rid in ids:
        r = RULES.get(rid)
        sample = next((f for f in report.findings if f.rule == rid), None)
        title = r.title if r else f"migration lint: {rid}"
        fix = r.fix if r else (sample.fix if sample else "")
        level = r.severity if r else (sample.severity if sample else ERROR)
        rules.append({
            "id": rid, "name": rid,
            "shortDescription": {"text": title},
            "help": {"text": f"{title}. Fix: {fix}"},
            "helpUri": f"{DOCS}#{rid}",
            "defaultConfiguration": {"level": level},
        })
    results: list[dict[str, Any]] = []
    for f in report.findings:
        result = sarif_log.result(f.rule, ids.index(f.rule), f.severity,
                                  f"{f.message}. Fix: {f.fix}",
                                  {"uri": f.path, "uriBaseId": "%SRCROOT%"},
                                  max(1, f.line), f.suppressed)
        results.append(result)
    return sarif_log.document(rules, results, DOCS)


def _prop(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A") \
        .replace(":", "%3A").replace(",", "%2C")


def _data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github(report: Report) -> str:
    lines = []
    for f in report.active:
        level = "error" if f.severity == ERROR else "warning"
        lines.append(f"::{level} file={_prop(f.path)},line={f.line},"
                     f"title={_prop(f.rule)}::{_data(f.message + '. Fix: ' + f.fix)}")
    c = report.counts()
    lines.append(f"{len(report.files)} file(s) checked: {c['errors']} error(s), "
                 f"{c['warnings']} warning(s), {c['suppressed']} suppressed")
    return "\n".join(lines)


RENDER = {"text": text, "json": as_json, "sarif": sarif, "github": github}
