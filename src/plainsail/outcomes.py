"""How a deploy or rollback ended, and the exit code each outcome means."""

from __future__ import annotations

from typing import Any

SUCCEEDED = "succeeded"
UNCHANGED = "unchanged"
ABORTED = "aborted"
FAILED_MIGRATION = "failed-migration"
RESTORED = "failed-health-restored"
LEFT_STOPPED = "failed-health-left-stopped"
RESTORE_FAILED = "restore-failed"
INTERRUPTED = "interrupted"
FAILED_OUTCOMES = (ABORTED, FAILED_MIGRATION, RESTORED, LEFT_STOPPED, RESTORE_FAILED,
                   INTERRUPTED)


def exit_code(summary: dict[str, Any]) -> int:
    outcome = summary.get("outcome")
    if outcome == INTERRUPTED:
        return 130
    return 1 if outcome in FAILED_OUTCOMES else 0
