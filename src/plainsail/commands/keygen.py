"""`plainsail keygen`: write a cosign-compatible key pair (PREFIX.key, PREFIX.pub)."""

from __future__ import annotations

import argparse

from plainsail.keys import generate
from plainsail.output import say


def run(args: argparse.Namespace) -> int:
    key_path, pub_path = generate(args.output_key_prefix)
    say(f"Private key written to {key_path} (mode 0600; keep it and its passphrase secret)")
    say(f"Public key written to {pub_path} (set signing.public_key to it)")
    return 0
