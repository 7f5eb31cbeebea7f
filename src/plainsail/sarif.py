"""SARIF 2.1.0 documents (code-scanning uploads), shared by `lint` and `audit`."""

from __future__ import annotations

import json
from typing import Any

from plainsail import __version__

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def result(rule: str, index: int, level: str, text: str, location: dict[str, Any],
           line: int, suppressed: str | None) -> dict[str, Any]:
    """One finding: `location` is the artifactLocation (uri, optional uriBaseId)."""
    out: dict[str, Any] = {
        "ruleId": rule,
        "ruleIndex": index,
        "level": level,
        "message": {"text": text},
        "locations": [{"physicalLocation": {
            "artifactLocation": location,
            "region": {"startLine": line},
        }}],
    }
    if suppressed is not None:
        out["suppressions"] = [{"kind": "inSource", "justification": suppressed}]
    return out


def document(rules: list[dict[str, Any]], results: list[dict[str, Any]], docs: str) -> str:
    """The whole SARIF log of one plainsail run."""
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "plainsail", "version": __version__,
                                "informationUri": docs, "rules": rules}},
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2)
