"""docs/cli.md, generated from the argument parser (tests/test_docs.py keeps it current:
`python -m plainsail.clidoc > docs/cli.md`)."""

from __future__ import annotations

import argparse

from plainsail.cli import COMMANDS, OUTCOME_EPILOG, build_parser

INTRO = """# Commands

This page is generated from `plainsail --help` (`python -m plainsail.clidoc > docs/cli.md`);
a test fails when it is out of date.

Every command reads `./plainsail.yml` unless given `-c/--config PATH` (or
`$PLAINSAIL_CONFIG`), and shows every command it runs on a host with `-v/--verbose`,
secrets redacted. Both options work before or after the command name.

Long steps show their progress without `-v`: `build` each build step and each layer
pushed; `deploy`, `rollback`, `recover` and `drill` the pull on each host (layers done), the image
sent to each host's registry (`registry: {mode: host}`, blob by blob) and every attempt of
the health gate with its answer. On a terminal `build`'s progress is one line updated in
place, and `deploy`, `rollback`, `recover` and `drill` print their event lines
(`[web-1] pull: ok (0.4s)`) above a live view with one line per host: the step it is in,
how long that step has run, and the step's latest progress (a finished host shows its
outcome). Elsewhere (a pipe, a file, or with `CI` set) there is one line per event,
`[host] text` (with `--json` on stderr); in GitHub Actions the lines of each host are
folded into a `::group::` of their own, shown once every host finished the phase (the
pull, a batch's switch, ...). A failed
`docker build` says which step failed and its telling line, then shows that step's last
lines (`  | ...`), secrets redacted.

## Exit codes

| code | meaning |
|---|---|
| `0` | done |
| `1` | an expected failure: one line on stderr says what is wrong and what to do |
| `2` | a usage error (a wrong argument, a mutable tag) |
| `3` | a bug in plainsail: the message names a file with the details (secrets redacted) |
| `130` | interrupted (SIGTERM or Ctrl-C) |

`deploy`, `rollback` and `recover` end in one outcome from a closed set, printed, recorded
locally and on every host reached, announced to the webhooks; with `--json` stdout carries
exactly one JSON object whose `outcome` is that outcome, whatever happens:

"""

OUTRO = """
In GitHub Actions, `build` appends `image-tag` and `image-digest` to `$GITHUB_OUTPUT` and
`IMAGE_TAG` to `$GITHUB_ENV`; `deploy` and `rollback` fold each host's lines with `::group::`,
mark failures with `::error::` (on stderr with `--json`) and append a markdown summary to
`$GITHUB_STEP_SUMMARY`.
"""


def _outcome_table() -> str:
    rows = ["| outcome | exit code | meaning |", "|---|---|---|"]
    for line in OUTCOME_EPILOG.splitlines()[1:-1]:
        name, code, meaning = line.split(maxsplit=2)
        rows.append(f"| `{name}` | `{code}` | {meaning} |")
    return "\n".join(rows) + "\n"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments a user can give (hidden and -h excluded)."""
    return [a for a in p._actions if a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction)]


def render() -> str:
    subs = _subparsers(build_parser())
    out = [INTRO, _outcome_table()]
    for name in COMMANDS:
        p = subs[name]
        usage = " ".join(p.format_usage().split()).removeprefix("usage: ")
        out.append(f"\n## `plainsail {name}`\n\n{p.description}\n\n```\n{usage}\n```\n")
        rows = []
        for a in options(p):
            if a.dest in ("config", "verbose"):
                continue
            flag = ", ".join(a.option_strings) or (a.metavar or a.dest)
            if a.choices and not a.option_strings:
                flag = "|".join(str(c) for c in a.choices)
            text = str(a.help or "").replace("|", "\\|")
            rows.append(f"| `{flag}` | {text} |")
        if rows:
            out.append("\n| argument | meaning |\n|---|---|\n" + "\n".join(rows) + "\n")
    out.append(OUTRO)
    return "".join(out)


if __name__ == "__main__":
    print(render(), end="")
