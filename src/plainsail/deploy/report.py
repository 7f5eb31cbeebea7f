"""Human renderings of deploy records: the closing verdict, tables, markdown for CI (text
only: the CLI shows it, `plainsail.commands._results`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

VERDICTS = {
    "succeeded": "SUCCEEDED",
    "unchanged": "UNCHANGED",
    "dry-run": "DRY RUN",
    "aborted": "ABORTED (nothing was switched; the running version is untouched)",
    "failed-migration": "FAILED: migrations failed; the old version keeps serving",
    "failed-health-old-kept": "FAILED: the new version never took traffic; the old one "
                              "kept serving",
    "failed-health-restored": "FAILED, RESTORED the previous version",
    "failed-traffic-restored": "FAILED on real traffic, ROUTED BACK to the previous version",
    "failed-health-left-stopped": "FAILED, left for a human (on_failure: stop)",
    "restore-failed": "FAILED, AND THE PREVIOUS VERSION COULD NOT BE RESTORED",
    "interrupted": "INTERRUPTED",
    "recovered": "RECOVERED: the last known-good version runs again",
}


def render_summary(s: dict[str, Any]) -> str:
    kind = s.get("kind", "deploy")
    lines = [f"{kind} {s.get('id')}: {VERDICTS.get(str(s.get('outcome')), s.get('outcome'))}"]
    lines.append(f"  image:  {s.get('image')}:{s.get('tag')} ({s.get('digest')})")
    if s.get("recovered_from"):
        lines.append(f"  recovered from the interrupted attempt {s['recovered_from']}")
    if s.get("rollback_from"):
        lines.append(f"  rollback: {s['rollback_from']} -> {s.get('rollback_to')}")
    if s.get("settings_from"):
        lines.append(f"  settings: {s['settings_from']}")
    if s.get("reason"):
        lines.append(f"  why:    {s['reason']}")
    for h in s.get("per_host") or []:
        notes = [f"was {h['previous_tag']}"] if h.get("previous_tag") else []
        notes += [f"batch {h['batch']}"] if h.get("batch") and len(s["per_host"]) > 1 else []
        notes += [gate_note(h["traffic_gate"])] if h.get("traffic_gate") else []
        notes += ["not touched"] if str(h.get("reason") or "").startswith("not touched") \
            else []
        lines.append(f"  {h['host']}: {h['outcome']}" + (f" ({'; '.join(notes)})"
                                                          if notes else ""))
    m = s.get("migration")
    if m and m.get("exit_code") != 0:
        lines.append("  migration output (tail):")
        lines += [f"    {line}" for line in str(m.get("output_tail", "")).splitlines()[-15:]]
    lines.append(f"  took {s.get('seconds', 0):.1f}s")
    return "\n".join(lines)


def gate_note(tg: dict[str, Any]) -> str:
    """A host's traffic gate verdict in a few words: `traffic gate failed: 42 requests,
    30.8% 5xx, p95 45ms`."""
    new = tg.get("new")
    if not isinstance(new, dict):
        return f"traffic gate {tg.get('verdict')}"
    return (f"traffic gate {tg.get('verdict')}: {new.get('requests', 0)} requests, "
            + gate_figures(new))


def gate_figures(new: dict[str, Any]) -> str:
    """One version's figures of a traffic gate window: `30.8% 5xx, p95 45ms`."""
    p95 = new.get("p95")
    return (f"{new.get('error_rate', 0):g}% 5xx, p95 "
            + (f"{float(p95) * 1000:.0f}ms" if isinstance(p95, int | float) else "-"))


def summary_markdown(s: dict[str, Any]) -> str:
    rows = "\n".join(f"| {h['host']} | {h['outcome']} | {h.get('previous_tag') or ''} |"
                     for h in s.get("per_host") or [])
    return (
        f"### plainsail {s.get('kind', 'deploy')} of `{s.get('tag')}`: "
        f"{str(s.get('outcome')).upper()}\n\n"
        f"- image: `{s.get('image')}@{s.get('digest')}`\n- why: {s.get('reason')}\n"
        f"- by {s.get('who')} from {s.get('origin')}\n\n"
        f"| host | outcome | previous |\n|---|---|---|\n{rows}\n"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    data = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in data]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers).rstrip()]
    out += [fmt.format(*r).rstrip() for r in data]
    return "\n".join(out)
