"""`plainsail keygen`: write a cosign-compatible key pair (PREFIX.key, PREFIX.pub), and
keep the private key out of images and commits (.dockerignore, .gitignore)."""

from __future__ import annotations

import argparse

from plainsail.output import say
from plainsail.supply.keys import add_ignore_entries, check_free, generate, read_passphrase


def run(args: argparse.Namespace) -> int:
    key_path, _ = check_free(args.output_key_prefix)
    passphrase = read_passphrase(str(key_path), confirm=True)
    changed = add_ignore_entries(key_path)
    key_path, pub_path = generate(args.output_key_prefix, passphrase)
    say(f"Private key written to {key_path} (mode 0600; keep it and its passphrase secret)")
    say(f"Public key written to {pub_path} (set signing.public_key to it)")
    for line in changed:
        say(f"Updated {line}")
    return 0
