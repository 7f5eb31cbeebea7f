"""`plainsail config check`: validate plainsail.yml and print it resolved, secrets hidden."""

from __future__ import annotations

import argparse
import os

import yaml

from plainsail.config import model as configlib
from plainsail.config import weak
from plainsail.config.secretsources import EnvSource, Source
from plainsail.output import print_json, say, warn


def run(args: argparse.Namespace) -> int:
    cfg = configlib.load(args.config, swarm_ok=True)
    # Values already in the environment only: no other source is read here.
    given = {name: os.environ[s.env] for name, s in cfg.app.secrets.items()
             if isinstance(s, EnvSource) and os.environ.get(s.env)}
    for line in weak.warnings(cfg, given):
        warn(line)
    data = configlib.to_display(cfg)
    # Secret names are shown with whether the deployer's environment has them, or where
    # they will be read from, never values: no source is read here.
    data["app"]["secrets"] = {name: _shown(name, source)
                              for name, source in cfg.app.secrets.items()}
    if args.json:
        print_json(data)
    else:
        say(f"# {cfg.path}: valid")
        say(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def _shown(name: str, source: Source) -> str:
    if isinstance(source, EnvSource):
        shown = "***" if os.environ.get(source.env) else "(not set)"
        return shown if source.env == name else f"{shown} (from {source.env})"
    return f"from the {source.describe()}, read at deploy time"
