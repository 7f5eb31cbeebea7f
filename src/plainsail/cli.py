"""The `plainsail` command: parse arguments, call one command function, map errors.

Each subcommand lives in `plainsail.commands.<name>` and is imported only when used, so
`plainsail --help` stays fast. Command functions take the parsed arguments and return an
exit code. Expected failures are PlainsailError: one line on stderr, exit 1 (2 for usage).
Ctrl-C exits 130. Anything else is a bug: exit 3 with a pointer to the full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from plainsail import __version__

if TYPE_CHECKING:
    import logging

# subcommand -> (module under plainsail.commands, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("build", "build, label and push the image of HEAD, tagged with its git SHA"),
    "inspect": ("provenance", "show an image's provenance as the registry has it"),
    "keygen": ("keygen", "create a cosign-compatible signing key pair"),
    "sign": ("sign", "sign an image's digest and store the signature in the registry"),
    "verify": ("verify", "check an image's signature against a public key"),
    "migrate": ("migrate", "apply SQL migrations, each file in its own transaction"),
    "lint": ("lint", "check migrations for changes the running app cannot survive"),
    "deploy": ("deploy", "deploy a built, signed image to the hosts"),
    "rollback": ("rollback", "deploy the previous known-good image again"),
    "drill": ("drill", "roll back to the previous known-good version and deploy the current "
              "one again, timed: the rollback procedure, tested"),
    "recover": ("recover", "put the last known-good version back after an interrupted "
                "attempt and release its lock"),
    "maintenance": ("maintenance", "behind the proxy: answer 503 (maintenance page) for this "
                    "service, or stop doing so; deploys still work behind it"),
    "backup": ("backup", "list, take, download or restore backups of the app's database "
               "(pg_dump on the host; see docs/backups.md)"),
    "history": ("history", "list deploy attempts, newest first"),
    "status": ("status", "show what runs on each host and its health now (exit 1 when a "
               "host cannot be reached; the others are still shown)"),
    "logs": ("logs", "show the app container's logs"),
    "lock": ("lock", "show or release a service's deploy lock"),
    "proxy": ("proxy", "show, start or read the logs of the proxy on each host"),
    "config": ("config", "validate plainsail.yml and print it resolved"),
    "init": ("init", "write plainsail.yml, ignore entries and a GitHub Actions deploy "
             "workflow for this repository"),
    "audit": ("audit", "check workflows, Dockerfiles, plainsail.yml and migrations against "
              "the deploy rules"),
    "demo": ("demo", "run the whole pipeline on the bundled example app, narrated"),
}


EXIT_EPILOG = """exit codes:
  0    done
  1    an expected failure: one line on stderr says what is wrong and what to do
  2    a usage error (a wrong argument, a mutable tag)
  3    a bug in plainsail: the message names a file with the details
  130  interrupted (SIGTERM or Ctrl-C)"""

# Kept in step with plainsail.deploy.outcomes.EXIT_CODES by tests/test_docs.py.
OUTCOME_EPILOG = """outcomes (printed, recorded, and the exit code):
  succeeded                    0    the new version passed its health gate on every host
  unchanged                    0    that version already runs everywhere (--force redeploys)
  recovered                    0    the last known-good version runs again (recover)
  aborted                      1    stopped before anything was switched
  failed-migration             1    migrations failed; the old version keeps serving
  failed-health-old-kept       1    (proxy) the new version failed; the old never stopped
  failed-health-restored       1    the switch failed; the previous version is back, healthy
  failed-traffic-restored      1    (traffic_gate) worse real answers; routed back to the old
  failed-health-left-stopped   1    the new version failed; on_failure: stop left it
  restore-failed               1    the previous version could not be put back: DOWN
  interrupted                  130  SIGTERM/Ctrl-C; the previous version was put back
a usage error exits 2; a bug exits 3 (after restoring, recording and unlocking)"""


def _terminal_columns() -> int:
    """shutil.get_terminal_size().columns, without importing shutil (and the compression
    modules it loads) on every run: argparse asks for the width each time it checks an
    argument, not only when it prints help."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else _terminal_columns() - 2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, the arguments of that one command (the others
    are listed but take no arguments), which is all one run needs and quicker to build."""
    parser = argparse.ArgumentParser(
        prog="plainsail",
        description="Ship containerized APIs the boring way: build, sign, migrate, deploy, "
        "roll back. The same steps every time, loud failures.",
        epilog=EXIT_EPILOG, formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"plainsail {__version__}")
    # -c and -v work before or after the command: the top level holds the defaults, and
    # the command's copies only set a value when given (SUPPRESS), so neither overrides.
    def common_options(p: argparse.ArgumentParser, top: bool) -> None:
        p.add_argument(
            "-c", "--config", metavar="PATH",
            default=os.environ.get("PLAINSAIL_CONFIG") if top else argparse.SUPPRESS,
            help="the config file (default: ./plainsail.yml, or $PLAINSAIL_CONFIG)",
        )
        p.add_argument(
            "-v", "--verbose", action="store_true",
            default=False if top else argparse.SUPPRESS,
            help="show every command run on a host, secrets redacted",
        )

    common_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False, formatter_class=_Formatter)
    common_options(common, top=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        epilog = OUTCOME_EPILOG if name in ("deploy", "rollback", "recover") else EXIT_EPILOG
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common],
                           epilog=epilog, formatter_class=_Formatter)
        p.set_defaults(_module=module)
        add_args = _ADDERS.get(name)
        if add_args and only in (None, name):
            add_args(p)
    return parser


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-dirty", action="store_true",
                   help="build a work tree with uncommitted changes; tags <sha>-dirty-<random>")
    p.add_argument("--tag", help="refused unless it is the commit's short SHA: tags are "
                   "derived from content, never chosen")
    p.add_argument("--record-dir", metavar="DIR",
                   help="where build records go (default: .plainsail/builds)")
    p.add_argument("--no-push", action="store_true", help=argparse.SUPPRESS)
    _json_flag(p)


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="TAG|DIGEST", nargs="?",
                   help="a tag or sha256 digest (default: the newest build record)")
    _json_flag(p)


def _keygen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-key-prefix", default="cosign", metavar="PREFIX",
                   help="write PREFIX.key and PREFIX.pub (default: cosign)")


def _sign_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="TAG|DIGEST", nargs="?",
                   help="what to sign (default: the tag of the newest build record)")
    p.add_argument("--key", metavar="PATH", help="private key (default: signing.key)")
    _json_flag(p)


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="TAG|DIGEST", nargs="?",
                   help="what to verify (default: the tag of the newest build record)")
    p.add_argument("--key", metavar="PATH", help="public key (default: signing.public_key)")
    _json_flag(p)


def _migrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["up", "status", "baseline"], default="up",
                   help="up (default) applies pending files; status lists them, changing "
                   "nothing; baseline records files up to --to as applied without running "
                   "them (adopting a database another tool migrated)")
    p.add_argument("--dir", metavar="DIR",
                   help="the migrations folder (default: $PLAINSAIL_MIGRATIONS or ./migrations)")
    p.add_argument("--layout", choices=["auto", "flat", "diesel", "prisma", "golang-migrate",
                                        "dbmate", "flyway"],
                   help="how the folder keeps migrations (default: "
                   "$PLAINSAIL_MIGRATIONS_LAYOUT, else detected from the files)")
    p.add_argument("--schema", metavar="SCHEMA",
                   help="PostgreSQL schema of the plainsail_migrations ledger, whatever the "
                   "search_path (default: $PLAINSAIL_MIGRATIONS_SCHEMA, else public)")
    p.add_argument("--to", metavar="VERSION",
                   help="with baseline: the last migration the database already has")
    p.add_argument("--database-url", metavar="URL",
                   help="default: $DATABASE_URL (postgresql://... or sqlite:///path)")
    p.add_argument("--lock-timeout", metavar="DURATION",
                   help="PostgreSQL lock_timeout per statement (default: 5s)")
    p.add_argument("--statement-timeout", metavar="DURATION",
                   help="PostgreSQL statement_timeout (default: 5m)")
    p.add_argument("--wait", metavar="DURATION",
                   help="how long to wait for another runner to finish (default: 5m)")
    p.add_argument("--allow-non-transactional-ddl", action="store_true",
                   help="run on MySQL/MariaDB although a failing file can half-apply there")
    _json_flag(p)


def _lint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["migrations"], help="what to lint (migrations)")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="folders or .sql files (default: the migrations folder)")
    p.add_argument("--since", metavar="GIT_REF",
                   help="only files added since this git ref (what one deploy applies)")
    p.add_argument("--format", choices=["text", "json", "sarif"], default="text",
                   help="text (default), json, or sarif for code-scanning uploads")
    p.add_argument("--layout", choices=["auto", "flat", "diesel", "prisma", "golang-migrate",
                                        "dbmate", "flyway"],
                   help="how the folder keeps migrations (default: "
                   "$PLAINSAIL_MIGRATIONS_LAYOUT, else detected from the files)")


def _shallow_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-shallow-clone", action="store_true",
                   help="in CI (CI set), go ahead when the schema gate cannot run because "
                   "the checkout is a shallow clone (without it that stops the attempt; the "
                   "record names this flag)")


def _deploy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="TAG[@DIGEST]", nargs="?",
                   help="what to deploy (default: the tag of the newest build record)")
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="deploy only to this host (repeatable)")
    p.add_argument("--skip-migrations", action="store_true", help="do not run migrate.command")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands each host would run; change nothing")
    p.add_argument("--force", action="store_true", help="deploy even if this tag already runs")
    p.add_argument("--allow-breaking-migrations", action="store_true",
                   help="deploy although new migrations break the running version (the "
                   "schema gate reports them; the record and the notification name this "
                   "flag)")
    _shallow_flag(p)
    _json_flag(p)


def _rollback_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", metavar="TAG", help="a tag that once deployed successfully")
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="roll back only this host (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the commands; change nothing")
    p.add_argument("--allow-breaking-migrations", action="store_true",
                   help="roll back although migrations applied since that version break it "
                   "(the schema gate reports them; the record and the notification name "
                   "this flag)")
    _shallow_flag(p)
    _json_flag(p)


def _drill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="drill only this host (repeatable; refused with target: swarm, where "
                   "Swarm chooses the nodes)")
    p.add_argument("--backup", action="store_true",
                   help="drill the restore instead: restore the newest backup into a scratch "
                   "database, compare every table's row count with the recorded counts, "
                   "drop it (touches nothing live: no --yes needed)")
    p.add_argument("--yes", action="store_true",
                   help="go ahead although the service is interrupted during both switches "
                   "(not needed behind the proxy: nothing is interrupted there)")
    _json_flag(p)


def _recover_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="recover only this host (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="take over a lock whose holder is not known to be dead (a deployer on "
                   "another machine); be sure it is gone")
    _json_flag(p)


def _maintenance_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("state", choices=["on", "off"], help="on: the proxy answers 503 with "
                   "Retry-After and a small page for this service only; off: serve again")
    p.add_argument("--message", metavar="TEXT", help="the page's text (with on)")
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="only this host (repeatable)")
    _json_flag(p)


def _backup_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "create", "download", "restore"],
                   help="list: the backups on the hosts; create: take one now (under the "
                   "deploy lock); download ID: copy it here, checksum checked; restore ID: "
                   "checksum checked, then into a new database (--into) or in place "
                   "(--in-place --yes)")
    p.add_argument("id", nargs="?", metavar="ID", help="the backup (download, restore)")
    p.add_argument("--into", metavar="DATABASE",
                   help="restore: create DATABASE on the same server and restore into it; "
                   "the running app is left alone; an existing database is refused")
    p.add_argument("--in-place", action="store_true",
                   help="restore: replace the app's own database, with the service in "
                   "maintenance (behind the proxy) or stopped meanwhile")
    p.add_argument("--yes", action="store_true",
                   help="with --in-place: go ahead although the service is interrupted and "
                   "what was written since the backup is lost")
    p.add_argument("--output", metavar="FILE",
                   help="download: where to write it (default: SERVICE-ID.dump here)")
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="only this host (repeatable; create uses the first)")
    _json_flag(p)


def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=20, metavar="N",
                   help="show the newest N attempts (default: 20)")
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="only this host's records (repeatable)")
    p.add_argument("--source", choices=["auto", "hosts", "local"], default="auto",
                   help="hosts: the records on the hosts; local: .plainsail/history.jsonl, "
                   "offline; auto (default): the hosts, or the local history when a host "
                   "is unreachable")
    _json_flag(p)


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="only this host (repeatable)")
    _json_flag(p)


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tail", type=int, default=100, metavar="N",
                   help="the last N lines of each host's app container (default: 100)")
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="only this host (repeatable)")


def _lock_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["status", "release"],
                   help="status: who holds the lock, and whether that deployer is gone; "
                   "release: remove it (after an interrupted attempt prefer plainsail "
                   "recover, which also puts the last good version back)")
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="only this host (repeatable)")


def _proxy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["status", "logs", "boot"],
                   help="status: the proxy's container, settings and routes (with requests in "
                   "flight); logs: its log; boot: start it if it is not running (as a deploy "
                   "does)")
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="only this host (repeatable)")
    p.add_argument("--tail", type=int, default=100, metavar="N",
                   help="with logs: the last N lines (default: 100)")
    _json_flag(p)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["check"], help="check: validate and print resolved")
    _json_flag(p)


def _init_args(p: argparse.ArgumentParser) -> None:

    p.add_argument("--service", metavar="NAME",
                   help="the service name (default: the folder's name)")
    p.add_argument("--image", metavar="REPOSITORY",
                   help="the image repository, no tag (default: ghcr.io/OWNER/REPO from a "
                   "GitHub origin)")
    p.add_argument("--host", action="append", metavar="HOST", default=[],
                   help="a host to deploy to: ssh://user@host[:port], an ~/.ssh/config alias "
                   "or local (repeatable; at least one)")
    p.add_argument("--port", type=int, metavar="PORT",
                   help="the app's port (default: the Dockerfile's EXPOSE, else 8080)")
    p.add_argument("--health-path", default="/health", metavar="PATH",
                   help="the health gate's URL path; it must check real function "
                   "(default: /health)")
    p.add_argument("--migrate-command", metavar="COMMAND",
                   help="the migration command (default: from the migrations folder found, "
                   "e.g. plainsail migrate; none without one)")
    p.add_argument("--ci", choices=["github"], default="github",
                   help="which CI to write a workflow for (github: .github/workflows/"
                   "deploy.yml)")
    p.add_argument("--install", choices=["pip", "action"], default="pip",
                   help="how the workflow installs plainsail: a pinned pip install line "
                   "(default) or the plainsail Action at --plainsail-ref")
    p.add_argument("--plainsail-repo", default="plainsail/plainsail", metavar="OWNER/NAME",
                   help="the GitHub repository plainsail is installed from "
                   "(default: plainsail/plainsail)")
    p.add_argument("--plainsail-ref", default=f"v{__version__}", metavar="REF",
                   help=f"the plainsail commit or tag the workflow installs (default: "
                   f"v{__version__}; a full commit SHA for --install action)")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing plainsail.yml and workflow")
    _json_flag(p)


def _audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default=".", metavar="PATH",
                   help="a repository folder (default: .), or one workflow, action.yml, "
                   "Dockerfile or plainsail.yml")
    p.add_argument("--format", choices=["text", "json", "sarif", "github"], default="text",
                   help="text (default), json, sarif for code scanning, or github for "
                   "workflow annotations")


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", action="store_true",
                   help="leave the demo app running (and say how to remove it)")
    p.add_argument("--workdir", metavar="DIR", help="use this folder instead of a temporary one")


_ADDERS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "build": _build_args,
    "inspect": _inspect_args,
    "keygen": _keygen_args,
    "sign": _sign_args,
    "verify": _verify_args,
    "migrate": _migrate_args,
    "lint": _lint_args,
    "deploy": _deploy_args,
    "rollback": _rollback_args,
    "drill": _drill_args,
    "recover": _recover_args,
    "maintenance": _maintenance_args,
    "backup": _backup_args,
    "history": _history_args,
    "status": _status_args,
    "logs": _logs_args,
    "lock": _lock_args,
    "proxy": _proxy_args,
    "config": _config_args,
    "init": _init_args,
    "audit": _audit_args,
    "demo": _demo_args,
}


def setup_logging(verbose: bool) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_scrub_filter)
    root = logging.getLogger("plainsail")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _scrub_filter(record: logging.LogRecord) -> bool:
    """Log lines leave the program: redact every known secret in them."""
    from plainsail.secret import scrub

    record.msg = scrub(record.getMessage())
    record.args = None
    return True


def _command_named(argv: list[str]) -> str | None:
    """The command argparse will read: the first word that is neither an option nor the
    value of -c/--config (the only top-level option that takes one)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in ("-c", "--config"):
            skip = True
        elif word == "--" or not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    named = _command_named(argv)
    parser = build_parser(named)  # only that command's arguments: quicker to build
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    from plainsail.errors import PlainsailError
    from plainsail.output import error, set_json_mode

    set_json_mode(bool(getattr(args, "json", False)))
    try:
        module = importlib.import_module(f"plainsail.commands.{args._module}")
        # A command that never logs (LOGS = False) skips importing logging at all.
        if getattr(module, "LOGS", True):
            setup_logging(args.verbose)
        code: int = module.run(args)
        return code
    except PlainsailError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: keep the user's screen clean, keep the details
        from plainsail.crash import write_crash_log

        path = write_crash_log(exc)
        print(
            f"error: plainsail hit an unexpected {type(exc).__name__}; this is a bug. "
            f"Details for a bug report are in {path}",
            file=sys.stderr,
        )
        if args._module == "migrate":
            # The runner's container is removed when it exits (docker run --rm), and the
            # file with it: the details go to stderr too, where the deploy keeps them.
            with open(path, encoding="utf-8") as log:
                sys.stderr.write(log.read())
        return 3
    finally:
        set_json_mode(False)  # main leaves no mode behind for a caller in the same process



if __name__ == "__main__":
    raise SystemExit(main())
