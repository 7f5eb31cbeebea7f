"""`plainsail audit`: check a repository against the deploy rules.

GitHub Actions workflows (errors), Dockerfiles and plainsail.yml (warnings), and through
the migration lint, the migrations. `audit(path)` returns a Report; plainsail.audit.formats
renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from plainsail.audit.rules import ERROR, RULES, Finding, Rule

__all__ = ["ERROR", "RULES", "Finding", "Report", "Rule", "audit"]


@dataclass
class Report:
    root: str
    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[Finding]:
        return [f for f in self.findings if f.suppressed is None]

    def counts(self) -> dict[str, int]:
        active = self.active
        return {
            "errors": sum(f.severity == ERROR for f in active),
            "warnings": sum(f.severity != ERROR for f in active),
            "suppressed": len(self.findings) - len(active),
        }

    @property
    def exit_code(self) -> int:
        return 1 if self.counts()["errors"] else 0


def audit(path: str | Path) -> Report:
    from plainsail.audit.engine import run

    return run(Path(path))
