"""Per-rule precision and recall of `plainsail audit` on the held-out workflows.

Each case in bench/audit_heldout/labels.json is audited as a repository folder; a rule
counts as reported for a case when the audit has at least one finding of that rule in it.
Against the hand labels this gives, per workflow rule, true and false positives and
misses, precision (TP / (TP + FP)) and recall (TP / (TP + FN)); "-" when undefined.

Usage: python bench/audit_recall.py [--misses] [--json] [--batch N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from plainsail.audit import audit
from plainsail.audit.rules import RULES

HELDOUT = Path(__file__).resolve().parent / "audit_heldout"


def load(batch: int | None) -> list[dict[str, Any]]:
    """The cases whose files are stored (a case kept only as a pointer, its licence unclear,
    cannot be audited here)."""
    cases: list[dict[str, Any]] = json.loads((HELDOUT / "labels.json").read_text())
    return [c for c in cases if (batch is None or c.get("batch", 1) == batch)
            and c["stored"]]


def pointers(batch: int | None) -> list[str]:
    cases: list[dict[str, Any]] = json.loads((HELDOUT / "labels.json").read_text())
    return [c["id"] for c in cases if (batch is None or c.get("batch", 1) == batch)
            and not c["stored"]]


def measure(batch: int | None = None) -> tuple[dict[str, dict[str, int]],
                                               list[dict[str, Any]]]:
    cases = load(batch)
    rules = [r for r, rule in RULES.items() if rule.area == "workflow"
             and all(r in case["labels"] for case in cases)]
    counts = {r: {"tp": 0, "fp": 0, "fn": 0, "positives": 0} for r in rules}
    wrong: list[dict[str, Any]] = []
    for case in cases:
        report = audit(HELDOUT / "cases" / case["id"])
        found: dict[str, list[str]] = {}
        for f in report.findings:
            found.setdefault(f.rule, []).append(f"{f.path}:{f.line}: {f.message}")
        for rule in rules:
            label, got = case["labels"][rule], rule in found
            counts[rule]["positives"] += label
            if label and got:
                counts[rule]["tp"] += 1
            elif got:
                counts[rule]["fp"] += 1
                wrong.append({"case": case["id"], "rule": rule, "kind": "false alarm",
                              "findings": found[rule], "note": case.get("note", "")})
            elif label:
                counts[rule]["fn"] += 1
                wrong.append({"case": case["id"], "rule": rule, "kind": "miss",
                              "findings": [], "note": case.get("note", "")})
    return counts, wrong


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--misses", action="store_true", help="list misses and false alarms")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--batch", type=int, help="only this batch of labels.json")
    args = parser.parse_args()
    counts, wrong = measure(args.batch)
    if args.json:
        print(json.dumps({"rules": counts, "wrong": wrong}, indent=1))
        return
    cases = load(args.batch)
    print(f"{len(cases)} held-out workflows" + (f" (batch {args.batch})" if args.batch else ""))
    if pointers(args.batch):
        print(f"labelled but not stored (licence unclear), not measured: "
              f"{', '.join(pointers(args.batch))}")
    unlabelled = [r for r, rule in RULES.items() if rule.area == "workflow"
                  and r not in counts]
    if unlabelled:
        print(f"not labelled, not measured: {', '.join(unlabelled)}")
    print(f"{'rule':32} {'pos':>4} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} "
          f"{'recall':>7}")
    for rule, c in counts.items():
        print(f"{rule:32} {c['positives']:4} {c['tp']:4} {c['fp']:4} {c['fn']:4} "
              f"{_ratio(c['tp'], c['tp'] + c['fp']):>9} {_ratio(c['tp'], c['tp'] + c['fn']):>7}")
    if args.misses:
        for w in wrong:
            print(f"\n{w['kind']}: {w['case']} {w['rule']}")
            for line in w["findings"]:
                print(f"  {line}")
            if w["note"]:
                print(f"  note: {w['note']}")


if __name__ == "__main__":
    main()
