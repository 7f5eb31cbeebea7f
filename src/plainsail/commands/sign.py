"""`plainsail sign [TAG|DIGEST]`: sign the image's digest, store the signature."""

from __future__ import annotations

import argparse

from plainsail.commands._target import target, warn_insecure
from plainsail.config import model as configlib
from plainsail.output import print_json, say
from plainsail.supply.signing import sign_image


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config, swarm_ok=True)
    warn_insecure(cfg)
    tag, digest = target(cfg, args.ref)
    result = sign_image(cfg, tag, digest, key=args.key)
    if args.json:
        print_json(result.to_json())
    elif result.added:
        say(f"Signed {result.repository}@{result.digest}")
        say(f"Signature stored in {result.signature_ref} ({result.layers} signature(s))")
    else:
        say(f"{result.repository}@{result.digest} is already signed by this key; nothing "
            "to do")
    return 0
