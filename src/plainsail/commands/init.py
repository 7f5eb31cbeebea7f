"""`plainsail init`: set a service's repository up for plainsail and GitHub Actions."""

from __future__ import annotations

import argparse
from pathlib import Path

from plainsail.ci.init import Options, init
from plainsail.output import print_json, say


def run(args: argparse.Namespace) -> int:
    opts = Options(
        service=args.service, image=args.image, hosts=list(args.host), port=args.port,
        health_path=args.health_path, migrate_command=args.migrate_command, ci=args.ci,
        force=args.force, install=args.install, plainsail_repo=args.plainsail_repo,
        plainsail_ref=args.plainsail_ref,
    )
    result = init(Path.cwd(), opts)
    if args.json:
        print_json({
            "written": result.written, "appended": result.appended, "keys": result.keys,
            "port": result.port, "migrations": result.migrations,
            "migrate_command": result.migrate_command, "next_steps": result.next_steps,
        })
        return 0
    for path in result.written:
        say(f"wrote {path}")
    for path in result.appended:
        say(f"added cosign.key and .plainsail/ to {path}")
    say(f"app.port {result.port}" + (" (from the Dockerfile's EXPOSE)" if result.port_detected
                                     else ""))
    if result.migrations:
        say(f"migrations in {result.migrations}/: migrate.command "
            f"{' '.join(result.migrate_command or [])}")
    if result.keys == "generated":
        say("wrote cosign.key (mode 0600) and cosign.pub, with the passphrase in "
            "COSIGN_PASSWORD")
    elif result.keys == "kept":
        say("kept the existing cosign.key/cosign.pub")
    say("")
    say("Next steps:")
    for i, step in enumerate(result.next_steps, start=1):
        say(f"  {i}. {step}")
    return 0
