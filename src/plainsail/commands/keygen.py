"""`plainsail keygen`: write a cosign-compatible key pair (PREFIX.key, PREFIX.pub), and
keep the private key out of images and commits (.dockerignore, .gitignore).

Paths are shown relative to the top of the git work tree (else the key's folder), and the
advice ends with the files to commit: `plainsail build` refuses a work tree with
uncommitted changes, and keygen has just changed the ignore files."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from plainsail.output import say
from plainsail.supply.keys import (
    add_ignore_entries,
    check_free,
    generate,
    key_root,
    read_passphrase,
)


def run(args: argparse.Namespace) -> int:
    key_path, _ = check_free(args.output_key_prefix)
    passphrase = read_passphrase(str(key_path), confirm=True)
    changed = add_ignore_entries(key_path)
    key_path, pub_path = generate(args.output_key_prefix, passphrase)
    root, in_git = key_root(key_path)

    def shown(p: Path) -> str:
        return p.resolve().relative_to(root).as_posix()

    say(f"Private key written to {shown(key_path)} (mode 0600; keep it and its passphrase "
        "secret; never commit it)")
    say(f"Public key written to {shown(pub_path)} (set signing.public_key to it)")
    for name, lines in changed:
        say(f"Updated {name} (added {', '.join(lines)})")
    if in_git:
        # What to commit, as paths the user can paste from where keygen ran.
        files = [root / name for name, _ in changed] + [pub_path.resolve()]
        here = Path.cwd().resolve()
        argv = ["git", "add", "--", *(os.path.relpath(f, here) for f in files)]
        say(f"Next: commit {', '.join(shown(f) for f in files)} ({shlex.join(argv)} && git "
            "commit); plainsail build refuses a work tree with uncommitted changes")
    return 0
