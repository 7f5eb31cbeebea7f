"""Announce every deploy, rollback and failure to Slack-compatible webhooks.

A webhook URL carries a token, so it is a Secret: never printed, logged or recorded. An
unreachable webhook is reported as a warning and never fails a deploy, nor holds it: all
notifications of an attempt share one deadline (DEADLINE seconds; a webhook that answers
slowly, or trickles, is left behind), at most BODY_LIMIT bytes of an answer are read, and
redirects are not followed (a webhook that redirects is reported with its status).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from plainsail.config.model import NotifyTarget
from plainsail.secret import redact, scrub

log = logging.getLogger("plainsail.deploy.notify")

DEADLINE = 10.0  # seconds for all the notifications of one attempt
BODY_LIMIT = 4096  # bytes of a webhook's answer read (and thrown away)

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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed (urllib would turn a POST into a GET to any host)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post(url: str, body: bytes, timeout: float) -> str | None:
    """POST; None when the webhook took it, else why not (the URL never in it)."""
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            resp.read(BODY_LIMIT)
    except urllib.error.HTTPError as exc:
        return (f"the webhook answered {exc.code} (a redirect, not followed)"
                if 300 <= exc.code < 400 else f"the webhook answered {exc.code}")
    except (OSError, ValueError) as exc:
        return f"the webhook could not be reached ({getattr(exc, 'reason', exc)})"
    return None


def _post_into(result: list[str | None], url: str, body: bytes, timeout: float) -> None:
    try:
        result.append(_post(url, body, timeout))
    except Exception as exc:  # noqa: BLE001 - a notification never changes the outcome
        result.append(f"the notification failed ({type(exc).__name__})")


def send(
    targets: Iterable[NotifyTarget], record: Mapping[str, Any], timeout: float = 5.0,
    deadline: float = DEADLINE,
) -> list[str]:
    """POST the message to each webhook, all within `deadline` seconds (each at most
    `timeout`); return one warning per failure (URLs redacted). Each POST runs in a
    daemon thread the caller waits for with a timeout, so neither a slow webhook nor a
    signal's handler waiting on it can hold the process."""
    warnings: list[str] = []
    payload = message(record)
    payload["text"] = scrub(payload["text"])  # the body leaves the program: redact it
    body = json.dumps(payload).encode()
    end = time.monotonic() + deadline
    for i, target in enumerate(targets):
        url = target.webhook.reveal()
        if not url:
            continue
        left = min(timeout, end - time.monotonic())
        if left <= 0:
            warnings.append(f"notify[{i}]: not sent: the notifications' {deadline:g}s were "
                            "used up; the deploy is unaffected")
            continue
        result: list[str | None] = []
        worker = threading.Thread(target=_post_into, args=(result, url, body, left),
                                  daemon=True, name="plainsail-notify")
        worker.start()
        worker.join(left)
        if not result:
            warnings.append(f"notify[{i}]: the webhook did not answer within {left:g}s; "
                            "left behind, the deploy is unaffected")
        elif result[0] is not None:
            reason = redact(result[0], [target.webhook])
            warnings.append(f"notify[{i}]: {reason}; the deploy is unaffected")
    return warnings
