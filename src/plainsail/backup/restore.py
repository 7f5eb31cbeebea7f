"""Restoring a backup: its checksum checked on the host first, then `pg_restore` in a
temporary container of `backup.image` with the app's env file (the URL never in argv).

- into a new database on the same server (`restore --into NAME`), refusing a name that
  exists; a restore that fails drops the database it created, so nothing is half-done;
- into a scratch database that is counted and dropped again (`drill --backup`);
- in place, with the service in maintenance or stopped (`restore --in-place`): see
  `plainsail.backup.inplace`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from plainsail.backup.host import ROLE, SHA256_FN, BackupError, folder
from plainsail.config.model import Config
from plainsail.hosts import docker
from plainsail.hosts.executor import Executor
from plainsail.hosts.state import Paths

DATABASE_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# The URL of database $db on the server of $DATABASE_URL (a URI's path replaced, or a
# dbname appended to a keyword/value string, where the last one counts).
_TARGET_URL = (
    'case "$DATABASE_URL" in postgres://*|postgresql://*) '
    'base=${DATABASE_URL%%\\?*}; query=${DATABASE_URL#"$base"}; rest=${base#*://}; '
    'case "$rest" in */*) base=${base%/*};; esac; target="$base/$db$query";; '
    '*) target="$DATABASE_URL dbname=$db";; esac; '
)
_PSQL = 'psql -X -w -q -At -v ON_ERROR_STOP=1 -v name="$db" -d "$DATABASE_URL"'
_COUNT_SQL = (
    "SELECT format('SELECT %L, count(*) FROM %I.%I', format('%I.%I', schemaname, tablename), "
    "schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN "
    "('pg_catalog', 'information_schema') ORDER BY 1 \\gexec"
)

# In the container: the app's own database replaced by the dump's objects, in one
# transaction (a failure leaves it as it was). $1 the dump.
IN_PLACE_INNER = (
    'pg_restore --clean --if-exists --no-owner --no-acl --exit-on-error --single-transaction '
    '-w -d "$DATABASE_URL" "$1" || exit 7'
)

# In the container: $1 the dump, $2 the database to create, $3 `keep` (restore --into) or
# `count` (drill: count every table's rows, then drop the database).
RESTORE_INNER = (
    'set -u; f=$1; db=$2; mode=$3; ' + _TARGET_URL
    + 'found=$(echo "SELECT 1 FROM pg_database WHERE datname = :\'name\';" | ' + _PSQL
    + ') || exit 3; '
    'if [ -n "$found" ]; then echo "database $db already exists on the server; restore '
    'never overwrites one: choose a new name" >&2; exit 5; fi; '
    'echo \'CREATE DATABASE :"name";\' | ' + _PSQL + ' || exit 6; '
    'drop() { echo \'DROP DATABASE IF EXISTS :"name";\' | ' + _PSQL + '; }; '
    'if ! pg_restore --no-owner --no-acl --exit-on-error --single-transaction -w '
    '-d "$target" "$f"; then drop; exit 7; fi; '
    'if [ "$mode" = count ]; then '
    "printf '%s\\n' \"" + _COUNT_SQL + '" '
    '| psql -X -w -q -At -F "\t" -v ON_ERROR_STOP=1 -d "$target" '
    '|| { drop; exit 8; }; drop; fi'
)

# On the host: the dump's checksum against the recorded one, then the container.
# $1 the dump, $2 the recorded SHA-256, the rest: `docker run` arguments.
CHECKED_RUN = (
    'set -u; f=$1; want=$2; shift 2; ' + SHA256_FN
    + 'if [ ! -f "$f" ]; then echo "$f is missing on the host" >&2; exit 66; fi; '
    'got=$(sum256 "$f") || exit 72; got=${got%% *}; '
    'if [ "$got" != "$want" ]; then echo "the backup file was altered: its SHA-256 is $got, '
    'not the recorded $want; it is not restored" >&2; exit 65; fi; '
    'docker run --user "$(id -u):$(id -g)" "$@"'
)
ALTERED = 65


def check_name(name: str) -> str:
    if not DATABASE_NAME_RE.fullmatch(name):
        raise BackupError(f"--into {name!r}: give a database name of lowercase letters, "
                          "digits and _ (at most 63, not starting with a digit)")
    return name


def restore_argv(cfg: Config, paths: Paths, backup: Mapping[str, Any], database: str,
                 mode: str, network: str | None, attempt: str = "") -> list[str]:
    """`attempt`: the id of the lock it runs under (recover finds its container by it)."""
    assert cfg.backup is not None
    bid = str(backup["id"])
    run = docker.run_args(
        name=f"{cfg.service}-restore-{database[-8:] or 'in-place'}", image=cfg.backup.image,
        env_file=paths.env,
        labels={docker.LABEL_SERVICE: cfg.service, docker.LABEL_ROLE: ROLE,
                **({docker.LABEL_DEPLOY: attempt} if attempt else {})},
        network=network, volumes=[f"{folder(paths)}:/backup:ro"], init=True, detach=False,
        remove=True, add_hosts=cfg.app.add_hosts,
        command=(["sh", "-c", IN_PLACE_INNER, "restore", f"/backup/{bid}.dump"]
                 if mode == "in-place" else
                 ["sh", "-c", RESTORE_INNER, "restore", f"/backup/{bid}.dump", database, mode]))
    return ["sh", "-c", CHECKED_RUN, "restore", f"{folder(paths)}/{bid}.dump",
            str(backup["sha256"]), *run[2:]]


def parse_counts(text: str) -> dict[str, int]:
    counts = {}
    for line in text.splitlines():
        table, sep, rows = line.rpartition("\t")
        if sep and rows.strip().isdigit():
            counts[table] = int(rows)
    return counts


def run_restore(ex: Executor, argv: list[str], timeout: float) -> str:
    """Run a restore argv; its output, or BackupError with the one line that says why."""
    from plainsail.backup.host import failure_reason
    from plainsail.secret import redact

    res = ex.run(argv, timeout=timeout, check=False, what="restore")
    if res.returncode == 0:
        return res.stdout
    if res.returncode == 255 and not ex.host.is_local:
        raise ex.failure(res, "restore")
    if res.returncode in (ALTERED, 66, 5):
        why = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "no output"
    else:
        why = failure_reason(res.returncode, res.tail(), timeout)
    raise BackupError(f"restore failed on {ex.host.name}: {redact(why, ex.secrets)}; "
                      "nothing was changed")
