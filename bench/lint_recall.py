"""Recall and precision of `plainsail lint migrations` against squawk on a real history.

Both tools lint the same files (the ones plainsail reads from the folder, in its layout);
their findings are mapped to statements (file, first line of the statement), so a tool
that reports a statement twice counts once.

- "danger" findings: squawk's rules that report a statement that can break the previous
  app version or hold a lock that blocks it (SQUAWK_DANGER below); plainsail's rules but
  the lock_timeout hint (PLAINSAIL_NOT_DANGER). Style rules (prefer-*, robust statements,
  timeouts) are left out on both sides.
- --sample N: a reproducible random sample (--seed) of plainsail's danger findings (for
  precision) and of the statements either tool flags (for recall), printed with their
  SQL, to be judged by hand.
- --labels FILE: the hand verdicts (JSON, see bench/lint_labels.json); prints recall
  (labelled dangerous statements each tool flags) and precision (labelled plainsail
  findings that are right).

Usage: python bench/lint_recall.py CORPUS_DIR [--squawk PATH] [--sample N] [--seed S]
       [--labels FILE] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SQUAWK_DANGER = {
    "adding-field-with-default", "adding-foreign-key-constraint",
    "adding-not-nullable-field", "adding-required-field", "adding-serial-primary-key-field",
    "ban-drop-column", "ban-drop-table", "ban-drop-view", "ban-drop-function",
    "ban-drop-default", "ban-drop-database", "changing-column-type",
    "constraint-missing-not-valid", "disallowed-unique-constraint", "renaming-column",
    "renaming-table", "renaming-object", "require-concurrent-index-creation",
    "require-concurrent-index-deletion", "require-concurrent-reindex", "ban-drop-type",
    "ban-drop-sequence", "ban-drop-schema", "ban-truncate-cascade", "ban-alter-domain-with-"
    "add-constraint", "ban-create-domain-with-constraint",
}


# A hint about the file (plainsail migrate sets lock_timeout itself), the tool's own
# bookkeeping, and SQL neither tool can read: not findings about a dangerous statement.
PLAINSAIL_NOT_DANGER = {"missing-lock-timeout", "parse-error", "bad-allow", "unused-allow"}


def statements(path: str, text: str, first_line: int) -> list[tuple[int, int, str]]:
    """(first line, last line, SQL) of each statement of one file."""
    from plainsail.lint.engine import _Lines, _skip_blank, _statements
    from plainsail.lint.pgparse import ParseError

    lines = _Lines(text)
    try:
        stmts, _ = _statements(text)
    except ParseError:
        return []
    out = []
    for start, end, _kind, _node in stmts:
        s = _skip_blank(text, start)
        out.append((lines(s), lines(max(s, end)), text[s:end].strip()))
    return out


def _statement_of(spans: list[tuple[int, int, str]], line: int) -> int:
    for first, last, _ in spans:
        if first <= line <= last:
            return first
    before = [first for first, _, _ in spans if first <= line]
    return before[-1] if before else line


def run_plainsail(corpus: Path) -> list[dict[str, Any]]:
    env = {**os.environ, "PLAINSAIL_LINT_CACHE": "off"}
    out = subprocess.run([sys.executable, "-m", "plainsail", "lint", "migrations",
                          str(corpus), "--format", "json"], capture_output=True, text=True,
                         env=env, check=False)
    if not out.stdout.strip():
        raise SystemExit(f"plainsail failed: {out.stderr.strip()}")
    findings: list[dict[str, Any]] = json.loads(out.stdout)["findings"]
    return findings


def run_squawk(squawk: str, files: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run([squawk, "--reporter", "json", *files], capture_output=True,
                         text=True, check=False)
    findings: list[dict[str, Any]] = json.loads(out.stdout or "[]")
    return findings


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--squawk", default=shutil.which("squawk"))
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--labels")
    ap.add_argument("--explain", action="store_true",
                    help="sort the statements only squawk flags by kind")
    ap.add_argument("--show", type=int, default=0,
                    help="print up to N statements per squawk rule that only squawk flags")
    ap.add_argument("--name", help="the corpus's name in the labels file (default: folder)")
    args = ap.parse_args()
    from plainsail.lint.sources import collect

    corpus = Path(args.corpus).resolve()
    name = args.name or corpus.name
    sources = collect([str(corpus)])
    spans = {s.name: statements(s.name, s.text, s.first_line) for s in sources}
    rel = {s.name: os.path.relpath(s.name, corpus) for s in sources}

    ps = [f for f in run_plainsail(corpus) if f["accepted"] is None]
    ps_danger = [f for f in ps if f["rule"] not in PLAINSAIL_NOT_DANGER]
    ps_stmts: dict[tuple[str, int], set[str]] = {}
    for f in ps_danger:
        key = (rel[f["path"]], _statement_of(spans[f["path"]], f["line"]))
        ps_stmts.setdefault(key, set()).add(f["rule"])

    sq_stmts: dict[tuple[str, int], set[str]] = {}
    sq_all: Counter[str] = Counter()
    if args.squawk:
        for f in run_squawk(args.squawk, [s.name for s in sources]):
            sq_all[f["rule_name"]] += 1
            if f["rule_name"] in SQUAWK_DANGER and f["file"] in spans:
                # squawk's lines count from 0
                key = (rel[f["file"]], _statement_of(spans[f["file"]], int(f["line"]) + 1))
                sq_stmts.setdefault(key, set()).add(f["rule_name"])

    print(f"{name}: {len(sources)} files, "
          f"{sum(len(v) for v in spans.values())} statements")
    print(f"  plainsail: {len(ps_danger)} findings on {len(ps_stmts)} statements; "
          f"{len(ps) - len(ps_danger)} lock_timeout hints/parse errors")
    if args.squawk:
        print(f"  squawk: {sum(sq_all.values())} findings, {len(sq_stmts)} statements with a "
              "danger rule")
        both = set(ps_stmts) & set(sq_stmts)
        only_sq = sorted(set(sq_stmts) - set(ps_stmts))
        only_ps = sorted(set(ps_stmts) - set(sq_stmts))
        print(f"  statements flagged by both {len(both)}, only squawk {len(only_sq)}, only "
              f"plainsail {len(only_ps)}")
        print("  only squawk, by rule:", dict(Counter(
            r for k in only_sq for r in sq_stmts[k]).most_common()))
        print("  only plainsail, by rule:", dict(Counter(
            r for k in only_ps for r in ps_stmts[k]).most_common()))
        if args.explain:
            texts = {rel[src.name]: src.text for src in sources}
            kinds: Counter[str] = Counter()
            other = []
            for k in only_sq:
                text = texts[k[0]]
                cut = len("\n".join(text.split("\n")[:k[1] - 1]))
                kind = kind_of(text_of_all(spans, rel).get(k, ""), text[:cut], text[cut:])
                kinds[kind] += 1
                if kind == "other":
                    other.append(k)
            print("  only squawk, by kind:", dict(kinds.most_common()))
            for k in other:
                print(f"    other: {k[0]}:{k[1]} {sorted(sq_stmts[k])}")
        if args.show:
            shown: Counter[str] = Counter()
            for k in only_sq:
                rule = sorted(sq_stmts[k])[0]
                if shown[rule] < args.show:
                    shown[rule] += 1
                    print(f"  -- only squawk {sorted(sq_stmts[k])} {k[0]}:{k[1]}")
                    print("     " + text_of_all(spans, rel).get(k, "?")[:300].replace(
                        "\n", "\n     "))
    text_of = text_of_all(spans, rel)
    if args.sample:
        rng = random.Random(args.seed)
        pick = rng.sample(ps_danger, min(args.sample, len(ps_danger)))
        print(f"\n## precision sample: {len(pick)} plainsail findings (seed {args.seed})")
        for f in sorted(pick, key=lambda f: (f["path"], f["line"])):
            key = (rel[f["path"]], _statement_of(spans[f["path"]], f["line"]))
            print(json.dumps({"corpus": name, "file": key[0], "line": f["line"],
                              "rule": f["rule"], "message": f["message"]}))
            print("    " + text_of.get(key, "?")[:400].replace("\n", "\n    "))
        union = sorted(set(sq_stmts) | set(ps_stmts))
        pick2 = rng.sample(union, min(args.sample, len(union)))
        print(f"\n## recall sample: {len(pick2)} statements either tool flags")
        for key in sorted(pick2):
            print(json.dumps({"corpus": name, "file": key[0], "statement_line": key[1],
                              "squawk": sorted(sq_stmts.get(key, ())),
                              "plainsail": sorted(ps_stmts.get(key, ()))}))
            print("    " + text_of.get(key, "?")[:400].replace("\n", "\n    "))
    if args.labels:
        score(json.loads(Path(args.labels).read_text()), name, ps_danger, ps_stmts, sq_stmts,
              rel, spans)
    return 0


_IDENT = r'(?:"[^"]+"|[\w.]+)(?:\s*\.\s*(?:"[^"]+"|\w+))?'
_TARGET = re.compile(
    r"(?is)\s*(?:alter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?|create\s+(?:unique\s+)?"
    r"index\s+(?:concurrently\s+)?(?:if\s+not\s+exists\s+)?(?:\"[^\"]+\"|\S+)?\s*on\s+"
    r"(?:only\s+)?|drop\s+(?:view|table|function|materialized\s+view)\s+(?:if\s+exists\s+)?)"
    r"(" + _IDENT + r")")


def _created(kinds: str, name: str, text: str) -> bool:
    return bool(re.search(
        r"(?is)create\s+(?:or\s+replace\s+)?(?:temp(?:orary)?\s+|unlogged\s+)?(?:" + kinds
        + r")\s+(?:if\s+not\s+exists\s+)?(?:\"?\w+\"?\s*\.\s*)?\"?" + re.escape(name)
        + r'"?[\s(]', text))


def kind_of(sql: str, before: str, after: str) -> str:
    """What a statement only squawk flags is, told from its text and its file: the
    breakdown docs/migrations.md gives (a rough reading by regular expressions, for the
    report only; "other" is left to be read by hand)."""
    m = _TARGET.match(sql)
    target = m.group(1).replace('"', "").split(".")[-1].lower() if m else None
    if re.match(r"(?is)\s*alter\s+(index|sequence|type|trigger)\b.*\brename\b", sql) or \
            re.match(r"(?is)\s*alter\s+table\b.*\brename\s+constraint\b", sql):
        return "renames an index, sequence, type, trigger or constraint"
    if re.match(r"(?is)\s*drop\s+(type|sequence|schema)\b", sql):
        return "drops a type, sequence or schema"
    if target and _created("table|materialized\\s+view|view", target, before):
        return "its table or view is created earlier in the same file"
    if target and sql.lstrip().lower().startswith("drop") and _created(
            "view|materialized\\s+view|function|table", target, after):
        return "dropped and created again later in the same file"
    dropped = re.search(r'(?is)alter\s+(?:column\s+)?"?(\w+)"?\s+drop\s+default', sql)
    if dropped and re.search(r'(?is)\b"?' + re.escape(dropped.group(1))
                             + r'"?\s+set\s+default\b', after):
        return "a default dropped and set again later in the same file"
    if "timestamptz" in sql.lower() and "set timezone" in before.lower():
        return "timestamp to timestamptz with the session in UTC"
    return "other"


def text_of_all(spans: dict[str, list[tuple[int, int, str]]],
                rel: dict[str, str]) -> dict[tuple[str, int], str]:
    return {(rel[n], first): sql for n, sp in spans.items() for first, _, sql in sp}


def score(labels: dict[str, Any], name: str, ps_danger: list[dict[str, Any]],
          ps_stmts: dict[tuple[str, int], set[str]],
          sq_stmts: dict[tuple[str, int], set[str]], rel: dict[str, str],
          spans: dict[str, list[tuple[int, int, str]]]) -> None:
    """Recall on the labelled dangerous statements, precision on the labelled findings."""
    current = {(rel[f["path"]], f["line"], f["rule"]) for f in ps_danger}
    judged = [x for x in labels.get("precision", []) if x["corpus"] == name]
    if judged:
        still = [x for x in judged if (x["file"], x["line"], x["rule"]) in current]
        right = sum(x["verdict"] == "right" for x in still)
        print(f"\nprecision: {right}/{len(still)} labelled plainsail findings are right "
              f"({len(judged) - len(still)} labelled findings no longer reported)")
    sampled = [x for x in labels.get("recall", []) if x["corpus"] == name]
    for tool, flagged in (("plainsail", ps_stmts), ("squawk", sq_stmts)):
        mine = [x for x in sampled if (x["file"], x["statement_line"]) in flagged]
        if mine:
            print(f"{tool} flags {len(mine)} of the {len(sampled)} sampled statements, "
                  f"{sum(x['dangerous'] for x in mine)} of them dangerous")
    recall = [x for x in sampled if x["dangerous"]]
    if recall:
        keys = [(x["file"], x["statement_line"]) for x in recall]
        ps_hit = sum(k in ps_stmts for k in keys)
        sq_hit = sum(k in sq_stmts for k in keys)
        print(f"recall on {len(keys)} labelled dangerous statements: plainsail {ps_hit}, "
              f"squawk {sq_hit}")
        for x, k in zip(recall, keys, strict=True):
            if k not in ps_stmts:
                print(f"  plainsail misses {k[0]}:{k[1]}: {x.get('why', '')}")


if __name__ == "__main__":
    raise SystemExit(main())
