"""Backups on the host: taken by `pg_dump -Fc` in a temporary container of `backup.image`
(the database URL travels in the app's env file, never in argv), written under
`<host_dir>/<service>/backups/` (folder 0700, files 0600), each with a JSON description:
id, created, size, SHA-256, seconds, the deploy it was taken for, and every table's row
count as the dump holds it (counted from the dump itself, so the counts and the data are
one snapshot).

Commands are data: the functions named *_argv build argv lists of fixed scripts whose
inputs are positional parameters, never formatted into shell code.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from plainsail.backup import signals
from plainsail.config.model import Config
from plainsail.deploy.records import now
from plainsail.errors import PlainsailError, RemoteError, one_line
from plainsail.hosts import docker
from plainsail.hosts.executor import Executor, error_line
from plainsail.hosts.state import Paths

ROLE = "backup"
# Ids sort by time to the microsecond (the oldest beyond `keep` are the first in order).
ID_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{4}")


def new_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{secrets.token_hex(2)}"



class BackupError(PlainsailError):
    """A backup could not be taken, found, checked or restored."""


def folder(paths: Paths) -> str:
    return f"{paths.root}/backups"


# In the container: the dump, and each table's rows counted from it as it is written (COPY
# blocks of `pg_restore --data-only` text: one line per row, `\\.` ends a table), which
# also proves it readable. $1 is the backup id.
_COUNT_AWK = (r'/^COPY .* FROM stdin;$/ { t = substr($0, 6); sub(/ FROM stdin;$/, "", t); '
              r'sub(/ \(.*$/, "", t); n = 0; c = 1; next } '
              r'c && $0 == "\\." { print t "\t" n; c = 0; next } '
              r'c { n++ }')
DUMP_INNER = (
    'set -u; umask 077; f="/backup/.$1.partial"; '
    'if [ -z "${DATABASE_URL:-}" ]; then '
    'echo "DATABASE_URL is not set in the app environment" >&2; exit 2; fi; '
    # One pass: the dump goes to the file and, at the same time, is read back and counted.
    '{ pg_dump --format=custom --no-password --dbname="$DATABASE_URL" '
    '|| echo x > /tmp/dump-failed; } '
    '| { tee "$f" || echo x > /tmp/write-failed; } '
    '| { pg_restore --data-only --file=- || echo x > /tmp/unreadable; } '
    f"| awk '{_COUNT_AWK}' > \"/backup/.$1.counts\"; "
    'if [ -e /tmp/dump-failed ]; then exit 3; fi; '
    'if [ -e /tmp/write-failed ]; then echo "plainsail: error: the dump could not be '
    'written on the host" >&2; exit 3; fi; '
    'if [ -e /tmp/unreadable ]; then echo "pg_restore could not read the dump back" >&2; '
    'exit 4; fi'
)

# A file's SHA-256 on the host, hex first: OpenSSL's when the host has it (it uses the
# CPU's SHA instructions: about 3x coreutils' speed on a 400 MB dump), else sha256sum.
SHA256_FN = ('sum256() { if command -v openssl >/dev/null 2>&1; '
             'then openssl dgst -sha256 -r "$1"; else sha256sum "$1"; fi; }; ')

# On the host: the folder (0700), the container (run as the SSH user, so the files are
# theirs), then size and SHA-256, and the dump renamed into place. Nothing is left behind
# when any part fails; the script's pid is kept beside the files, so that CLEAN_UP can end
# it when plainsail gave up on it (a timeout, a lost connection, a signal). $1 folder, $2
# id, the rest: `docker run` arguments.
TAKE_SCRIPT = (
    'set -u; dir=$1; id=$2; shift 2; umask 077; ' + SHA256_FN
    + 'part="$dir/.$id.partial"; counts="$dir/.$id.counts"; pid="$dir/.$id.pid"; '
    "trap 'rm -f \"$part\" \"$counts\" \"$pid\"' EXIT; trap 'exit 130' INT TERM HUP; "
    'mkdir -p "$dir" && chmod 700 "$dir" || exit 71; echo $$ > "$pid"; '
    'docker run --user "$(id -u):$(id -g)" "$@" || exit $?; '
    'size=$(wc -c < "$part") && sum=$(sum256 "$part") || exit 72; '
    'chmod 600 "$part" && mv "$part" "$dir/$id.dump" || exit 73; '
    'printf "size %s\\nsha256 %s\\n" "$size" "${sum%% *}"; cat "$counts"'
)

# The description written beside the dump (stdin), then the oldest beyond `keep` removed
# (ids sort by time). $1 folder, $2 id, $3 keep.
KEEP_SCRIPT = (
    'set -eu; dir=$1; id=$2; keep=$3; umask 077; '
    'cat > "$dir/.$id.json.tmp"; mv "$dir/.$id.json.tmp" "$dir/$id.json"; '
    'ls -1 "$dir" | grep -E "^[0-9]{8}T[0-9]{6}\\.[0-9]{6}Z-[0-9a-f]{4}\\.dump$" | sort -r '
    '| tail -n +$((keep + 1)) | while read -r f; do '
    'rm -f "$dir/$f" "$dir/${f%.dump}.json"; echo "${f%.dump}"; done'
)

# Every description, one per line (a dump without one is not listed). $1 folder.
LIST_SCRIPT = (
    'test -d "$1" || exit 0; for f in "$1"/*.json; do test -f "$f" || continue; '
    'tr -d "\\n" < "$f"; echo; done'
)


def take_argv(cfg: Config, paths: Paths, backup_id: str, deploy_id: str,
              network: str | None) -> list[str]:
    assert cfg.backup is not None
    run = docker.run_args(
        name=f"{cfg.service}-backup-{backup_id[-4:]}", image=cfg.backup.image,
        env_file=paths.env,
        labels={docker.LABEL_SERVICE: cfg.service, docker.LABEL_ROLE: ROLE,
                docker.LABEL_DEPLOY: deploy_id},
        network=network, volumes=[f"{folder(paths)}:/backup"], init=True, detach=False,
        remove=True, add_hosts=cfg.app.add_hosts,
        command=["sh", "-c", DUMP_INNER, "backup", backup_id])
    return ["sh", "-c", TAKE_SCRIPT, "backup", folder(paths), backup_id, *run[2:]]


def keep_argv(paths: Paths, backup_id: str, keep: int) -> list[str]:
    return ["sh", "-c", KEEP_SCRIPT, "backup", folder(paths), backup_id, str(keep)]


def list_argv(paths: Paths) -> list[str]:
    return ["sh", "-c", LIST_SCRIPT, "backup", folder(paths)]


@dataclass
class Taken:
    """What a backup run reports: the description stored beside the dump."""

    record: dict[str, Any]
    removed: list[str]


def parse_take_output(text: str) -> tuple[int, str, dict[str, int]]:
    """(size, sha256, {table: rows}) from TAKE_SCRIPT's output."""
    size, sha, counts = -1, "", {}
    for line in text.splitlines():
        if line.startswith("size "):
            size = int(line[5:].strip())
        elif line.startswith("sha256 "):
            sha = line[7:].strip()
        elif "\t" in line:
            table, _, rows = line.rpartition("\t")
            counts[table] = int(rows)
    if size < 0 or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError("no size and checksum in the output")
    return size, sha, counts


def failure_reason(code: int | None, tail: str, timeout: float) -> str:
    if code is None:
        return f"did not finish within {timeout:g}s"
    # pg_dump and pg_restore say what went wrong in their first "error:" line; the lines
    # after it are details (the query, a hint).
    last = next((line.strip() for line in tail.splitlines() if " error: " in line),
                "") or error_line(tail) or "no output"
    if "No space left on device" in tail or "could not write" in tail.lower():
        last = f"the host's disk is full ({last})"
    return f"exit code {code}: {last}"


def take(ex: Executor, cfg: Config, paths: Paths, argv: Sequence[str], backup_id: str,
         deploy_id: str, timeout: float, why: str = "") -> Taken:
    """Run the backup (argv from `take_argv`), store its description, remove the oldest
    beyond `keep`. Raises BackupError with one line; nothing of the backup is left."""
    assert cfg.backup is not None
    start = time.monotonic()
    created = now()
    try:
        res = ex.run(list(argv), timeout=timeout, check=False, what="backup")
    except RemoteError:  # timed out: the container may still run, its files be there
        _clean_up(ex, cfg, argv, paths, backup_id)
        raise BackupError(f"backup failed on {ex.host.name} (did not finish within "
                          f"{timeout:g}s; backup.timeout sets the limit)") from None
    except BaseException:  # a signal: the same (a second one waits for it), then it goes on
        with signals.held():
            _clean_up(ex, cfg, argv, paths, backup_id)
        raise
    seconds = round(time.monotonic() - start, 3)
    if res.returncode == 255 and not ex.host.is_local:
        # The connection dropped: the backup may go on without us; end it.
        _clean_up(ex, cfg, argv, paths, backup_id)
        raise BackupError(one_line(ex.failure(res, "backup")))
    if res.returncode != 0:
        from plainsail.secret import redact

        raise BackupError(f"backup failed on {ex.host.name} ("
                          + redact(failure_reason(res.returncode, res.tail(), timeout),
                                   ex.secrets) + ")")
    try:
        size, sha, counts = parse_take_output(res.stdout)
    except ValueError as exc:
        raise BackupError(f"backup on {ex.host.name} gave no checksum ({exc})") from None
    dump = f"{folder(paths)}/{backup_id}.dump"
    record: dict[str, Any] = {"id": backup_id, "created": created, "size": size, "sha256": sha,
              "seconds": seconds, "deploy_id": deploy_id, "host": ex.host.name,
              "service": cfg.service, "format": "pg_dump custom", "tables": counts,
              "reason": why, "file": dump}
    keep = ex.run(keep_argv(paths, backup_id, cfg.backup.keep), timeout=cfg.timeouts.command,
                  check=False, input=json.dumps(record, sort_keys=True) + "\n",
                  what="store the backup's description")
    if keep.returncode != 0:
        ex.run(["rm", "-f", dump], timeout=cfg.timeouts.command, check=False)
        raise BackupError(f"backup on {ex.host.name}: its description could not be stored "
                          f"({error_line(keep.tail()) or 'no output'}); the dump was removed")
    return Taken(record, [x for x in keep.stdout.split() if ID_RE.fullmatch(x)])


# After plainsail gave up on a backup (a timeout, a lost connection, a signal): its
# container removed (so the script's `docker run` returns), the script ended, and every
# file of that backup removed unless its description was stored (then it is a good one).
# $1 folder, $2 id, $3 the container.
CLEAN_UP = (
    'dir=$1; id=$2; docker rm --force "$3" > /dev/null 2>&1; '
    'pid=$(cat "$dir/.$id.pid" 2> /dev/null); '
    'if [ -n "$pid" ] && kill -TERM "$pid" 2> /dev/null; then i=0; '
    'while kill -0 "$pid" 2> /dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done; '
    'fi; rm -f "$dir/.$id.partial" "$dir/.$id.counts" "$dir/.$id.pid"; '
    'if [ ! -e "$dir/$id.json" ]; then rm -f "$dir/$id.dump"; fi'
)


def clean_up_argv(paths: Paths, backup_id: str, container: str) -> list[str]:
    return ["sh", "-c", CLEAN_UP, "backup", folder(paths), backup_id, container]


def _clean_up(ex: Executor, cfg: Config, argv: Sequence[str], paths: Paths,
              backup_id: str) -> None:
    """After plainsail gave up on a backup: nothing of it left on the host (best effort:
    when the host cannot be reached, the files of an unfinished backup are never listed,
    and `plainsail recover` removes them)."""
    name = argv[list(argv).index("--name") + 1]
    with suppress(PlainsailError):
        ex.run(clean_up_argv(paths, backup_id, name), check=False,
               timeout=cfg.timeouts.command + 10, what="clean up the unfinished backup")


# `plainsail recover`, under the lock of an attempt that died (SIGKILL, a lost laptop)
# while it backed up: that attempt's backup containers removed, the scripts still running
# ended (only processes whose command line names this folder), and every unfinished file
# removed: hidden ones, and dumps without a description. $1 folder, $2 service, $3 the
# attempt's id. Prints what it removed.
LEFTOVERS = (
    'dir=$1; ids=$(docker ps -aq --filter "label=dev.plainsail.service=$2" '
    '--filter "label=dev.plainsail.role=backup" --filter "label=dev.plainsail.deploy-id=$3"); '
    'if [ -n "$ids" ]; then docker rm --force $ids > /dev/null && echo "containers $ids"; '
    'fi; cd "$dir" 2> /dev/null || exit 0; '
    'for p in .*.pid; do [ -f "$p" ] || continue; pid=$(cat "$p"); '
    'if tr "\\0" " " < "/proc/$pid/cmdline" 2> /dev/null | grep -qF -- "$dir" '
    '&& kill -TERM "$pid" 2> /dev/null; then i=0; '
    'while kill -0 "$pid" 2> /dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done; '
    'fi; done; '
    'for f in .*.partial .*.counts .*.pid *.dump; do [ -f "$f" ] || continue; '
    'case "$f" in *.dump) [ -e "${f%.dump}.json" ] && continue;; esac; '
    'rm -f "$f" && echo "file $f"; done'
)


def remove_leftovers(ex: Executor, cfg: Config, paths: Paths, attempt: str) -> list[str]:
    """What an interrupted attempt's backup left on the host, removed (see LEFTOVERS);
    one line per thing removed."""
    res = ex.run(["sh", "-c", LEFTOVERS, "backup", folder(paths), cfg.service, attempt],
                 timeout=cfg.timeouts.command + 10, check=False,
                 what="remove an interrupted backup's leftovers")
    if res.returncode != 0:
        raise ex.failure(res, "remove an interrupted backup's leftovers")
    return [line for line in res.stdout.splitlines() if line.strip()]


def list_on(ex: Executor, paths: Paths, timeout: float) -> list[dict[str, Any]]:
    """The backups stored on one host, oldest first."""
    res = ex.run(list_argv(paths), timeout=timeout, check=False, what="list backups")
    if res.returncode != 0:
        raise ex.failure(res, "list backups")
    found = []
    for line in res.stdout.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and ID_RE.fullmatch(str(rec.get("id", ""))):
            found.append(rec)
    return sorted(found, key=lambda r: str(r["id"]))
