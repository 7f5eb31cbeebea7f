"""How a deploy or rollback ended, and the exit code each outcome means."""

from __future__ import annotations

from typing import Any

SUCCEEDED = "succeeded"
UNCHANGED = "unchanged"
ABORTED = "aborted"
FAILED_MIGRATION = "failed-migration"
RESTORED = "failed-health-restored"
OLD_KEPT = "failed-health-old-kept"  # behind the proxy: the old version never stopped
LEFT_STOPPED = "failed-health-left-stopped"
# behind the proxy with traffic_gate: the new version's real answers were worse than the
# old version's; the route went back to the old one, which never stopped
TRAFFIC_RESTORED = "failed-traffic-restored"
RESTORE_FAILED = "restore-failed"
INTERRUPTED = "interrupted"
RECOVERED = "recovered"
# The closed set: every deploy, rollback and recovery ends in exactly one of these.
OUTCOMES = (SUCCEEDED, UNCHANGED, RECOVERED, ABORTED, FAILED_MIGRATION, OLD_KEPT, RESTORED,
            TRAFFIC_RESTORED, LEFT_STOPPED, RESTORE_FAILED, INTERRUPTED)
FAILED_OUTCOMES = (ABORTED, FAILED_MIGRATION, OLD_KEPT, RESTORED, TRAFFIC_RESTORED,
                   LEFT_STOPPED, RESTORE_FAILED, INTERRUPTED)


EXIT_CODES = {SUCCEEDED: 0, UNCHANGED: 0, RECOVERED: 0, ABORTED: 1, FAILED_MIGRATION: 1,
              OLD_KEPT: 1, RESTORED: 1, TRAFFIC_RESTORED: 1, LEFT_STOPPED: 1,
              RESTORE_FAILED: 1, INTERRUPTED: 130}


def exit_code(summary: dict[str, Any]) -> int:
    """0 only for succeeded, unchanged and recovered (and a dry run); never 0 for an
    outcome outside the closed set."""
    outcome = summary.get("outcome")
    if outcome == "dry-run":
        return 0
    return EXIT_CODES.get(str(outcome), 1)
