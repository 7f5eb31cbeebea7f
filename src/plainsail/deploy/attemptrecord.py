"""The records of a deploy attempt on hosts: one per host (what its history keeps: from,
to, batch, each step's duration, outcome) and the summary naming every host, those never
reached included. Free text is redacted (`plainsail.deploy.records`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from plainsail.deploy import settings as settingslib
from plainsail.deploy.records import now, redact_free_text

if TYPE_CHECKING:
    from plainsail.deploy.run import Deploy
    from plainsail.deploy.switch import HostRun

__all__ = ["record", "summary"]


def record(self: Deploy, run: HostRun | None, outcome: str, reason: str) -> dict[str, Any]:
    """The record of the attempt `self` (with `run`: of that host's part of it)."""
    t = self.target
    rec: dict[str, Any] = {
        "id": self.id,
        "kind": self.req.kind,
        "drill": self.req.drill,
        "service": self.cfg.service,
        "image": self.cfg.image,
        "tag": t.tag if t else None,
        "digest": t.digest if t else None,
        "verified": t.verified if t else False,
        "signed_by": t.signed_by if t else None,
        "who": self.who,
        "origin": self.origin,
        "started": self.started,
        "ended": now(),
        "seconds": round(time.monotonic() - self.t0, 3),
        "outcome": outcome,
        "reason": reason,
        "skip_migrations": self.req.skip_migrations,
        "requested": self.req.ref,
        "allow_breaking_migrations": self.req.allow_breaking_migrations,
        "allow_shallow_clone": self.req.allow_shallow_clone,
        "schema_gate": self.gate.record() if self.gate else None,
        # The app's settings this attempt ran with (no secret values): what a rollback
        # to this release runs it with.
        "settings": settingslib.recorded(self.cfg),
    }
    if self.req.kind == "rollback":
        rec["rollback_from"] = self.req.rollback_from
        rec["rollback_to"] = t.tag if t else None
        rec["settings_from"] = self.req.settings_from
    if self.req.kind == "recover":
        rec["recovered_from"] = self.req.rollback_from
    if run is not None:
        rec.update({
            "host": run.host.name,
            "batch": run.batch or None,
            "previous_tag": run.previous.tag if run.previous else None,
            "previous_digest": run.previous.digest if run.previous else None,
            "container": run.new_name or None,
            "reused_container": bool(run.reuse),
            "steps": [s.__dict__ for s in run.steps],
            "health": run.health,
            "restore_health": run.restore_health,
            "log_tail": run.log_tail,
            "in_flight_at_switch": run.in_flight_at_switch,
            "traffic_gate": run.traffic,
            "maintenance": run.maintenance,
            "settings_changed": run.settings_changed or None,
        })
    if self.hs is not None and self.hs.migration:
        rec["migration"] = self.hs.migration
    if self.hs is not None and self.hs.backup:
        rec["backup"] = self.hs.backup
    return redact_free_text(rec, self.secret_values)

def summary(self: Deploy, outcome: str, reason: str, preflight: bool = False) -> dict[str, Any]:
    """The attempt's summary record: every host named, with its outcome and steps, those
    never reached included (`deploy --json` prints it, the local history keeps it)."""
    rec = record(self, None, outcome, reason)
    rec["hosts"] = [h.name for h in self.hosts] or list(self.req.hosts)
    rec["preflight"] = preflight
    rec["per_host"] = [
        {"host": r.host.name, "outcome": r.outcome or outcome, "reason": r.reason,
         "previous_tag": r.previous.tag if r.previous else None,
         "settings_changed": r.settings_changed or None,
         "batch": r.batch or None,
         "traffic_gate": r.traffic,
         "steps": [{"name": s.name, "seconds": s.seconds, "ok": s.ok} for s in r.steps]}
        for r in self.runs
    ]
    if not self.runs:  # stopped in preflight: every host still named, and why
        unreached = self.unreached or {h.name: "not reached: the attempt stopped before "
                                       "connecting to the hosts" for h in self.hosts}
        rec["per_host"] = [{"host": name, "outcome": outcome, "reason": why,
                            "previous_tag": None, "batch": None, "steps": []}
                           for name, why in unreached.items()]
    return redact_free_text(rec, self.secret_values)
