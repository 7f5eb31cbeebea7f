"""`plainsail build`: build, label and push the image of HEAD, tagged with its git SHA."""

from __future__ import annotations

import argparse

from plainsail.commands._target import warn_insecure
from plainsail.config import model as configlib
from plainsail.output import append_github_file, print_json, progress, say, warn
from plainsail.supply.build import OCI, run_build


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config, swarm_ok=True)
    warn_insecure(cfg)
    record = run_build(
        cfg, allow_dirty=args.allow_dirty, requested_tag=args.tag, record_dir=args.record_dir,
        progress=progress(),
    )
    if f"{OCI}.source" not in record.labels:
        warn(f"no {OCI}.source label: the git repository has no remote 'origin' (and this "
             "is not GitHub Actions); set build.source in plainsail.yml to the repository's "
             "URL so the image says where its code lives")
    if "-dirty-" in record.tag:
        warn(f"built from a dirty work tree: tagged {record.tag}, which matches no commit; "
             "do not deploy it to production")
    append_github_file("GITHUB_OUTPUT", {"image-tag": record.tag, "image-digest": record.digest})
    append_github_file("GITHUB_ENV", {"IMAGE_TAG": record.tag})
    if args.json:
        print_json(record.to_json())
        return 0
    verb = "reused (already in the registry)" if record.reused else "built and pushed"
    say(f"{verb}: {record.image}:{record.tag}")
    say(f"tag:    {record.tag}")
    say(f"digest: {record.digest}")
    for key, value in record.labels.items():
        say(f"label:  {key}={value}")
    return 0
