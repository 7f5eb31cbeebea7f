"""Rollback: a deploy of a previous known-good image, found in the deployment records.

Migrations are forward-only and never run by a rollback. The target runs with the app
settings its release ran with, as its record holds them (`app.env`, command, ports,
network, volumes, ...), and secrets with today's values: a bad release that was a config
change is undone by the rollback too. A retained container created with the same
environment and options is started again (the fast path, no pull); else a fresh container
is created from the recorded digest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from plainsail.config.model import Config
from plainsail.deploy import settings as settingslib
from plainsail.deploy.outcomes import RECOVERED, SUCCEEDED
from plainsail.deploy.plan import Request, select_hosts, ssh_options
from plainsail.deploy.run import Deploy, Reporter
from plainsail.errors import DeployError, UsageError
from plainsail.hosts import state as hoststate
from plainsail.hosts.containers import current, list_service
from plainsail.hosts.executor import Executor, executor_for
from plainsail.hosts.fleet import opened
from plainsail.progress import NULL, Progress, reporter


def successes(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Successful deploys and rollbacks, newest first."""
    good = [r for r in records if r.get("outcome") in (SUCCEEDED, RECOVERED) and r.get("tag")]
    return sorted(good, key=lambda r: str(r.get("started", "")), reverse=True)


def previous_good(
    records: Sequence[dict[str, Any]], running_tag: str | None
) -> dict[str, Any] | None:
    """The newest success before the one now running, with another tag."""
    good = successes(records)
    if running_tag:
        idx = next((i for i, r in enumerate(good) if r["tag"] == running_tag), None)
        if idx is not None:
            good = good[idx + 1:]
    return next((r for r in good if r["tag"] != running_tag), None)


@dataclass
class Choice:
    """The release to roll back to, agreed by every selected host."""

    tag: str
    digest: str
    running: str | None  # the tag(s) running now
    record: dict[str, Any] = field(default_factory=dict)  # its successful attempt's record


def choose(cfg: Config, hosts: list[str], to: str | None,
           executors: dict[str, Executor] | None = None, *,
           warn: Callable[[str], None]) -> tuple[str, str, str | None]:
    """(tag, digest, tag running now) agreed by every selected host (`warn` is told of
    damaged history lines)."""
    c = choose_release(cfg, hosts, to, executors, warn=warn)
    return c.tag, c.digest, c.running


def choose_release(cfg: Config, hosts: list[str], to: str | None,
                   executors: dict[str, Executor] | None = None, *,
                   warn: Callable[[str], None]) -> Choice:
    """The release to roll back to, with the record of the attempt that deployed it
    (`warn` is told of damaged history lines)."""
    picks: dict[str, tuple[str, str]] = {}
    records_of: dict[str, dict[str, Any]] = {}
    running: dict[str, str | None] = {}
    with opened(cfg, hosts, executors) as fleet:
        for o in fleet:
            records = hoststate.read_history(o.ex, o.paths, warn)
            cur = current(list_service(o.ex, cfg.service))
            running[o.host.name] = cur.tag if cur else None
            if to:
                rec = next((r for r in successes(records) if r["tag"] == to), None)
                if rec is None:
                    known = sorted({r["tag"] for r in successes(records)})
                    raise UsageError(
                        f"{o.host.name}: {to} never deployed successfully there, so it is not "
                        "a known-good version; successful tags: "
                        f"{', '.join(known) or 'none'}"
                    )
            else:
                if records.damaged:
                    known = sorted({r["tag"] for r in successes(records)})
                    raise DeployError(
                        records.describe_damage(o.host.name) + ", so the previous version "
                        "cannot be chosen safely; name it with --to TAG (successful tags "
                        f"that can be read: {', '.join(known) or 'none'})")
                rec = previous_good(records, running[o.host.name])
                if rec is None:
                    raise DeployError(
                        f"{o.host.name}: nothing to roll back to: no successful deploy before "
                        f"the one now running ({running[o.host.name] or 'nothing runs'})"
                    )
            picks[o.host.name] = (rec["tag"], rec["digest"])
            records_of[o.host.name] = rec
    distinct = set(picks.values())
    if len(distinct) > 1:
        detail = ", ".join(f"{h}: {t}" for h, (t, _) in picks.items())
        raise UsageError(f"the hosts disagree on the previous version ({detail}); choose one "
                         "with --to TAG")
    tag, digest = distinct.pop()
    froms = {t for t in running.values() if t}
    if froms == {tag}:
        raise UsageError(f"{tag} is already running; nothing to roll back")
    record = next(iter(records_of.values()), {})
    return Choice(tag, digest, ", ".join(sorted(froms)) or None, record)


def release_settings(cfg: Config, choice: Choice) -> tuple[Config, str]:
    """The config to run the target with: its release's recorded app settings, secrets
    with today's values; and the line that says so (names, never values)."""
    recorded = choice.record.get("settings")
    if not isinstance(recorded, dict):
        return cfg, (f"the record of {choice.tag} holds no app settings (an earlier plainsail "
                     "wrote it): it runs with today's settings")
    then, differ = settingslib.apply(cfg, recorded)
    said = (f"{choice.tag} runs with the app settings it ran with (deploy "
            f"{choice.record.get('id')})" + (f", which differ from today's in: "
                                             f"{', '.join(differ)}" if differ else
                                             ", the same as today's")
            + "; secrets keep today's values")
    gone = sorted(set(recorded.get("secrets") or []) - set(cfg.app.secrets))
    if gone:
        said += f" (it had secrets no longer configured, left out: {', '.join(gone)})"
    return then, said


def rollback(cfg: Config, *, to: str | None = None, hosts: list[str] | None = None,
             dry_run: bool = False, report: Reporter = NULL,
             environ: dict[str, str] | None = None,
             drill: str | None = None,
             allow_breaking_migrations: bool = False,
             allow_shallow_clone: bool = False,
             progress: Progress = NULL) -> dict[str, Any]:
    hosts = hosts or []
    out = reporter(report, progress)
    # One connection per host serves both reading the records and the deploy itself.
    executors = {h.name: executor_for(h, ssh_options(cfg), cfg.secrets())
                 for h in select_hosts(cfg, hosts)}
    try:
        choice = choose_release(cfg, hosts, to, executors, warn=out.warn)
    except BaseException:
        for ex in executors.values():
            ex.close()
        raise
    run_cfg, said = release_settings(cfg, choice)
    out.say(said, "rollback")
    req = Request(ref=f"{choice.tag}@{choice.digest}", hosts=hosts, skip_migrations=True,
                  dry_run=dry_run, force=True, kind="rollback", rollback_from=choice.running,
                  drill=drill, allow_breaking_migrations=allow_breaking_migrations,
                  allow_shallow_clone=allow_shallow_clone, settings_from=said)
    return Deploy(run_cfg, req, out, environ=environ, executors=executors).run()
