"""`plainsail inspect [TAG|DIGEST]`: an image's provenance, read from the registry."""

from __future__ import annotations

import argparse

from plainsail.commands._target import target, warn_insecure
from plainsail.config import model as configlib
from plainsail.output import print_json, say
from plainsail.supply.provenance import FIELDS, inspect_image


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config, swarm_ok=True)
    warn_insecure(cfg)
    tag, digest = target(cfg, args.ref)
    prov = inspect_image(cfg, tag, digest)
    if args.json:
        print_json(prov.to_json())
        return 0
    say(f"image:    {prov.repository}" + (f":{prov.tag}" if prov.tag else ""))
    say(f"digest:   {prov.digest}")
    for name in FIELDS:
        say(f"{name + ':':<9} {prov.field(name) or '(label missing)'}")
    return 0
