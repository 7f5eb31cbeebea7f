"""State plainsail keeps on each host, under one folder per service (default
`~/.plainsail/<service>/`, in the SSH user's home, so no root is needed):

- `lock/`            the deploy lock: created with mkdir (atomic), `lock/info.json` says who
- `env`              the app's environment for `docker --env-file`, mode 0600
- `history.jsonl`    one JSON record per deploy attempt, appended (earlier lines are never
                     rewritten, so a crash mid-write cannot corrupt them)

Every action is an argv list run through an Executor; paths travel as positional
parameters of fixed scripts, never formatted into shell code.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from plainsail.errors import LockError, PlainsailError
from plainsail.hosts.containers import Container, sorted_containers
from plainsail.hosts.executor import (
    IS_A_DIRECTORY,
    WRITE_FILE_SCRIPT,
    Executor,
    Result,
    error_line,
    expand_home,
    write_file_argv,
)

HOME_AND_DOCKER = [
    "sh", "-c",
    'printf "%s\\n" "$HOME"; docker version --format "{{.Server.Version}}" 2>&1',
]


@dataclass(frozen=True)
class Paths:
    root: str  # <host_dir>/<service>

    @property
    def lock(self) -> str:
        return f"{self.root}/lock"

    @property
    def lock_info(self) -> str:
        return f"{self.root}/lock/info.json"

    @property
    def env(self) -> str:
        return f"{self.root}/env"

    @property
    def history(self) -> str:
        return f"{self.root}/history.jsonl"


def probe(ex: Executor, host_dir: str, service: str, timeout: float = 30) -> tuple[Paths, str]:
    """Check the host answers and Docker works there; return its paths and Docker version."""
    res = ex.run(HOME_AND_DOCKER, timeout=timeout, check=False, what="reach host")
    if res.returncode == 255 and not ex.host.is_local:
        raise ex.failure(res, "ssh")
    lines = res.stdout.splitlines()
    home = lines[0].strip() if lines else ""
    version = lines[1].strip() if len(lines) > 1 else ""
    if res.returncode != 0 or not version or not version[0].isdigit():
        detail = (version or error_line(res.tail()) or "no answer").strip()
        raise PlainsailError(
            f"{ex.host.name}: Docker is not usable there ({detail}); install Docker and make "
            "sure the SSH user may use it (e.g. member of the docker group)"
        )
    if not home and host_dir.startswith("~"):
        raise PlainsailError(f"{ex.host.name}: $HOME is not set; set host_dir to an absolute path")
    root = expand_home(host_dir, home).rstrip("/") + f"/{service}"
    return Paths(root), version


# One round trip tells what a deploy needs to know before it changes anything: $HOME, the
# Docker version, whether a custom network exists, who holds the port the app publishes
# (anything listening on it, from /proc/net/tcp and tcp6, and the running containers that
# publish it) and the service's containers (`docker container inspect` JSON). $1: the
# service label filter; $2: a network name or empty; $3: the published port or empty.
SURVEY = (
    'printf "%s\\n" "$HOME"; docker version --format "{{.Server.Version}}" 2>&1 | head -n 1; '
    'if [ -n "$2" ]; then docker network inspect --format "{{.Name}}" "$2" >/dev/null 2>&1 '
    '&& echo "network: ok" || echo "network: missing"; else echo "network: builtin"; fi; '
    'if [ -n "$3" ]; then '
    'l=$(awk -v p=":$(printf "%04X" "$3")" \'FNR > 1 && $4 == "0A" && '
    'substr($2, length($2) - 4) == p { print "yes"; exit }\' /proc/net/tcp /proc/net/tcp6 '
    '2>/dev/null); '
    'c=$(docker ps --quiet --no-trunc --filter "publish=$3" | tr "\\n" " ") || exit 70; '
    'echo "port: ${l:-no} $c"; else echo "port: -"; fi; '
    'ids=$(docker ps --all --quiet --no-trunc --filter "label=$1") || exit 70; '
    'if [ -n "$ids" ]; then docker container inspect $ids || exit 70; else echo "[]"; fi'
)


@dataclass(frozen=True)
class PortHolders:
    """Who holds a port on a host: whether anything listens on it, and the ids of the
    running containers that publish it."""

    listening: bool
    containers: tuple[str, ...]


@dataclass(frozen=True)
class Survey:
    paths: Paths
    docker_version: str
    containers: list[Container]
    network_ok: bool
    port: PortHolders | None = None  # None: no port asked about


def survey(ex: Executor, host_dir: str, service: str, network: str | None = None,
           timeout: float = 30, port: int | None = None) -> Survey:
    """Everything a deploy's preflight needs from a host, in one round trip; with `port`,
    who holds that port there."""
    from plainsail.hosts.docker import LABEL_SERVICE

    res = ex.run(["sh", "-c", SURVEY, "sh", f"{LABEL_SERVICE}={service}", network or "",
                  str(port) if port else ""],
                 timeout=timeout, check=False, what="survey the host")
    if res.returncode == 255 and not ex.host.is_local:
        raise ex.failure(res, "ssh")
    lines = res.stdout.split("\n", 4)
    home = lines[0].strip() if lines else ""
    version = lines[1].strip() if len(lines) > 1 else ""
    if not version or not version[0].isdigit():
        detail = (version or error_line(res.tail()) or "no answer").strip()
        raise PlainsailError(
            f"{ex.host.name}: Docker is not usable there ({detail}); install Docker and make "
            "sure the SSH user may use it (e.g. member of the docker group)"
        )
    if res.returncode != 0 or len(lines) < 5 or not lines[3].startswith("port: "):
        raise ex.failure(res, "list the service's containers")
    if not home and host_dir.startswith("~"):
        raise PlainsailError(f"{ex.host.name}: $HOME is not set; set host_dir to an absolute path")
    try:
        data = json.loads(lines[4] or "[]")
    except ValueError as exc:
        raise PlainsailError(f"{ex.host.name}: docker container inspect answered something "
                             f"that is not JSON ({exc})") from None
    root = expand_home(host_dir, home).rstrip("/") + f"/{service}"
    held = lines[3].split()[1:]
    holders = None if held[:1] == ["-"] else PortHolders(
        held[:1] == ["yes"], tuple(held[1:]))
    return Survey(Paths(root), version, sorted_containers(data),
                  lines[2].strip() != "network: missing", holders)


def port_problem(holders: PortHolders | None, port: int, running: Iterable[str],
                 host_network: bool = False) -> str | None:
    """Why the service whose running containers are `running` (ids) cannot have `port`, or
    None: another container publishes it, or something else listens on it. The port of
    the service's own running container is its to take over (stop-start); with the host's
    network that container listens on it itself, so while one runs a listener is its."""
    if holders is None:
        return None
    mine = set(running)
    others = [c for c in holders.containers if c not in mine]
    if others:
        names = ", ".join(c[:12] for c in others)
        return (f"port {port} is published by another container ({names}; docker ps "
                f"--filter publish={port} names it)")
    explained = any(c in mine for c in holders.containers) or (host_network and bool(mine))
    if holders.listening and not explained:
        return (f"port {port} is taken: a program listens on it (ss -ltnp 'sport = :{port}' "
                "names it)")
    return None


# ---------------------------------------------------------------- lock


@dataclass(frozen=True)
class LockInfo:
    deploy_id: str
    holder: str  # user@machine
    machine: str
    pid: int
    started: str
    tag: str
    origin: str
    kind: str = "deploy"

    def describe(self) -> str:
        what = f"{self.kind} of {self.tag}" if self.tag else self.kind  # a backup: no tag
        return f"{self.holder} since {self.started} ({what}, deploy {self.deploy_id}, " \
            f"from {self.origin})"

    def holder_dead(self) -> bool:
        """The holder was a process of this machine that no longer runs."""
        return self.machine == socket.gethostname() and self.pid > 0 and not _pid_alive(
            self.pid)

    def stale_hint(self) -> str:
        """Say so when the holder was a process on this machine that no longer runs."""
        if self.holder_dead():
            return (
                f"; INTERRUPTED: the deployer that took it (pid {self.pid} on {self.machine}) "
                f"is no longer running, so attempt {self.deploy_id} never finished. Run "
                "plainsail recover to put the last known-good version back and release the "
                "lock (plainsail status shows what runs; plainsail lock release only removes "
                "the lock)"
            )
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Exit codes of ACQUIRE_ARGV: 75 the lock is held (its info.json on stdout), 73 the lock
# cannot be created (the OS error on stderr).
LOCK_HELD = 75
NOT_WRITABLE = 73
UNSAFE = 74  # host_dir or a folder above it is another user's, or others may write it

# A shell function: `safe PATH` fails (the reason on stderr) when PATH or a folder above it
# (those that exist) is owned by a user other than the SSH user and root, is a symbolic
# link of such a user, or may be written by group or others (a sticky folder of root's,
# such as /tmp, excepted). Another user who controls a folder on the way could plant the
# env file's temporary file, or swap the folder, and receive the secrets.
SAFE_PATH = (
    'safe() { me=$(id -u); p=$1; '
    'while :; do '
    'if [ -L "$p" ]; then o=$(stat -c %u -- "$p") || return 1; '
    'if [ "$o" != "$me" ] && [ "$o" != 0 ]; then '
    'printf "%s is a symbolic link of user id %s\\n" "$p" "$o" >&2; return 1; fi; fi; '
    'if [ -e "$p" ]; then m=$(stat -L -c "%u %a" -- "$p") || return 1; '
    'o=${m% *}; a=${m#* }; '
    'if [ "$o" != "$me" ] && [ "$o" != 0 ]; then '
    'printf "%s belongs to user id %s, not to the SSH user\\n" "$p" "$o" >&2; return 1; fi; '
    'if [ $(( 0$a & 022 )) -ne 0 ] && ! { [ "$o" = 0 ] && [ $(( 0$a & 01000 )) -ne 0 ]; }; '
    'then printf "%s may be written by other users (mode %s)\\n" "$p" "$a" >&2; return 1; '
    'fi; fi; '
    'if [ "$p" = / ] || [ "$p" = . ]; then return 0; fi; p=$(dirname -- "$p"); '
    'done; }; '
)
ACQUIRE_ARGV = (
    SAFE_PATH + 'safe "$(dirname -- "$1")" || exit 74; umask 077; '
    'mkdir -p -- "$(dirname -- "$1")" || exit 73; '
    'if err=$(mkdir -- "$1" 2>&1); then '
    'umask 077; cat > "$1/info.json" && exit 0; rm -rf -- "$1"; exit 73; fi; '
    'if [ -d "$1" ]; then cat "$1/info.json" 2>/dev/null; exit 75; fi; '
    'printf "%s\\n" "$err" >&2; exit 73'
)


def acquire(ex: Executor, paths: Paths, info: LockInfo) -> None:
    """Take the lock atomically (mkdir) or fail at once naming the holder."""
    data = json.dumps(info.__dict__)
    res = ex.run(lock_argv(paths), input=data, check=False, what="take the deploy lock")
    if res.returncode != 0:
        _lock_failure(ex, paths, res)


def _lock_failure(ex: Executor, paths: Paths, res: Result) -> NoReturn:
    if res.returncode == LOCK_HELD:
        holder = parse_lock(res.stdout)
        if holder is None:
            raise LockError(
                f"{ex.host.name}: the deploy lock {paths.lock} exists but says nothing about "
                "its holder (a deployer died while taking it?); check, then run "
                "plainsail lock release"
            )
        raise LockError(
            f"{ex.host.name}: another deploy holds the lock: {holder.describe()}"
            f"{holder.stale_hint()}"
        )
    if res.returncode == UNSAFE:
        raise PlainsailError(
            f"{ex.host.name}: refusing the state folder {paths.root}: "
            f"{_os_error(res.stderr)}; another user could plant files there and receive the "
            "app's secrets. Make host_dir and the folders above it the SSH user's (or "
            "root's) and not writable by group or others (chown, chmod go-w), or set "
            "host_dir to such a folder"
        )
    if res.returncode == NOT_WRITABLE:
        full = disk_full(res.stderr)
        raise PlainsailError(
            f"{ex.host.name}: cannot take the deploy lock in {paths.root} "
            f"({_os_error(res.stderr)}); {full}" if full else
            f"{ex.host.name}: cannot take the deploy lock: {paths.root} is not writable by "
            f"the SSH user ({_os_error(res.stderr)}); fix its permissions or set host_dir "
            "to a folder that user can write"
        )
    raise ex.failure(res, "take the deploy lock")


# Take the lock and write the env file in one round trip: $1 the lock folder, $2 the lock
# info (JSON; nothing secret), $3 the env file, $4 its mode; the env content on stdin.
# Exit codes: as ACQUIRE_ARGV for the lock; once it is taken, as write_file_argv.
LOCK_AND_WRITE = (
    SAFE_PATH + 'safe "$(dirname -- "$1")" || exit 74; umask 077; '
    'mkdir -p -- "$(dirname -- "$1")" || exit 73; '
    'if err=$(mkdir -- "$1" 2>&1); then '
    '(umask 077; printf "%s" "$2" > "$1/info.json") || { rm -rf -- "$1"; exit 73; }; '
    'else if [ -d "$1" ]; then cat "$1/info.json" 2>/dev/null; exit 75; fi; '
    'printf "%s\\n" "$err" >&2; exit 73; fi; shift 2; ' + WRITE_FILE_SCRIPT
)


class EnvFileError(PlainsailError):
    """The env file could not be written (the lock was taken: release it)."""


def lock_argv(paths: Paths) -> list[str]:
    """Take the lock; its info on stdin."""
    return ["sh", "-c", ACQUIRE_ARGV, "sh", paths.lock]


def lock_and_env_argv(paths: Paths, info: LockInfo) -> list[str]:
    """Take the lock and write the env file; the env content on stdin."""
    return ["sh", "-c", LOCK_AND_WRITE, "sh", paths.lock, json.dumps(info.__dict__),
            paths.env, "600"]


def release_argv(paths: Paths, deploy_id: str) -> list[str]:
    """Release the lock if this deploy holds it."""
    return ["sh", "-c", RELEASE_OWN, "sh", paths.lock, deploy_id]


def append_argv(paths: Paths) -> list[str]:
    """Append stdin (one record) to the host's history."""
    return ["sh", "-c", APPEND_ARGV, "sh", paths.history]


def lock_and_write_env(ex: Executor, paths: Paths, info: LockInfo,
                       env: Mapping[str, str]) -> None:
    """Take the lock, then write the env file (mode 0600) atomically, in one round trip."""
    res = ex.run(lock_and_env_argv(paths, info), input=env_file_content(env), check=False,
                 what="take the deploy lock and write the env file")
    if res.returncode in (LOCK_HELD, NOT_WRITABLE, UNSAFE) or (
            res.returncode == 255 and not ex.host.is_local):
        _lock_failure(ex, paths, res)
    if res.returncode != 0:
        try:
            _env_failure(ex, paths, res)
        except PlainsailError as exc:
            raise EnvFileError(str(exc)) from None


def disk_full(stderr: str) -> str:
    """What to do when a command failed because the host's disk (or the SSH user's quota)
    is full, else ""."""
    if "No space left on device" in stderr or "Disk quota exceeded" in stderr:
        return ("the host's disk (or the SSH user's quota) is full: free space there (e.g. "
                "docker system prune, old logs) and retry")
    return ""


def _os_error(stderr: str) -> str:
    """The last line of a failed shell command's stderr, without the shell's own prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def parse_lock(text: str) -> LockInfo | None:
    try:
        data = json.loads(text)
        return LockInfo(**data)
    except (ValueError, TypeError):
        return None


READ_LOCK = 'test -d "$1" || exit 3; cat "$1/info.json" 2>/dev/null; true'
RELEASE_ANY = 'test -d "$1" || exit 3; rm -rf "$1"'
RELEASE_OWN = ('grep -q "\\"deploy_id\\": \\"$2\\"" "$1/info.json" 2>/dev/null || exit 3; '
               'rm -rf "$1"')


def read_lock(ex: Executor, paths: Paths) -> LockInfo | None | str:
    """The lock's holder, None when unlocked, or "unknown" when the lock has no info."""
    res = ex.run(["sh", "-c", READ_LOCK, "sh", paths.lock], check=False,
                 what="read the deploy lock")
    if res.returncode == 3:
        return None
    if res.returncode != 0:
        raise ex.failure(res, "read the deploy lock")
    return parse_lock(res.stdout) or "unknown"


def release(ex: Executor, paths: Paths, deploy_id: str | None = None) -> bool:
    """Remove the lock; with deploy_id only if that deploy holds it. True if removed."""
    if deploy_id is None:
        res = ex.run(["sh", "-c", RELEASE_ANY, "sh", paths.lock], check=False,
                     what="release lock")
    else:
        res = ex.run(release_argv(paths, deploy_id), check=False, what="release lock")
    if res.returncode == 3:
        return False
    if res.returncode != 0:
        raise ex.failure(res, "release the deploy lock")
    return True


# ---------------------------------------------------------------- env file


def env_file_content(env: Mapping[str, str]) -> str:
    """`docker --env-file` content. Values cannot hold newlines in that format."""
    lines = []
    for key, value in env.items():
        if "\n" in value or "\r" in value:
            raise PlainsailError(
                f"the value of {key} contains a newline, which docker --env-file cannot carry; "
                "encode it (e.g. base64) or put it in a mounted file"
            )
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def write_env(ex: Executor, paths: Paths, env: Mapping[str, str]) -> None:
    """Write the env file (mode 0600) atomically; on failure nothing is left behind."""
    res = ex.run(write_file_argv(paths.env, "600"), input=env_file_content(env), check=False,
                 what="write env file")
    if res.returncode != 0:
        _env_failure(ex, paths, res)


def _env_failure(ex: Executor, paths: Paths, res: Result) -> NoReturn:
    if res.returncode == IS_A_DIRECTORY:
        raise PlainsailError(
            f"{ex.host.name}: cannot write the env file: {paths.env} is a directory; "
            "remove it and retry"
        )
    if res.returncode == 255 and not ex.host.is_local:
        raise ex.failure(res, "write env file")
    raise PlainsailError(
        f"{ex.host.name}: cannot write the env file {paths.env} ({_os_error(res.stderr)}); "
        + (disk_full(res.stderr) or "make host_dir writable by the SSH user")
    )


# ---------------------------------------------------------------- history

# A record is one line. When the file does not end with a line break (a write torn by a
# full disk or a crash), one is added first, so the torn line stays alone and can never
# merge with the next record.
APPEND_ARGV = (
    'if [ -d "$1" ]; then printf "%s is a directory\\n" "$1" >&2; exit 66; fi; '
    'mkdir -p -- "$(dirname -- "$1")" && umask 077 && '
    '{ if [ -s "$1" ] && [ -n "$(tail -c 1 -- "$1")" ]; then printf "\\n" >> "$1"; fi; } && '
    'cat >> "$1"'
)


def append_history(ex: Executor, paths: Paths, record: Mapping[str, Any]) -> None:
    """Append one record to the host's history; raise a clear error when that fails."""
    line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    res = ex.run(append_argv(paths), input=line, check=False,
                 what="append record")
    if res.returncode == 0:
        return
    if res.returncode == 255 and not ex.host.is_local:
        raise ex.failure(res, "append the deploy record")
    problem = (f"{paths.history} is a directory; remove it" if res.returncode == IS_A_DIRECTORY
               else f"{_os_error(res.stderr)}; " + (
                   disk_full(res.stderr) or "make it a file the SSH user can write"))
    raise PlainsailError(
        f"{ex.host.name}: cannot append the deploy record to {paths.history}: {problem}"
    )


READ_HISTORY = 'test -f "$1" || exit 0; cat "$1"'


class Records(list[dict[str, Any]]):
    """The readable records of a history, oldest first, and the numbers of the lines that
    could not be read (a torn write, a damaged file): `damaged`."""

    damaged: list[int]

    def __init__(self, records: list[dict[str, Any]], damaged: list[int]) -> None:
        super().__init__(records)
        self.damaged = damaged

    def describe_damage(self, where: str) -> str:
        lines = ", ".join(str(n) for n in self.damaged[:5])
        more = f" and {len(self.damaged) - 5} more" if len(self.damaged) > 5 else ""
        return (f"{where}: {len(self.damaged)} line(s) of the deploy history cannot be read "
                f"(line {lines}{more}); they were skipped, and a record may be missing")


def read_history(ex: Executor, paths: Paths, warn: Callable[[str], None]) -> Records:
    """Every readable record, oldest first; a damaged line is skipped, and `warn` is told
    (records.damaged has its number)."""
    res = ex.run(["sh", "-c", READ_HISTORY, "sh", paths.history], what="read history",
                 check=False)
    if res.returncode != 0:
        raise ex.failure(res, "read history")
    records = parse_history(res.stdout)
    if records.damaged:
        warn(records.describe_damage(f"{ex.host.name}: {paths.history}"))
    return records


def parse_history(text: str) -> Records:
    records = []
    damaged = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            damaged.append(n)
            continue
        if isinstance(value, dict):
            records.append(value)
        else:
            damaged.append(n)
    return Records(records, damaged)
