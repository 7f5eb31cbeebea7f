"""`plainsail verify [TAG|DIGEST]`: check the signature; print the verified digest."""

from __future__ import annotations

import argparse

from plainsail.commands._target import target, warn_insecure
from plainsail.config import model as configlib
from plainsail.output import print_json, say, warn
from plainsail.supply.verification import verify_image


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config, swarm_ok=True)
    warn_insecure(cfg)
    tag, digest = target(cfg, args.ref)
    verified = verify_image(cfg, tag, digest, public_key=args.key)
    if args.json:
        print_json(verified.to_json())
        return 0
    for skipped in verified.skipped:
        warn(f"skipped a signature layer: {skipped}")
    for unchecked in verified.unchecked:
        warn(f"not checked: {unchecked}")
    by = verified.signer + (f" (issuer {verified.issuer})" if verified.issuer else "")
    kind = " (a Sigstore bundle)" if verified.format == "bundle" else ""
    named = f" for {verified.identity}" if verified.identity else ""
    say(f"Verified: {verified.pinned} is signed{kind} by {by}{named}")
    say(verified.digest)
    return 0
