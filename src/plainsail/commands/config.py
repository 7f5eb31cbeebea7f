"""`plainsail config check`: validate plainsail.yml and print it resolved, secrets hidden."""

from __future__ import annotations

import argparse
import os

import yaml

from plainsail import config as configlib
from plainsail.output import print_json, say


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config)
    data = configlib.to_display(cfg)
    # Secret names are shown with whether the deployer's environment has them, never values.
    data["app"]["secrets"] = {
        name: ("***" if os.environ.get(name) else "(not set)") for name in cfg.app.secrets
    }
    if args.json:
        print_json(data)
    else:
        say(f"# {cfg.path}: valid")
        say(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0
