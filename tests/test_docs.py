"""The docs cannot drift: every command is documented, every config key too, and the
README's two top commands are the scripts CI runs."""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from pathlib import Path

from plainsail.cli import COMMANDS, build_parser
from plainsail.config import model as configlib

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()

    def walk(cls: type, prefix: str) -> None:
        for f in fields(cls):
            if f.name == "path":
                continue
            key = f"{prefix}{f.name}"
            t = {"registry": configlib.RegistryAuth, "build": configlib.BuildConfig,
                 "signing": configlib.SigningConfig, "ssh": configlib.SSHConfig,
                 "app": configlib.AppConfig, "migrate": configlib.MigrateConfig,
                 "health": configlib.HealthConfig,
                 "timeouts": configlib.TimeoutsConfig}.get(f.name) if not prefix else None
            if t is not None and is_dataclass(t):
                walk(t, f"{key}.")
            elif f.name == "notify":
                assert "`notify[].webhook`" in doc
            else:
                assert f"`{key}`" in doc, key

    walk(configlib.Config, "")


def test_every_swarm_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    nested = {"update": configlib.SwarmUpdate}
    for f in fields(configlib.SwarmConfig):
        inner = nested.get(f.name)
        keys = [f"swarm.{f.name}.{g.name}" for g in fields(inner)] if inner else [
            f"swarm.{f.name}"]
        for key in keys:
            assert f"`{key}`" in doc, key
    for res in fields(configlib.SwarmResourceSet):
        assert res.name in doc
    for name in ("cpus", "memory"):
        assert f"`{name}`" in doc


def test_readme_top_commands_and_ci() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert block and readme.index("```sh") < 40
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert lines == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def test_help_is_fast_and_light() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import sys, plainsail.cli; plainsail.cli.build_parser(); "
         "print(','.join(m for m in sys.modules if m.startswith(('httpx','cryptography',"
         "'psycopg','pglast','yaml'))))"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert build_parser().prog == "plainsail"


def test_cli_doc_is_generated_from_the_parser() -> None:
    from plainsail.clidoc import render

    text = render()
    for name in COMMANDS:  # the generator documents every command
        assert f"`plainsail {name}" in text, name
    assert (ROOT / "docs" / "cli.md").read_text() == text, (
        "docs/cli.md is out of date: python -m plainsail.clidoc > docs/cli.md")


def test_scripts_name_no_host() -> None:
    # Set-up and demo scripts rely on the tools' own defaults (debootstrap's mirror, the
    # package manager's sources): a host named here would be one more thing to keep true.
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        hosts = re.findall(r"://([A-Za-z0-9.-]*[A-Za-z][A-Za-z0-9.-]*)", script.read_text())
        assert [h for h in hosts if h != "localhost"] == [], script.name


def test_every_argument_is_explained_in_help() -> None:
    from plainsail.clidoc import _subparsers, options

    for name, p in _subparsers(build_parser()).items():
        for a in options(p):
            assert a.help, f"plainsail {name} {a.option_strings or a.dest} has no help text"


def test_help_lists_every_outcome_and_its_exit_code() -> None:
    from plainsail.cli import OUTCOME_EPILOG
    from plainsail.deploy.outcomes import EXIT_CODES, OUTCOMES

    assert set(EXIT_CODES) == set(OUTCOMES)
    for outcome, code in EXIT_CODES.items():
        assert re.search(rf"^  {re.escape(outcome)}\s+{code}\s", OUTCOME_EPILOG, re.M), outcome
