"""`plainsail backup list | create | download ID | restore ID (--into DATABASE |
--in-place --yes)`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from plainsail.backup import ops
from plainsail.config import model as configlib
from plainsail.deploy.report import table
from plainsail.errors import UsageError
from plainsail.output import print_json, say


def run(args: argparse.Namespace) -> int:
    if args.action in ("download", "restore") and not args.id:
        raise UsageError(f"backup {args.action} needs the backup's ID (plainsail backup list "
                         "shows them)")
    if args.action != "restore" and (args.into or args.in_place):
        raise UsageError("--into and --in-place are for backup restore")
    if args.action == "restore" and bool(args.into) == bool(args.in_place):
        raise UsageError("backup restore needs exactly one of --into DATABASE (a new "
                         "database, the app untouched) and --in-place --yes")
    if args.in_place and not args.yes:
        raise UsageError("restore --in-place replaces the app's database with the backup "
                         "(what was written since is lost) and interrupts the service; run "
                         "it again with --yes to go ahead")
    cfg = configlib.load(args.config)
    if args.action == "list":
        found = ops.list_backups(cfg, args.host)
        if args.json:
            print_json({"service": cfg.service, "backups": found})
        elif not found:
            say(f"no backups of {cfg.service} on the hosts")
        else:
            say(table(["ID", "CREATED (UTC)", "SIZE", "TABLES", "DEPLOY", "HOST"], [
                [b["id"], str(b["created"])[:19].replace("T", " "), _size(b["size"]),
                 str(len(b["tables"])), b["deploy_id"] or "-", b["host"]] for b in found]))
        return 0
    if args.action == "create":
        rec = ops.create(cfg, args.host)
        if rec["outcome"] == ops.INTERRUPTED:
            _show(args.json, rec, f"backup create: INTERRUPTED: {rec['reason']}")
            return 130
        _show(args.json, rec, f"backup {rec['id']} taken on {rec['host']}: "
              f"{_size(rec['size'])}, {len(rec['tables'])} table(s), sha256 {rec['sha256']}")
        return 0
    if args.action == "download":
        rec = ops.download(cfg, args.id, Path(args.output) if args.output else None,
                           args.host)
        _show(args.json, rec, f"backup {rec['id']} saved to {rec['file']} (0600, "
              f"{_size(rec['size'])}, SHA-256 checked)")
        return 0
    if args.in_place:
        from plainsail.backup import inplace

        done = inplace.restore_in_place(cfg, args.id, args.host)
        _show(args.json, done, f"restore in place: {done['outcome'].upper()}: "
              f"{done['reason']}")
        return {inplace.RESTORED: 0, inplace.INTERRUPTED: 130}.get(done["outcome"], 1)
    result = ops.restore_into(cfg, args.id, args.into, args.host)
    _show(args.json, result, f"backup {args.id} restored into the new database "
          f"{args.into} in {result['seconds']:.1f}s; the app still uses its own"
          + (f" ({result['note']})" if result.get("note") else ""))
    return 0


def _show(as_json: bool, data: dict[str, Any], line: str) -> None:
    if as_json:
        print_json(data)
    else:
        say(line)


def _size(n: Any) -> str:
    size = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
