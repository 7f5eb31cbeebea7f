"""Announce every deploy, rollback and failure to Slack-compatible webhooks.

A webhook URL carries a token, so it is a Secret: never printed, logged or recorded. An
unreachable webhook is reported as a warning and never fails a deploy.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from plainsail.config.model import NotifyTarget
from plainsail.secret import redact, scrub

log = logging.getLogger("plainsail.deploy.notify")

ICONS = {"succeeded": ":white_check_mark:", "unchanged": ":information_source:"}


def message(record: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack-compatible payload: `text` for any consumer, blocks for Slack."""
    outcome = str(record.get("outcome", "unknown"))
    icon = ICONS.get(outcome, ":rotating_light:")
    kind = record.get("kind", "deploy")
    hosts = ", ".join(record.get("hosts") or [str(record.get("host", ""))])
    text = (
        f"{icon} {record.get('service')} {kind} of {record.get('tag')} "
        f"({str(record.get('digest', ''))[:19]}) on {hosts}: {outcome.upper()}"
    )
    if record.get("previous_tag"):
        text += f" (previous: {record['previous_tag']})"
    if record.get("reason") and outcome != "succeeded":
        text += f"\nwhy: {record['reason']}"
    gate = record.get("schema_gate") or {}
    if gate.get("verdict") == "allowed":
        found = gate.get("findings") or []
        first = found[0] if found else {}
        text += (f"\n:warning: --allow-breaking-migrations: {len(found)} migration finding(s) "
                 f"that break {', '.join(str(v.get('tag')) for v in gate.get('old') or [])} "
                 f"went ahead (first: {first.get('file')}:{first.get('line')} "
                 f"{first.get('rule')})")
    text += f"\nby {record.get('who')} from {record.get('origin')}, deploy {record.get('id')}"
    return {"text": text, "username": "plainsail"}


def send(
    targets: Iterable[NotifyTarget], record: Mapping[str, Any], timeout: float = 5.0
) -> list[str]:
    """POST the message to each webhook; return one warning per failure (URLs redacted)."""
    warnings: list[str] = []
    payload = message(record)
    payload["text"] = scrub(payload["text"])  # the body leaves the program: redact it
    body = json.dumps(payload).encode()
    for i, target in enumerate(targets):
        url = target.webhook.reveal()
        if not url:
            continue
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            warnings.append(f"notify[{i}]: the webhook answered {exc.code}; the deploy is "
                            "unaffected")
        except (OSError, ValueError) as exc:
            reason = redact(str(getattr(exc, "reason", exc)), [target.webhook])
            warnings.append(f"notify[{i}]: the webhook could not be reached ({reason}); the "
                            "deploy is unaffected")
    return warnings
